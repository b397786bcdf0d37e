"""The metrics `--metrics fid,sfid,is,pr,kid,fd-dinov2` chooses from, and what each one needs.

A metric group is one name on the command line (and in a grid spec's `eval.metrics`); it fills
the results-table columns of the metrics whose `group` names it in `study.metrics`, from one part
of the chosen extractor's features (`pool`, `spatial`, `logits`) or from its own extractor
(`fd-dinov2` runs DINOv2 whatever `--features` is), against the reference statistics or against
features of the reference images. A new metric computed like an existing group's joins it by its
registry entry alone; a new group is one entry here saying what its computation needs.
"""
import dataclasses
from collections.abc import Iterable

from study.metrics import METRICS, Metric
from study.registry import Registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricGroup:
    """One `--metrics` name: the features it needs (its columns are the registered metrics of this group)."""

    name: str
    part: str  # which part of the features: pool, spatial or logits
    extractor: str | None = None  # its own feature extractor; None: the one `--features` names
    reference_images: bool = False  # needs features of the reference images, not only its statistics
    extras: tuple[str, ...] = ()  # values kept in the evaluation record only, not results-table columns

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """The registered metrics it computes (study.metrics, in registry order)."""
        return tuple(metric for metric in METRICS.values() if metric.group == self.name)

    @property
    def columns(self) -> tuple[str, ...]:
        """The results-table columns of its metrics, then its extras."""
        return (*(metric.column for metric in self.metrics), *self.extras)


METRIC_GROUPS: Registry[MetricGroup] = Registry("metric", {g.name: g for g in (
    MetricGroup(name="fid", part="pool"),
    MetricGroup(name="sfid", part="spatial"),
    MetricGroup(name="is", part="logits"),
    MetricGroup(name="pr", part="pool", reference_images=True),
    MetricGroup(name="kid", part="pool", reference_images=True, extras=("kid_std",)),
    MetricGroup(name="fd-dinov2", part="pool", extractor="dinov2", reference_images=True),
)})
# the groups of the paper's five numbers: fid, sfid, is, pr
DEFAULT_METRICS = tuple(dict.fromkeys(m.group for m in METRICS.values() if m.paper))


def parse_metrics(metrics: str | Iterable[str]) -> tuple[str, ...]:
    """'fid,kid' or ['fid', 'kid'] -> ('fid', 'kid'), each checked; ValueError naming the choices otherwise."""
    names = [m.strip() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    if not any(names):
        raise ValueError(f"no metric given; choose from {', '.join(METRIC_GROUPS.names())}")
    return tuple(dict.fromkeys(METRIC_GROUPS.check(name) for name in names))


def describe_groups() -> str:
    """Each `--metrics` name with the labels of what it computes: 'fid (FID), ..., pr (Precision, Recall), ...'."""
    return ", ".join(f"{name} ({', '.join(m.label for m in group.metrics)})" for name, group in METRIC_GROUPS.items())


def metric_columns(metrics: Iterable[str]) -> tuple[str, ...]:
    """Every record column that the metric groups `metrics` fill."""
    return tuple(column for name in metrics for column in METRIC_GROUPS[name].columns)
