"""Post-hoc EMA lengths in a grid: reconstructed and scored at the last point, one column of the row key."""
import numpy as np
import pytest
import torch

from scaling.executors import local
from scaling.grid import SpecError, plan
from scaling.gridfile import parse_grid
from scaling.run_state import run_state
from scaling.runs import claim_grid_dir
from study.layout import RunLayout
from study.schema import KEY, read_results
from study.selection import best_rows, classic_ema_rows
from tests.scaling.test_runs import GRID

LENGTHS = "ema_sigma_rels: [0.05, 0.1, 0.2], ema_sample_sigma_rels: [0.1], validation_items: 32, validation_buckets: 2"


def grid_text(eval_extra: str = LENGTHS, snapshot_every: int = 2) -> str:
    text = GRID.format(name="ema", steps=8, every=4, kind="local", slurm="", workers=1)
    text = text.replace("ema_decay: 0.9}", f"ema_decay: 0.9, ema_snapshot_every: {snapshot_every}}}")
    return text.replace("batch_size: 8}\n", f"batch_size: 8, {eval_extra}}}\n")  # the eval line's end


@pytest.fixture(scope="module")
def ema_grid(tmp_path_factory):
    out, threads = tmp_path_factory.mktemp("grid") / "ema", torch.get_num_threads()
    spec = parse_grid(grid_text())
    claim_grid_dir(out, spec)
    torch.set_num_threads(1)
    try:
        local(plan(spec)[:1], out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, plan(spec)[0]


def test_each_length_gets_a_validation_row_and_the_sampled_one_every_setting(ema_grid):
    out, run = ema_grid
    df = read_results(out)
    assert run_state(out, run).state == "done"
    assert not df.duplicated(list(KEY)).any()
    classic = classic_ema_rows(df)
    assert sorted(classic["step"]) == [4, 8] and classic["sampler"].notna().all()
    last = df[df["ema_sigma_rel"].notna()]
    assert (last["step"] == 8).all()
    validation_only = last[last["sampler"].isna()]
    assert sorted(validation_only["ema_sigma_rel"]) == [0.05, 0.1, 0.2]
    assert validation_only["val_loss"].notna().all() and validation_only["class_accuracy"].isna().all()
    sampled = last[last["sampler"].notna()]
    assert list(sampled["ema_sigma_rel"]) == [0.1] and sampled["class_accuracy"].notna().all()
    assert float(sampled["val_loss"].iloc[0]) == float(validation_only.set_index("ema_sigma_rel").loc[0.1, "val_loss"])
    assert len(set(validation_only["val_loss"])) == 3  # three different weights


def test_best_rows_keep_every_row_of_the_length_with_the_lowest_validation_loss(ema_grid):
    df = read_results(ema_grid[0])
    lengths = df[df["ema_sigma_rel"].notna() & df["sampler"].isna()]
    expect = float(lengths.loc[lengths["val_loss"].idxmin(), "ema_sigma_rel"])
    best = best_rows(df, ["ema_sigma_rel"], "val_loss")
    assert set(best["ema_sigma_rel"]) == {expect}
    assert len(best) == (df["ema_sigma_rel"] == expect).sum()
    worst = best_rows(df.assign(val_loss=-df["val_loss"]), ["ema_sigma_rel"], "val_loss")
    assert set(worst["ema_sigma_rel"]) == {float(lengths.loc[lengths["val_loss"].idxmax(), "ema_sigma_rel"])}


def test_best_rows_choose_per_model_and_step_on_the_mean_over_seeds():
    import pandas as pd

    rows = [dict(model=m, step=10, seed=s, ema_sigma_rel=sr, val_loss=v)
            for m, table in (("A", {0.05: (1.0, 3.0), 0.1: (1.9, 1.9)}), ("B", {0.05: (1.0, 1.1), 0.1: (2.0, 0.3)}))
            for sr, values in table.items() for s, v in enumerate(values)]
    rows.append(dict(model="A", step=10, seed=0, ema_sigma_rel=np.nan, val_loss=0.0))  # the classic EMA
    best = best_rows(pd.DataFrame(rows), ["ema_sigma_rel"], "val_loss")
    assert best.groupby("model")["ema_sigma_rel"].unique().map(list).to_dict() == {"A": [0.1], "B": [0.05]}
    with pytest.raises(ValueError, match="no column 'lr'"):
        best_rows(pd.DataFrame(rows), ["ema_sigma_rel", "lr"], "val_loss")
    with pytest.raises(ValueError, match="selection metric"):
        best_rows(pd.DataFrame(rows), ["ema_sigma_rel"], "loss")


@pytest.mark.parametrize("extra,snapshot_every,phrase", [
    ("ema_sigma_rels: [0.05, 0.3]", 2, "outside"),
    ("ema_sigma_rels: [0.05], ema_sample_sigma_rels: [0.1]", 2, "not in ema_sigma_rels"),
    ("ema_sigma_rels: [0.05]", 8, "fewer than 2 EMA snapshots"),
])
def test_a_grid_with_unreachable_or_unreconstructable_lengths_is_refused(extra, snapshot_every, phrase):
    with pytest.raises((SpecError, ValueError), match=phrase):
        parse_grid(grid_text(extra, snapshot_every))


def test_the_report_draws_the_metric_against_the_length_and_the_best_length_against_gflops(ema_grid):
    from reports.content import build_report

    out, _ = ema_grid
    df = read_results(out)
    report = build_report(out, df, metric="class_accuracy")
    section = next(s for s in report.sections if s.title == "Post-hoc EMA")
    names = [b.name for b in section.blocks if hasattr(b, "figure")]
    assert names == ["val-loss-vs-ema-length", "best-ema-length-val-loss", "class-accuracy-vs-ema-length",
                     "best-ema-length-class-accuracy"]
    lengths = df[df["ema_sigma_rel"].notna() & df["sampler"].isna()]
    best = float(lengths.loc[lengths["val_loss"].idxmin(), "ema_sigma_rel"])
    line = section.blocks[0].figure.axes[0].lines[0]
    assert list(line.get_xdata()) == [0.05, 0.1, 0.2]
    assert list(line.get_ydata()) == list(lengths.sort_values("ema_sigma_rel")["val_loss"])
    table = section.blocks[2].df
    assert float(table["best_sigma_rel"].iloc[0]) == best
    scaling_plots = [b for s in report.sections if s.title == "Scaling figures" for b in s.blocks]
    assert scaling_plots  # the classic EMA's figures are drawn from its rows alone


def test_plan_counts_the_snapshots_a_run_writes_and_their_bytes(ema_grid):
    from scaling.commands.plan import plan_rows

    out, run = ema_grid
    written = RunLayout(out / "runs" / run.dir_name).ema_snapshots()
    assert run.snapshot_count() == len(written) == 4  # steps 2, 4, 6, 8
    predicted = plan_rows([run])[0]["ema_snapshot_gb"] * 1e9
    on_disk = sum(path.stat().st_size for _, path in written)
    assert predicted <= on_disk < predicted * 1.1 + 4 * 100_000  # torch.save adds names and a zip directory


def test_the_sampled_lengths_are_priced_as_the_last_points_settings_once_each():
    import dataclasses

    from scaling.cost import run_cost
    from tests.scaling.test_evaluation import by_hand, cpu_rates, demo_run

    run = demo_run()
    last = by_hand(10, 1) + by_hand(10, 2) + by_hand(5, 1) + by_hand(20, 1)  # the demo's last point
    base = run_cost(run, cpu_rates(run)).eval_gpu_hours * 3600
    sampled = dataclasses.replace(run, eval=dataclasses.replace(run.eval, ema_sample_sigma_rels=(0.1, 0.2)))
    assert run_cost(sampled, cpu_rates(sampled)).eval_gpu_hours * 3600 == pytest.approx(base + 2 * last)


def test_results_best_prints_each_column_once(ema_grid, capsys):
    from scaling.cli import main

    assert main(["results", str(ema_grid[0]), "--best", "ema_sigma_rel", "--select-on", "val_loss"]) in (0, None)
    header = capsys.readouterr().out.splitlines()[0].split()
    assert "ema_sigma_rel" in header and header.count("val_loss") == 1


def test_results_table_leaves_a_post_hoc_rows_sampling_cells_blank(ema_grid, capsys):
    from scaling.cli import main

    assert main(["results", str(ema_grid[0])]) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    posthoc = [line.split() for line in lines[1:] if len(line.split()) < len(header)]
    assert posthoc, "the table has post-hoc EMA rows, whose sampling columns are empty"
    assert not any(cell in ("NaN", "<NA>", "nan") for line in lines[1:] for cell in line.split())
    full = [line.split() for line in lines[1:] if len(line.split()) == len(header)]
    assert full and all(len(row) == len(header) for row in full)  # a sampled row fills every column
