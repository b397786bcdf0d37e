"""The evaluation metrics by their results-table column, named once for every package.

Adding a metric is one entry here plus the code that computes it: the results schema
(`study.schema`), the report's table and figure labels, the `--metric` names of `scaling report`
and the columns of each `--metrics` group (`eval.metric_groups`) all read this registry.
"""
import dataclasses

from study.registry import Registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metric:
    """A metric column of the results table: what it means, what figures and tables call it, which way is better."""

    column: str
    label: str
    meaning: str  # the column's description in the results schema
    lower_is_better: bool
    group: str | None  # the `--metrics` name that computes it (eval.metric_groups); None: not a `--metrics` choice
    aliases: tuple[str, ...] = ()  # other names `get_metric` accepts (`scaling report --metric is`)
    paper: bool = True  # one of the paper's five (Table 4); False for this project's additions


METRICS: Registry[Metric] = Registry("metric", {m.column: m for m in (
    Metric(column="fid", label="FID", meaning="Frechet Inception Distance", lower_is_better=True, group="fid"),
    Metric(column="sfid", label="sFID", meaning="spatial FID", lower_is_better=True, group="sfid"),
    Metric(column="inception_score", label="Inception Score", meaning="Inception Score", lower_is_better=False,
           group="is", aliases=("is",)),
    Metric(column="precision", label="Precision", meaning="improved precision (k = 3)", lower_is_better=False,
           group="pr"),
    Metric(column="recall", label="Recall", meaning="improved recall (k = 3)", lower_is_better=False, group="pr"),
    # computed on every evaluation whose extractor reads the labels
    Metric(column="class_accuracy", label="Class accuracy",
           meaning="share of samples classified as their conditioning label (mnist features)",
           lower_is_better=False, group=None, paper=False),
    # computed by the validation of a run's EMA model (dit.validate), not from samples
    Metric(column="val_loss", label="Validation loss",
           meaning="diffusion loss (mse + vb) of the EMA model on the fixed held-out set",
           lower_is_better=True, group=None, paper=False),
    Metric(column="val_mse", label="Validation MSE", meaning="the noise-prediction MSE part of val_loss",
           lower_is_better=True, group=None, paper=False),
    # Kernel Inception Distance (Binkowski et al. 2018), torch-fidelity's definition
    Metric(column="kid", label="KID", meaning="Kernel Inception Distance (mean of 100 subsets of 1,000)",
           lower_is_better=True, group="kid", paper=False),
    # as EDM2 reports it (Stein et al. 2023)
    Metric(column="fd_dinov2", label="FD-DINOv2", meaning="Frechet distance of DINOv2 ViT-L/14 features",
           lower_is_better=True, group="fd-dinov2", paper=False),
)})
PAPER_METRICS = tuple(name for name, metric in METRICS.items() if metric.paper)


def metric_names() -> tuple[str, ...]:
    """Every name `get_metric` accepts: each metric's column, then its aliases, in registry order."""
    return tuple(name for metric in METRICS.values() for name in (metric.column, *metric.aliases))


def get_metric(name: str) -> Metric:
    """The metric called `name` (its column or an alias, any case); ValueError naming the choices."""
    key = name.strip().lower()
    for metric in METRICS.values():
        if key == metric.column or key in metric.aliases:
            return metric
    raise METRICS.error(name)
