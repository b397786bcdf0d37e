"""The metrics `--metrics fid,sfid,is,pr,kid,fd-dinov2` chooses from, and what each one needs.

A metric group is one name on the command line (and in a grid spec's `eval.metrics`); it fills
one or more results-table columns, from one part of the chosen extractor's features (`pool`,
`spatial`, `logits`) or from its own extractor (`fd-dinov2` runs DINOv2 whatever `--features` is),
against the reference statistics or against features of the reference images.
"""
import dataclasses
from collections.abc import Iterable

from study.registry import Registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricGroup:
    """One `--metrics` name: the columns it fills and the features it needs."""

    name: str
    columns: tuple[str, ...]  # results-table columns (study.metrics), plus extras kept in the record only
    part: str  # which part of the features: pool, spatial or logits
    extractor: str | None = None  # its own feature extractor; None: the one `--features` names
    reference_images: bool = False  # needs features of the reference images, not only its statistics


METRIC_GROUPS: Registry[MetricGroup] = Registry("metric", {g.name: g for g in (
    MetricGroup(name="fid", columns=("fid",), part="pool"),
    MetricGroup(name="sfid", columns=("sfid",), part="spatial"),
    MetricGroup(name="is", columns=("inception_score",), part="logits"),
    MetricGroup(name="pr", columns=("precision", "recall"), part="pool", reference_images=True),
    MetricGroup(name="kid", columns=("kid", "kid_std"), part="pool", reference_images=True),
    MetricGroup(name="fd-dinov2", columns=("fd_dinov2",), part="pool", extractor="dinov2", reference_images=True),
)})
DEFAULT_METRICS = ("fid", "sfid", "is", "pr")  # the paper's five numbers


def parse_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    """'fid,kid' or ['fid', 'kid'] -> ('fid', 'kid'), each checked; ValueError naming the choices otherwise."""
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    if not any(names):
        raise ValueError(f"no metric given; choose from {', '.join(METRIC_GROUPS.names())}")
    return tuple(dict.fromkeys(METRIC_GROUPS.check(name) for name in names))


def metric_columns(metrics: Iterable[str]) -> tuple[str, ...]:
    """Every record column that the metric groups `metrics` fill."""
    return tuple(column for name in metrics for column in METRIC_GROUPS[name].columns)
