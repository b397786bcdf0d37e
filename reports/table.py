"""Views of the results table that the figures and fits share (one place, so they agree).

A grid can evaluate each checkpoint in several ways (sampler, sampling steps, guidance, feature
extractor). Curves over training use one of them, the *main setting*: the combination with the most
evaluated rows (ties go to no guidance, then to more sampling steps), which for a grid run as the
paper did is DDPM-250, no guidance.

Seeds: runs that repeat a recipe with another training seed share its run name and differ in the
`seed` column. Figures draw the mean across seeds with the min-to-max range; tables add the 95% t
interval of the mean (`seed_spread`); fits use every seed's row, not the means.
"""
import numpy as np
import pandas as pd
from scipy import stats

from study.blocks import DEFAULT_BLOCK
from study.schema import check_columns

SETTING = ("sampler", "sampling_steps", "cfg_scale", "features")
SIZE_ORDER = ("T", "M", "S", "B", "L", "XL")
MAIN_BLOCK = DEFAULT_BLOCK  # the block of the main runs; the others are ablations
RUN_COLUMNS = ("run", "model", "size", "patch_size", "block", "gflops")


class NoData(ValueError):
    """The table is well formed but has nothing yet for this figure (e.g. no evaluated steps)."""


def require(df: pd.DataFrame, columns, what: str):
    """ValueError naming the first column `what` needs that the table lacks."""
    check_columns(df, list(columns), what)


def evaluated(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows with a value in `column`, ordered by run and step."""
    rows = df[df[column].notna()]
    if rows.empty:
        raise NoData(f"no evaluated rows have a {column!r} value yet")
    return in_run_order(rows)


def main_setting(df: pd.DataFrame) -> dict:
    """The (sampler, sampling_steps, cfg_scale, features) combination with the most rows; on a tie
    the unguided one (the paper's scaling analysis uses no guidance), then the most sampling steps."""
    counts = df.groupby(list(SETTING), dropna=False).size().reset_index(name="n")
    counts["unguided"] = counts["cfg_scale"] == 1.0
    best = counts.sort_values(["n", "unguided", "sampling_steps"], ascending=False, kind="stable").iloc[0]
    return {key: best[key] for key in SETTING}


def in_setting(df: pd.DataFrame, setting: dict, keys=SETTING) -> pd.DataFrame:
    """Rows of `df` evaluated with `setting` (only the given keys are compared)."""
    mask = np.ones(len(df), dtype=bool)
    for key in keys:
        value = setting[key]
        column = df[key]
        mask &= (column.isna() if pd.isna(value) else (column == value).fillna(False)).to_numpy(dtype=bool)
    return df[mask]


def describe_setting(setting: dict) -> str:
    """'ddpm, 250 steps, cfg 1.0, inception features'."""
    return (f"{setting['sampler']}, {setting['sampling_steps']} sampling steps, cfg {setting['cfg_scale']:g}, "
            f"{setting['features']} features")


def main_rows(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Evaluated rows of `column` in the main setting, one per (run, step)."""
    rows = evaluated(df, column)
    return in_setting(rows, main_setting(rows))


def run_order(row) -> tuple:
    """Sort key of a run in the paper's order: size S..XL, then patch 8, 4, 2, then block."""
    size_rank = SIZE_ORDER.index(row["size"]) if row["size"] in SIZE_ORDER else len(SIZE_ORDER)
    patch = -1 if pd.isna(row["patch_size"]) else int(row["patch_size"])
    return size_rank, -patch, row["block"] != MAIN_BLOCK, str(row["block"]), str(row["run"])


def runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run with what identifies and styles it, in the paper's order."""
    first = df.drop_duplicates("run")[list(RUN_COLUMNS)]
    return first.iloc[sorted(range(len(first)), key=lambda i: run_order(first.iloc[i]))].reset_index(drop=True)


def in_run_order(df: pd.DataFrame) -> pd.DataFrame:
    """`df`'s rows grouped by run in the paper's order, each run's rows by step."""
    order = {run: i for i, run in enumerate(runs(df)["run"])}
    return df.assign(_order=df["run"].map(order)).sort_values(["_order", "step"], kind="stable").drop(columns="_order")


def main_block(df: pd.DataFrame) -> str:
    """The block most runs use (adaLN-Zero on ties, the paper's choice); the others are ablations."""
    counts = df.drop_duplicates("run")["block"].value_counts()
    best = counts.max()
    return MAIN_BLOCK if counts.get(MAIN_BLOCK, 0) == best else counts.index[0]


def without_ablations(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the main block only: one point per model, as in the paper's Gflops figure."""
    return df[df["block"] == main_block(df)]


def common_step(rows: pd.DataFrame):
    """The largest step every run was evaluated at, or None when the runs share none."""
    shared = set.intersection(*(set(g["step"]) for _, g in rows.groupby("run")))
    return max(shared) if shared else None


def at_step(rows: pd.DataFrame, step=None) -> tuple[pd.DataFrame, str]:
    """One row per run at `step` (default: the last step all runs share, else each run's last).

    Returns the rows and words saying which step they are at.
    """
    if step is not None:
        picked = rows[rows["step"] == step]
        if picked.empty:
            steps = ", ".join(str(s) for s in sorted(rows["step"].unique()))
            raise ValueError(f"no run was evaluated at step {step}; evaluated steps: {steps}")
        return picked, f"step {step:,}"
    shared = common_step(rows)
    if shared is not None:
        return rows[rows["step"] == shared], f"step {shared:,}"
    last = rows.sort_values("step").groupby("run").tail(1)
    return last, "each run's last evaluated step"


def frontier_mask(x, y, lower_is_better: bool = True) -> np.ndarray:
    """The compute-efficient frontier: points better than every point of less (or equal) x.

    `x`, `y` 1-D arrays; returns a boolean mask over them.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    score = y if lower_is_better else -y
    order = np.lexsort((score, x))  # by x, then best score first among equal x
    mask = np.zeros(len(x), dtype=bool)
    best = np.inf
    for i in order:
        if score[i] < best:
            mask[i], best = True, score[i]
    return mask


SPREAD = "mean across seeds, band: min to max"


def seed_spread(df: pd.DataFrame, columns, by, confidence: float = 0.95) -> pd.DataFrame:
    """One row per group of `by` (e.g. everything but the seed) with `n_seeds` (rows in the group) and, for
    each of `columns`, its `_mean`, `_min`, `_max` and the t interval of the mean `_ci_low`, `_ci_high`
    (nan with one seed)."""
    grouped = df.groupby(list(by), dropna=False, sort=False)
    out = grouped.size().rename("n_seeds").to_frame()
    for column in columns:
        values = grouped[column]
        mean, n = values.mean(), values.count()
        with np.errstate(invalid="ignore", divide="ignore"):
            t = stats.t.ppf(0.5 + confidence / 2, np.where(n > 1, n - 1, np.nan))
            half = t * values.std(ddof=1) / np.sqrt(n)
        out[f"{column}_mean"], out[f"{column}_min"], out[f"{column}_max"] = mean, values.min(), values.max()
        out[f"{column}_ci_low"], out[f"{column}_ci_high"] = mean - half, mean + half
    return out.reset_index()


def seeds_per_point(rows: pd.DataFrame) -> int:
    """The most rows any (run, step) has: the number of seeds behind a point of a figure."""
    return int(rows.groupby(["run", "step"]).size().max()) if len(rows) else 0


def frontier_rows(rows: pd.DataFrame, x: str, y: str, lower_is_better: bool = True) -> pd.DataFrame:
    """Every row of the points on the compute-efficient frontier of `y` against `x`, by `x`. A point is a
    (run, step) where the table has those columns, judged by its mean across seeds; otherwise a row."""
    by = [c for c in ("run", "step") if c in rows.columns]
    if not by:
        return rows[frontier_mask(rows[x], rows[y], lower_is_better)].sort_values(x, kind="stable")
    means = rows.groupby(by, sort=False)[[x, y]].mean().reset_index()
    keep = means[frontier_mask(means[x], means[y], lower_is_better)][by]
    picked = rows[pd.MultiIndex.from_frame(rows[by]).isin(pd.MultiIndex.from_frame(keep))]
    return picked.sort_values(x, kind="stable")
