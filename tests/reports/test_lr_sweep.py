"""lr sweeps in the report and `results --best`: best lr per model, its drift with width, fixed vs best-lr laws."""
import numpy as np
import pytest

from reports import lr_sweep as LR
from reports.content import build_report
from scaling.cli import main
from scaling.results import write_results
from study.schema import to_table
from study.selection import best_rows

WIDTHS = (32, 64, 128, 256)
LRS = (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3)


def lr_star(param: str, width: int) -> float:
    """SP's best lr halves per doubling of width (slope -1); μP's stays at 2e-3."""
    return 2e-3 * (32 / width if param == "sp" else 1.0)


def val_loss(param: str, width: int, lr: float) -> float:
    """A parabola in ln lr around lr*, lower for wider models at their best lr."""
    return float(np.exp(np.log(0.5 * (32 / width) ** 0.1) + 0.05 * np.log(lr / lr_star(param, width)) ** 2))


def sweep_table(seeds=(0, 1), lrs=LRS):
    rows = []
    for param in ("sp", "mup"):
        for width in WIDTHS:
            for lr in lrs:
                for seed in seeds:
                    rows.append(dict(run=f"DiT-custom/4-d2-w{width}-h2", seed=seed, model="DiT-custom/4",
                                     size="custom", patch_size=4, block="adaln-zero", width=width, params=width ** 2,
                                     gflops=width ** 2 * 1e-5, dataset="mnist32", resolution=16, batch_size=64, lr=lr,
                                     parametrization=param, warmup_steps=0, weight_decay=0.0, step=100,
                                     sampler="ddim", sampling_steps=10, cfg_scale=1.0, features="mnist",
                                     val_loss=val_loss(param, width, lr) + 1e-4 * seed))
    return to_table(rows)


def test_best_rows_choose_each_models_lowest_mean_over_seeds():
    best = best_rows(sweep_table(), ["lr"], "val_loss")
    assert len(best) == 2 * len(WIDTHS) * 2  # parametrization x width x seeds
    for row in best.itertuples():
        nearest = min(LRS, key=lambda lr: abs(np.log(lr / lr_star(row.parametrization, row.width))))
        assert row.lr == nearest


def test_best_rows_keep_parametrizations_apart_and_refuse_a_missing_column():
    df = sweep_table()
    best = best_rows(df[df["lr"].isin([2.5e-4, 2e-3])], ["lr"], "val_loss")
    assert set(zip(best["parametrization"], best["width"], best["lr"], strict=True)) == {
        ("sp", w, 2e-3 if w <= 64 else 2.5e-4) for w in WIDTHS} | {("mup", w, 2e-3) for w in WIDTHS}
    with pytest.raises(ValueError, match="no column 'momentum'"):
        best_rows(df.drop(columns=["ema_sigma_rel"], errors="ignore"), ["momentum"])


def test_the_parabola_in_log_lr_finds_lr_star_between_grid_points_and_its_drift_with_width():
    import re

    table = LR.best_lr_table(sweep_table())
    bracketed = table[table["bracketed"] == "yes"]
    assert len(bracketed) >= 6
    for _, row in bracketed.iterrows():
        assert row["lr*"] == pytest.approx(lr_star(row["parametrization"], row["width"]), rel=0.05)
    slopes = {p: float(re.search(r"slope (-?[\d.]+)", text)[1]) for p, text in LR.width_slopes(table).items()}
    assert slopes["mup"] == pytest.approx(0.0, abs=0.02) and slopes["sp"] == pytest.approx(-1.0, abs=0.05)


def test_best_lrs_at_an_end_of_the_sweep_are_said_to_bound_lr_star_not_to_locate_it():
    df = sweep_table(lrs=(5e-4, 1e-3, 2e-3, 4e-3))  # SP's lr* at widths 128, 256 (5e-4, 2.5e-4): at or past the end
    said = LR.width_slopes(LR.best_lr_table(df))
    assert said["sp"].endswith("2 of 4 best lrs lie at an end of the sweep and only bound lr*: widen the sweep "
                               "before reading this slope.")
    assert "slope" in said["mup"] and "end of the sweep" not in said["mup"]  # μP's 2e-3: inside the sweep
    low = LR.width_slopes(LR.best_lr_table(sweep_table(lrs=(2.5e-5, 5e-5, 1e-4))))  # every best lr at 1e-4
    assert low["mup"] == ("mup: every model's best lr lies at an end of the sweep (0.0001), so lr* and its drift "
                          "with width are not identified; widen the sweep past that end.")


def test_the_lr_figure_orders_curves_by_width_and_puts_a_diverged_point_on_its_top_edge():
    df = sweep_table(seeds=(0,))
    diverged = (df["parametrization"] == "sp") & (df["width"] == 256) & (df["lr"] == 8e-3)
    df.loc[diverged, "val_loss"] = 12.7
    fig = LR.plot_lr_sweep(df)
    sp = next(ax for ax in fig.axes if ax.get_title().startswith("sp"))
    assert [t.get_text() for t in sp.get_legend().get_texts()] == [
        f"DiT-custom/4-d2-w{w}-h2 (width {w})" for w in WIDTHS]
    low = df["val_loss"].min()
    assert sp.get_ylim() == pytest.approx((0.95 * low, 1.08 * LR.OFF_SCALE * low))
    triangles = [line for line in sp.get_lines() if line.get_marker() == "^" and len(line.get_xdata())]
    assert len(triangles) == 1 and list(triangles[0].get_xdata()) == [8e-3]
    assert triangles[0].get_ydata()[0] == pytest.approx(LR.OFF_SCALE * low)
    assert sp.get_title().endswith("(triangles: off scale)")
    assert "off scale" not in next(ax for ax in fig.axes if ax.get_title().startswith("mup")).get_title()


def test_at_the_fixed_lr_wide_sp_models_lose_and_at_their_best_they_win():
    df = sweep_table()
    sp = df[df["parametrization"] == "sp"]
    said = LR.compare_laws(LR.at_fixed_lr(sp, 8e-3), LR.at_best_lr(sp), "val_loss", "val loss", 8e-3)
    assert "rho 1.00" in said.replace("rho(Gflops, val loss) 1.00", "rho 1.00") and "rho -1.00" in said
    assert said.endswith("The conclusion changed with tuning: the ordering of the models by Gflops reverses.")
    mup = df[df["parametrization"] == "mup"]
    said = LR.compare_laws(LR.at_fixed_lr(mup, 2e-3), LR.at_best_lr(mup), "val_loss", "val loss", 2e-3)
    assert said.endswith("The conclusion did not change with tuning (same ordering sign, overlapping intervals).")


def test_report_has_the_sweep_section_with_the_mutransfer_figure(tmp_path):
    df = sweep_table()
    (tmp_path / "grid.yaml").write_text("name: g\ntrain: {lr: 2.0e-3}\n")
    report = build_report(tmp_path, df, metric="val_loss")
    section = next(s for s in report.sections if s.anchor == "lr-sweep")
    names = [getattr(b, "name", "") for b in section.blocks]
    assert "val-loss-vs-lr" in names and "val-loss-sp-vs-gflops-fixed-lr" in names
    assert any("per doubling of width" in getattr(b, "text", "") for b in section.blocks)


def test_results_best_lr_prints_one_row_per_model_and_refuses_a_grid_without_the_axis(tmp_path, capsys):
    from tests.scaling.test_sweep import GRID

    (tmp_path / "grid.yaml").write_text(GRID)  # a grid directory, as `scaling run-grid` leaves it
    write_results(sweep_table(seeds=(0,)), tmp_path)
    assert main(["results", str(tmp_path), "--best", "lr", "--select-on", "val_loss", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 2 * len(WIDTHS)
    write_results(sweep_table(seeds=(0,), lrs=(1e-3,)), tmp_path)
    assert main(["results", str(tmp_path), "--best", "lr"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the grid does not sweep lr" in err and "\n" not in err
