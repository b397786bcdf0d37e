"""Each model at its best: the rows of the swept value(s) of one or more axes (a post-hoc EMA length, a
learning rate, ...) that score best on a selection metric, chosen per model and step.

The choice is made on one metric (the validation loss by default, never the metric a figure then reports),
averaged over the rows of each candidate (its seeds and sampling settings), and keeps every row of the chosen
value: its validation loss and its sampling metrics alike. Rows where an axis is empty (the classic EMA has no
ema_sigma_rel) are not candidates; `classic_ema_rows` returns those of the classic EMA, for the figures that
show the fixed recipe beside the best.
"""
import pandas as pd

from study.metrics import METRICS
from study.schema import SWEPT_COLUMNS, check_columns

# What identifies "a model at a step" across the values of the swept axes (the run's name may carry them): the
# model, and the swept recipe values (parametrization, lr, batch size, ...) not among the axes.
MODEL_AT_STEP = ("model", "block", "width", "params", "dataset", "resolution", *SWEPT_COLUMNS, "step")


def best_rows(frame: pd.DataFrame, axes, select_on: str = "val_loss") -> pd.DataFrame:
    """The rows of each model at each step at the value of `axes` whose mean `select_on` is best (lowest or
    highest as the metric says); ties go to the first value in sorted order. Empty when no row has every axis."""
    axes = list(axes)
    metric = METRICS.get(METRICS.check(select_on, what="selection metric"))
    missing = [a for a in axes if a not in frame.columns]
    if missing:
        raise ValueError(f"the results table has no column {missing[0]!r} to select on; give columns the grid sweeps, "
                         f"e.g. ema_sigma_rel (its eval.ema_sigma_rels)")
    check_columns(frame, [select_on], f"selecting on {select_on}")
    by = [c for c in MODEL_AT_STEP if c in frame.columns and c not in axes]
    candidates = frame.dropna(subset=[*axes, select_on])
    if candidates.empty:
        return frame.iloc[:0]
    score = candidates.groupby(by + axes, dropna=False)[select_on].mean().reset_index()
    score = score.sort_values(by + axes, kind="stable")
    pick = score.loc[score.groupby(by, dropna=False)[select_on].idxmin() if metric.lower_is_better
                     else score.groupby(by, dropna=False)[select_on].idxmax()]
    chosen = frame.dropna(subset=axes).merge(pick[by + axes], on=by + axes, how="inner")
    return chosen.reset_index(drop=True)


def classic_ema_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the classic EMA (ema_decay, the model a run samples by default): no ema_sigma_rel."""
    return frame[frame["ema_sigma_rel"].isna()] if "ema_sigma_rel" in frame.columns else frame
