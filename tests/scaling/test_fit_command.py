"""`scaling fit` on the paper's numbers, a synthetic grid and a user's CSV; `scaling results --aggregate seeds`."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from reports.paper import paper_table
from scaling.cli import main
from tests.reports.synthetic_grid import make_grid


def run_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["fit", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_fits_the_papers_fid_against_gflops_as_a_raw_curve_fit_does(capsys):
    result = run_json(capsys, "--paper", "fid_400k", "--x", "gflops", "--y", "fid", "--law", "power", "--holdout", "2")
    paper = paper_table("fid_400k")
    x, y = paper["gflops"].to_numpy(float), paper["fid"].to_numpy(float)
    raw, cov = optimize.curve_fit(lambda x, a, b: a * x ** -b, x, y, p0=(100.0, 0.3))
    t = stats.t.ppf(0.975, 10)
    assert result["law"] == "power" and result["n_points"] == 12 and result["dof"] == 10
    for i, name in enumerate("ab"):
        p = result["params"][name]
        assert p["value"] == pytest.approx(raw[i], rel=1e-4)
        assert (p["ci_low"], p["ci_high"]) == pytest.approx((raw[i] - t * np.sqrt(cov[i, i]),
                                                             raw[i] + t * np.sqrt(cov[i, i])), rel=1e-3)
    assert [h["x"] for h in result["holdout"]] == [80.71, 118.64]
    for h in result["holdout"]:
        assert set(h) == {"x", "y", "predicted", "pi_low", "pi_high", "inside"}
        assert h["inside"] == (h["pi_low"] <= h["y"] <= h["pi_high"])


def test_fits_a_grids_frontier_over_every_seed(tmp_path, capsys):
    grid = make_grid(tmp_path / "grid", sizes=("S", "B"), patches=(8, 4, 2), steps=(1000, 2000, 4000, 8000),
                     samples=False, logs=False, noise=0.02, seeds=(0, 1))
    result = run_json(capsys, str(grid.path), "--frontier", "--holdout", "1")
    df = grid.df
    means = df.groupby(["run", "step"])[["train_compute_gflops", "fid"]].mean()
    on_front = [i for i, (c, f) in enumerate(means.to_numpy())
                if not any(c2 <= c and f2 < f for j, (c2, f2) in enumerate(means.to_numpy()) if j != i)]
    expected = 2 * len(on_front)  # both seeds' rows of each frontier point
    largest = means.iloc[on_front]["train_compute_gflops"].max()
    assert result["n_points"] == expected and len(result["holdout"]) == 2  # the fit of all; the backtest leaves 2 out
    assert all(h["x"] == pytest.approx(largest) for h in result["holdout"])
    assert "on the compute-efficient frontier" in result["rows"]


def test_fits_a_users_csv_with_a_filter_and_prints_a_table(tmp_path, capsys):
    x = np.geomspace(1e15, 1e19, 8)
    table = pd.DataFrame({"compute": np.tile(x, 2), "loss": np.concatenate([3.0 * (x / 1e15) ** -0.05, 9 * x ** 0]),
                          "kind": ["kept"] * 8 + ["other"] * 8})
    table.to_csv(tmp_path / "mine.csv", index=False)
    result = run_json(capsys, str(tmp_path / "mine.csv"), "--x", "compute", "--y", "loss", "--law", "power",
                      "--where", "kind=kept")
    assert result["n_points"] == 8 and result["params"]["b"]["value"] == pytest.approx(0.05, rel=1e-6)
    assert main(["fit", str(tmp_path / "mine.csv"), "--x", "compute", "--y", "loss", "--where", "kind=kept"]) == 0
    out = capsys.readouterr().out
    assert "n = 8 points (one per row), 5 dof" in out and "loss = a * compute^(-b) + c" in out


@pytest.mark.parametrize("args, message", [
    (["--x", "gflops", "--y", "loss"], "the table has no column 'loss'; its columns: model, gflops, params_m, fid"),
    (["--x", "gflops", "--y", "fid", "--law", "saturating", "--holdout", "8"],
     "leaves 4 point(s), and a 3-parameter law needs at least 5"),
    (["--x", "gflops", "--y", "fid", "--where", "model=DiT-S/8"], "to 1 point(s); it needs at least 4"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    capsys.readouterr()
    assert main(["fit", "--paper", "fid_400k", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_non_positive_x_is_refused(tmp_path, capsys):
    pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "y": [5.0, 4, 3, 2, 1, 0.5]}).to_csv(tmp_path / "t.csv")
    assert main(["fit", str(tmp_path / "t.csv"), "--x", "x", "--y", "y"]) == 2
    assert "1 row(s) have x <= 0, outside a power law's domain" in capsys.readouterr().err


def test_results_aggregate_seeds_mean_and_spread_by_hand(tmp_path, capsys):
    grid = make_grid(tmp_path / "grid", sizes=("S",), patches=(4,), steps=(1000, 2000), samples=False, logs=False,
                     noise=0.05, seeds=(0, 1, 2))
    capsys.readouterr()
    assert main(["results", str(grid.path), "--aggregate", "seeds", "--format", "csv"]) == 0
    from io import StringIO
    out = pd.read_csv(StringIO(capsys.readouterr().out))
    assert len(out) == 2 and "seed" not in out.columns and (out["n_seeds"] == 3).all()
    for step in (1000, 2000):
        fid = grid.df[grid.df["step"] == step]["fid"].to_numpy(float)
        row = out[out["step"] == step].iloc[0]
        mean = sum(fid) / 3
        sd = np.sqrt(sum((f - mean) ** 2 for f in fid) / 2)
        half = 4.302652729911275 * sd / np.sqrt(3)  # t(0.975, 2 dof)
        assert row["fid_mean"] == pytest.approx(mean) and row["fid_min"] == min(fid) and row["fid_max"] == max(fid)
        assert (row["fid_ci_low"], row["fid_ci_high"]) == pytest.approx((mean - half, mean + half))


def aicc_by_hand(residuals, params: int) -> float:
    n, k = len(residuals), params + 1
    return n * np.log(np.sum(residuals ** 2) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def test_the_papers_fid_table_as_the_readme_writes_it_keeps_the_papers_trend(capsys):
    result = run_json(capsys, "--paper", "fid_400k")  # --x defaults to the paper table's gflops
    paper = paper_table("fid_400k")
    x, y = paper["gflops"].to_numpy(float), paper["fid"].to_numpy(float)
    power, _ = optimize.curve_fit(lambda x, a, b: a * x ** -b, x, y, p0=(100.0, 0.3))
    saturating, _ = optimize.curve_fit(lambda x, a, b, c: a * x ** -b + c, x, y, p0=(100.0, 0.3, 0.0),
                                       bounds=([0, 0, 0], [np.inf, 20, y.min()]))
    power_aicc = aicc_by_hand(y - power[0] * x ** -power[1], 2)
    saturating_aicc = aicc_by_hand(y - (saturating[0] * x ** -saturating[1] + saturating[2]), 3)
    assert power_aicc < saturating_aicc
    assert result["law"] == "power" and result["x"] == "gflops" and result["trend_established"]
    assert f"{power_aicc:.1f}" in result["chosen"] and f"{saturating_aicc:.1f}" in result["chosen"]
    assert result["params"]["b"]["value"] == pytest.approx(power[1], rel=1e-4)


def test_a_saturating_floor_stays_between_0_and_the_best_fid_and_says_when_it_is_not_identified(capsys):
    name = "fid_400k"  # unbounded, least squares puts the floor at -1523
    result = run_json(capsys, "--paper", name, "--law", "saturating")
    fid = paper_table(name)["fid"]
    assert 0 <= result["params"]["c"]["value"] <= fid.min()
    low, high = result["params"]["c"]["ci_low"], result["params"]["c"]["ci_high"]
    assert result["floor_identified"] == (low >= 0 and high <= fid.min())
    capsys.readouterr()
    assert main(["fit", "--paper", name, "--law", "saturating"]) == 0
    out = capsys.readouterr().out
    assert ("c not identified" in out) == (not result["floor_identified"])


def test_a_floor_the_points_pin_down_is_identified_and_bands_stay_above_0(tmp_path, capsys):
    x = np.geomspace(1e3, 1e7, 12)
    noise = np.random.default_rng(0).normal(0, 0.2, 12)
    pd.DataFrame({"compute": x, "fid": 300 * (x / 1e3) ** -0.6 + 5 + noise}).to_csv(tmp_path / "t.csv", index=False)
    result = run_json(capsys, str(tmp_path / "t.csv"), "--x", "compute", "--law", "saturating", "--holdout", "2")
    assert result["floor_identified"] and result["params"]["c"]["ci_low"] < 5 < result["params"]["c"]["ci_high"]
    assert result["y_bounds"] == [0.0, None] and all(h["pi_low"] >= 0 for h in result["holdout"])


def test_fit_prints_csv_one_row_per_parameter(capsys):
    capsys.readouterr()
    assert main(["fit", "--paper", "fid_400k", "--format", "csv"]) == 0
    from io import StringIO
    out = pd.read_csv(StringIO(capsys.readouterr().out))
    assert list(out["parameter"]) == ["a", "b"] and (out["law"] == "power").all() and (out["n_points"] == 12).all()
