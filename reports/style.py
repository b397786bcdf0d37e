"""What the report can plot (the metrics registry) and how a run looks in every figure.

As in the paper's figures, colour says the model size and line style says the patch size; the
marker says the conditioning block, so block variants of one model stay apart.
"""
import dataclasses

import pandas as pd


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metric:
    """A column of the results table that the report can plot and fit."""

    column: str
    label: str
    lower_is_better: bool


METRICS = {
    "fid": Metric(column="fid", label="FID", lower_is_better=True),
    "sfid": Metric(column="sfid", label="sFID", lower_is_better=True),
    "inception_score": Metric(column="inception_score", label="Inception Score", lower_is_better=False),
    "precision": Metric(column="precision", label="Precision", lower_is_better=False),
    "recall": Metric(column="recall", label="Recall", lower_is_better=False),
    "class_accuracy": Metric(column="class_accuracy", label="Class accuracy", lower_is_better=False),
    "val_loss": Metric(column="val_loss", label="Validation loss", lower_is_better=True),
    "val_mse": Metric(column="val_mse", label="Validation MSE", lower_is_better=True),
}
ALIASES = {"is": "inception_score"}


def get_metric(name: str) -> Metric:
    """The metric called `name` (a results column, or `is`); ValueError naming the choices."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return METRICS[key]


SIZE_COLOURS = {
    "T": "#8c8c8c",
    "M": "#b07aa1",
    "S": "#4e79a7",
    "B": "#59a14f",
    "L": "#f28e2b",
    "XL": "#e15759",
}
OTHER_COLOUR = "#76b7b2"
PATCH_LINESTYLES = {2: "-", 4: "--", 8: ":"}
OTHER_LINESTYLE = "-."
BLOCK_MARKERS = {"adaln-zero": "o", "adaln": "s", "cross-attn": "^", "in-context": "D"}
OTHER_MARKER = "v"
BLOCK_COLOURS = {"adaln-zero": "#e15759", "adaln": "#4e79a7", "cross-attn": "#59a14f", "in-context": "#f28e2b"}


def run_style(size, patch_size, block) -> dict:
    """matplotlib keyword arguments (color, linestyle, marker) for a run."""
    return {
        "color": SIZE_COLOURS.get(size, OTHER_COLOUR),
        "linestyle": OTHER_LINESTYLE if pd.isna(patch_size) else PATCH_LINESTYLES.get(int(patch_size), OTHER_LINESTYLE),
        "marker": BLOCK_MARKERS.get(block, OTHER_MARKER),
    }
