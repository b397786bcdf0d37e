"""The report over several seeds (mean line with a min-max band), with validation loss, and with isoFLOP budgets."""
import numpy as np
import pytest

from reports import figures as F
from reports.analysis import isoflop_fit, isoflop_rows
from reports.content import build_report
from reports.document import Plot, Text
from study.schema import to_table
from tests.reports.synthetic_grid import PAPER_GFLOPS, make_grid


def test_a_run_over_seeds_is_its_mean_with_a_min_to_max_band(tmp_path):
    grid = make_grid(tmp_path / "grid", sizes=("S",), patches=(4, 2), steps=(500, 1000, 2000), samples=False,
                     logs=False, noise=0.05, seeds=(0, 1, 2))
    (ax,) = F.plot_metric_vs_steps(grid.df, "fid").axes
    line = next(line for line in ax.get_lines() if line.get_label() == "DiT-S/2")
    rows = grid.df[grid.df["run"] == "DiT-S/2"]
    np.testing.assert_allclose(line.get_ydata(), [rows[rows["step"] == s]["fid"].mean() for s in (500, 1000, 2000)])
    band = ax.collections[1].get_paths()[0].vertices[:, 1]  # runs in paper order: S/4, S/2
    assert band.min() == pytest.approx(rows["fid"].min()) and band.max() == pytest.approx(rows["fid"].max())
    assert "mean across seeds, band: min to max (up to 3 seeds)" in " ".join(t.get_text() for t in ax.texts)


def isoflop_table(budgets=(1e13, 1e14, 1e15, 1e16), exponent=0.5, scale=1.0, **extra):
    """Every model trained to each budget; ln validation loss a parabola in ln Gflops around budget^exponent * 1e-7
    (times `scale`); `extra` columns in every row."""
    records = []
    for budget in budgets:
        best = 1e-7 * budget ** exponent
        for name, gflops in PAPER_GFLOPS.items():
            step = int(budget / (gflops * 256 * 3))
            loss = scale * 0.05 * np.exp(0.2 * np.log(gflops / best) ** 2)  # ln loss: a parabola in ln Gflops
            size, patch = name.split("/")
            records.append(dict(run=f"DiT-{name}", model=f"DiT-{name}", size=size, patch_size=int(patch),
                                block="adaln-zero", params=10 ** 7, gflops=gflops, dataset="mnist32", resolution=32,
                                batch_size=256, step=step, train_compute_gflops=gflops * 256 * step * 3, budget=budget,
                                sampler="ddpm", sampling_steps=250, cfg_scale=1.0, features="mnist", fid=100 * loss,
                                val_loss=loss, val_mse=0.9 * loss, **extra))
    return to_table(records)


def test_isoflop_section_finds_each_optimum_and_the_law_of_optima(tmp_path):
    df = isoflop_table((1e13, 1e14, 1e15, 1e16, 1e17))  # at 1e13 the optimum (0.32 Gflops) is below DiT-S/8's 0.36
    result = isoflop_fit(isoflop_rows(df, "val_loss"), "val_loss")
    for budget, optimum in result.optima():
        assert optimum["x"] == pytest.approx(1e-7 * budget ** 0.5, rel=1e-6)
        assert optimum["inside"] == (budget > 1e13)
    assert result.optimal_x.exponent == pytest.approx(0.5, rel=1e-6)
    assert list(result.optimal_x.x) == [1e14, 1e15, 1e16, 1e17]  # an extrapolated optimum is no point of the law
    report = build_report(tmp_path, df, metric="fid")
    section = next(s for s in report.sections if s.anchor == "isoflop")
    names = [b.name for b in section.blocks if isinstance(b, Plot)]
    assert names == ["isoflop-val-loss", "isoflop-optima-val-loss", "isoflop-fid", "isoflop-optima-fid"]
    said = " ".join(b.text for b in section.blocks if isinstance(b, Text))
    assert "The optimal model's Gflops grows as budget^0.500" in said and "at 10x the largest budget (1e+18" in said
    figures = [b.name for s in report.sections for b in s.blocks if isinstance(b, Plot)]
    assert {"val-loss-vs-steps", "val-loss-vs-gflops", "val-loss-vs-train-compute"} <= set(figures)


def test_isoflop_section_of_an_lr_sweep_is_drawn_again_at_each_models_best_lr(tmp_path):
    import pandas as pd

    budgets = (1e14, 1e15, 1e16, 1e17)
    fixed = isoflop_table(budgets, lr=1e-3, parametrization="sp")  # the spec's lr: optimum Gflops ~ budget^0.5
    tuned = isoflop_table(budgets, exponent=0.52, scale=0.01, lr=4e-3, parametrization="sp")  # lower everywhere
    (tmp_path / "grid.yaml").write_text("name: g\ntrain: {lr: 1.0e-3}\n")
    report = build_report(tmp_path, pd.concat([fixed, tuned], ignore_index=True), metric="val_loss")
    section = next(s for s in report.sections if s.anchor == "isoflop")
    names = [b.name for b in section.blocks if isinstance(b, Plot)]
    assert names == ["isoflop-val-loss", "isoflop-optima-val-loss", "isoflop-val-loss-best-lr-sp",
                     "isoflop-optima-val-loss-best-lr-sp"]
    texts = [b.text for b in section.blocks if isinstance(b, Text)]
    at_best = texts.index(next(t for t in texts if t.startswith("The same at each model's best lr (sp)")))
    assert "fixed lr 0.001" in texts[at_best]
    assert "Gflops grows as budget^0.500" in " ".join(texts[:at_best])
    assert "Gflops grows as budget^0.520" in " ".join(texts[at_best:])


def test_summary_states_a_trend_only_when_the_exponents_interval_excludes_zero(tmp_path):
    grid = make_grid(tmp_path / "grid", sizes=("S", "B"), patches=(4, 2), steps=(500, 1000, 2000, 4000),
                     samples=False, logs=False)
    summary = " ".join(b.text for b in build_report(grid.path, grid.df).sections[0].blocks)
    assert "FID falls with training compute on the frontier" in summary and "dof" in summary
    flat = grid.df.assign(fid=50.0 + np.random.default_rng(0).standard_normal(len(grid.df)))
    summary = " ".join(b.text for b in build_report(grid.path, flat).sections[0].blocks)
    assert "falls" not in summary.split("Fig. 8")[1]
    assert "not fitted" in summary or "no trend established" in summary
