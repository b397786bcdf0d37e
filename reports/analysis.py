"""The analysis behind the report's figures and tables: Gflops correlation, the compute-efficient frontier
and the isoFLOP profiles of a results table. Plotting lives in `reports.figures`, the fits in `reports.fits`."""
import numpy as np
import pandas as pd
from scipy import stats

from reports import table as T
from reports.fits import isoflop
from study.metrics import get_metric


def float_values(series: pd.Series) -> np.ndarray:
    """A column as a float64 array (nullable and integer columns included)."""
    return series.astype("float64").to_numpy()


def correlation(gflops, values) -> float:
    """Pearson r between log10 Gflops and the metric (nan when it is undefined)."""
    x, y = np.log10(np.asarray(gflops, float)), np.asarray(values, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def frontier_points(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows (every seed's) of the points on the compute-efficient frontier of metric vs training compute."""
    m = get_metric(metric)
    rows = rows[rows["train_compute_gflops"].astype("float64") > 0]
    return T.frontier_rows(rows, "train_compute_gflops", m.column, m.lower_is_better)


def isoflop_rows(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of an isoFLOP grid (with a `budget`) in the main setting of `metric`, every seed's."""
    m = get_metric(metric)
    T.require(df, ("run", "step", "budget", "gflops", "params") + T.SETTING + (m.column,), "the isoFLOP figures")
    rows = df[df["budget"].notna() & df[m.column].notna()]
    if rows.empty:
        raise T.NoData(f"no row has both a training-compute budget and a {m.column!r} value")
    return T.in_setting(rows, T.main_setting(rows))


def isoflop_fit(rows: pd.DataFrame, metric: str, x: str = "gflops"):
    """The isoFLOP analysis (reports.fits.isoflop) of `metric` against `x` over the rows' budgets."""
    m = get_metric(metric)
    budgets, sizes, values = (float_values(rows[column]) for column in ("budget", x, m.column))
    return isoflop(budgets, sizes, values, lower_is_better=m.lower_is_better)
