"""The report's results table shows every metric the results frame has values for, and a metric
registered in `study.metrics` alone reaches the schema, the report's table and the CLI's lists."""
import pytest

from eval.metric_groups import METRIC_GROUPS, metric_columns
from reports.content import Context, grid_section, result_columns
from reports.document import Table
from study.metrics import METRICS, Metric, get_metric, metric_names
from study.schema import result_row, schema, to_table
from tests.cli_help import option_help

RUN = dict(run="DiT-S/4", seed=0, model="DiT-S/4", size="S", patch_size=4, block="adaln-zero", params=1000,
           gflops=1.5, dataset="mnist32", resolution=32, batch_size=8)
RECORD = dict(step=100, sampler="ddim", sampling_steps=10, cfg_scale=1.0, num_samples=64, features="mnist",
              fid=12.5, kid=0.0625, fd_dinov2=321.5, class_accuracy=0.875, wall_seconds=40.0)
DENSITY = Metric(column="density", label="Density", meaning="density of samples among the reference's k-NN balls",
                 lower_is_better=False, group="pr", aliases=("dens",), paper=False)


def results_table(tmp_path, df) -> dict:
    """The report's results table (column -> its cells) for a results frame."""
    ctx = Context(grid_dir=tmp_path, df=df, metric=get_metric("fid"), step=None, target=None, run_dirs={},
                  run_names={})
    tables = [block for block in grid_section(ctx).blocks if isinstance(block, Table)]
    return tables[1].df.to_dict("list")


@pytest.fixture
def density(monkeypatch):
    """A metric registered for one test only, as a new metric's single registry entry would be."""
    monkeypatch.setitem(METRICS._entries, DENSITY.column, DENSITY)
    return DENSITY


def test_the_report_table_shows_kid_fd_dinov2_and_class_accuracy(tmp_path):
    shown = results_table(tmp_path, to_table([result_row(RUN, RECORD)]))
    assert list(shown) == ["run", "seed", "step", "sampler", "sampling_steps", "cfg_scale", "features", "num_samples",
                           "gflops", "train_compute_gflops", "fid", "class_accuracy", "kid", "fd_dinov2",
                           "wall_seconds"]  # columns without values (budget, sfid, ...) left out
    assert shown["kid"] == ["0.0625"] and shown["fd_dinov2"] == ["321.50"] and shown["class_accuracy"] == ["0.875"]
    assert shown["train_compute_gflops"] == ["3,600.00"]  # 1.5 Gflops x 8 images x 100 steps x 3


def test_a_metric_registered_only_in_the_registry_reaches_the_schema_report_and_cli(density, tmp_path, capsys,
                                                                                    monkeypatch):
    assert schema()["density"] == ("float64", DENSITY.meaning)
    assert result_columns()[-3:] == ("fd_dinov2", "density", "wall_seconds")
    assert get_metric("DENS") is density and metric_names()[-2:] == ("density", "dens")
    assert METRIC_GROUPS["pr"].columns == ("precision", "recall", "density")
    assert metric_columns(["kid", "pr"]) == ("kid", "kid_std", "precision", "recall", "density")
    df = to_table([result_row(RUN, {**RECORD, "density": 0.96875})])
    assert results_table(tmp_path, df)["density"] == ["0.9688"]
    assert "inception_score, is, precision, recall, class_accuracy, val_loss, val_mse, kid, fd_dinov2, density, dens " \
        "(default: fid)" in option_help(capsys, monkeypatch, "report", "--metric METRIC")
    assert "pr (Precision, Recall, Density)" in option_help(capsys, monkeypatch, "eval", "--metrics LIST")

