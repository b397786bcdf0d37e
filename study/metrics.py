"""The evaluation metrics by their results-table column: label and direction, named once for every package."""
import dataclasses
import math

from study.registry import Registry


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metric:
    """A metric column of the results table: what figures and tables call it, which way is better."""

    column: str
    label: str
    lower_is_better: bool
    paper: bool = True  # one of the paper's five (Table 4); False for this project's additions
    bounds: tuple[float, float] = (0.0, math.inf)  # the values it can take: fits' floors and bands stay inside


METRICS: Registry[Metric] = Registry("metric", {m.column: m for m in (
    Metric(column="fid", label="FID", lower_is_better=True),
    Metric(column="sfid", label="sFID", lower_is_better=True),
    Metric(column="inception_score", label="Inception Score", lower_is_better=False, bounds=(1.0, math.inf)),
    Metric(column="precision", label="Precision", lower_is_better=False, bounds=(0.0, 1.0)),
    Metric(column="recall", label="Recall", lower_is_better=False, bounds=(0.0, 1.0)),
    # the share of samples classified as the label they were sampled for (extractors that read the labels)
    Metric(column="class_accuracy", label="Class accuracy", lower_is_better=False, paper=False, bounds=(0.0, 1.0)),
    # the diffusion loss of the EMA model on fixed held-out items, timesteps and noise (and its MSE part)
    Metric(column="val_loss", label="Validation loss", lower_is_better=True, paper=False),
    Metric(column="val_mse", label="Validation MSE", lower_is_better=True, paper=False),
    # Kernel Inception Distance (Binkowski et al. 2018), torch-fidelity's (unbiased: can be < 0), on request
    Metric(column="kid", label="KID", lower_is_better=True, paper=False, bounds=(-math.inf, math.inf)),
    # Frechet distance of DINOv2 ViT-L/14 features (Stein et al. 2023), as EDM2 reports it, on request
    Metric(column="fd_dinov2", label="FD-DINOv2", lower_is_better=True, paper=False),
)})
PAPER_METRICS = tuple(name for name, metric in METRICS.items() if metric.paper)
