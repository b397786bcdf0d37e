"""Each model at its best hyperparameters: the rows of a results table chosen on one column (e.g. val_loss).

A model is a row key (study.schema.KEY) without the chosen axes, the seed and the step; its best setting is
the one of the axes' values whose `select_on` value, averaged over seeds at the model's last step, is lowest.
Selection on the validation loss keeps a reported metric (FID) from being its own selection criterion.
"""
import pandas as pd

from study.schema import KEY


def _check_axes(frame: pd.DataFrame, axes, select_on: str):
    """ValueError in one line for an axis or column the table lacks, or an axis with one value (nothing to choose)."""
    for column in (*axes, select_on):
        if column not in frame.columns:
            raise ValueError(f"the results table has no column {column!r}; choose among {', '.join(frame.columns)}")
    for axis in axes:
        values = frame[axis].dropna().unique()
        if len(values) < 2:
            raise ValueError(f"the grid does not sweep {axis} (one value: {', '.join(map(str, values))}); sweep it "
                             f"in the grid spec (sweep: {{{axis}: [...]}}) or leave --best out")
    if frame[select_on].notna().sum() == 0:
        raise ValueError(f"no row has a {select_on} value to select on; evaluate it first or choose another column")


def best_rows(frame: pd.DataFrame, axes, select_on: str = "val_loss") -> pd.DataFrame:
    """For each model, at its last step, the rows (every seed) of the axes' values with the lowest mean
    `select_on` over seeds. `axes`: a column name or a list of them (e.g. 'lr' or ['lr', 'ema_sigma_rel'])."""
    axes = [axes] if isinstance(axes, str) else list(axes)
    _check_axes(frame, axes, select_on)
    model = [c for c in KEY if c in frame.columns and c not in (*axes, "seed", "step")]
    rated = frame[frame[select_on].notna()]
    last = rated.groupby(model, dropna=False)["step"].transform("max")
    rated = rated[rated["step"] == last]
    means = rated.groupby(model + axes, dropna=False)[select_on].mean().reset_index()
    best = means.loc[means.groupby(model, dropna=False)[select_on].idxmin(), model + axes]
    return rated.merge(best, on=model + axes, how="inner").reset_index(drop=True)
