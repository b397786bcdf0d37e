"""The metric registry is the one list of metrics: the schema's metric columns, the report's table,
the metric names `scaling report --metric` takes and the `--metrics` groups all follow it."""
import re

import pytest

from eval.metric_groups import DEFAULT_METRICS, METRIC_GROUPS
from reports.content import result_columns
from study.metrics import METRICS, PAPER_METRICS, get_metric, metric_names
from study.schema import schema
from tests.cli_help import option_help

# the results table's columns in the order results.parquet and results.csv hold them
TABLE_ORDER = ["run", "seed", "model", "size", "patch_size", "block", "width", "params", "gflops", "dataset",
               "resolution", "batch_size", "lr", "parametrization", "warmup_steps", "weight_decay", "step",
               "images_seen", "train_compute_gflops", "budget", "ema_sigma_rel", "sampler",
               "sampling_steps", "cfg_scale", "sampling_compute_gflops", "num_samples", "sampling_seed", "features",
               "fid", "sfid",
               "inception_score", "precision", "recall", "class_accuracy", "val_loss", "val_mse", "kid", "fd_dinov2",
               "wall_seconds"]


def test_every_registered_metric_is_a_float_column_of_the_schema_in_the_tables_order():
    table = schema()
    assert list(table) == TABLE_ORDER
    for name, metric in METRICS.items():
        assert name == metric.column and table[name] == ("float64", metric.meaning)


def test_every_column_the_report_table_shows_comes_from_the_schema_and_every_metric_is_shown():
    shown = result_columns()
    assert set(shown) <= set(schema()) and len(set(shown)) == len(shown)
    assert {"kid", "fd_dinov2", "class_accuracy", "val_loss", "wall_seconds"} <= set(shown)
    assert set(METRICS) <= set(shown)


def test_a_metric_is_found_by_its_column_or_alias_in_any_case():
    assert get_metric(" IS ") is get_metric("inception_score") is METRICS["inception_score"]
    assert get_metric("FD_DINOv2").label == "FD-DINOv2"
    with pytest.raises(ValueError, match=r"^unknown metric 'loss'; choose one of fid, sfid, inception_score, "):
        get_metric("loss")
    for name in metric_names():
        metric = get_metric(name)
        assert name in (metric.column, *metric.aliases)


def test_report_metric_choices_are_the_registry_names(capsys, monkeypatch):
    line = option_help(capsys, monkeypatch, "report", "--metric METRIC")
    listed = re.search(r"alias: (.*) \(default: fid\)", line).group(1).split(", ")
    assert listed == list(metric_names())
    assert listed == ["fid", "sfid", "inception_score", "is", "precision", "recall", "class_accuracy", "val_loss",
                      "val_mse", "kid", "fd_dinov2"]


def test_metric_groups_fill_the_columns_of_their_registered_metrics(capsys, monkeypatch):
    assert {m.group for m in METRICS.values()} - {None} == set(METRIC_GROUPS)
    assert {name: group.columns for name, group in METRIC_GROUPS.items()} == {
        "fid": ("fid",), "sfid": ("sfid",), "is": ("inception_score",), "pr": ("precision", "recall"),
        "kid": ("kid", "kid_std"), "fd-dinov2": ("fd_dinov2",)}
    assert DEFAULT_METRICS == ("fid", "sfid", "is", "pr")
    assert PAPER_METRICS == ("fid", "sfid", "inception_score", "precision", "recall")
    line = option_help(capsys, monkeypatch, "eval", "--metrics LIST")
    assert "fid (FID), sfid (sFID), is (Inception Score), pr (Precision, Recall), kid (KID), fd-dinov2 (FD-DINOv2)" \
        in line
