"""The post-hoc EMA part of a report (EDM2's Fig. 5 views): each model's metric against the relative EMA length
sigma_rel at its last point, and the best sigma_rel (chosen on the validation loss) against Gflops, with the
classic EMA (ema_decay) marked at its equivalent sigma_rel, and the scaling view at each model's best length
beside the fixed one. Reads the results table and the runs' config.json only."""
import json

import numpy as np
import pandas as pd

from dit.ema import exponential_sigma_rel
from reports import figures as F
from reports import table as T
from reports.document import Plot, Section, Table, Text, format_table
from reports.style import run_style
from study.layout import RunLayout
from study.metrics import Metric, get_metric
from study.selection import best_rows, classic_ema_rows

VAL_LOSS = get_metric("val_loss")
KEYS = ["run", "model", "size", "patch_size", "block", "gflops", "step"]


def length_curves(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean `metric` over seeds (and repeated rows) per run, step and sigma_rel; sampled metrics in the setting
    with most rows. Columns KEYS + ema_sigma_rel + metric."""
    rows = df[df["ema_sigma_rel"].notna() & df[metric].notna()]
    if metric != VAL_LOSS.column and not rows.empty:
        rows = T.in_setting(rows, T.main_setting(rows))
    if rows.empty:
        raise T.NoData(f"no post-hoc EMA length has a {metric!r} value")
    return rows.groupby(KEYS + ["ema_sigma_rel"], dropna=False)[metric].mean().reset_index()


def classic_points(df: pd.DataFrame, curves: pd.DataFrame, metric: str, ema_decay: float | None) -> pd.DataFrame:
    """The classic EMA's `metric` at each curve's step (mean over seeds, the curves' setting) and its equivalent
    sigma_rel (dit.ema.exponential_sigma_rel of ema_decay at that step; NaN when the decay is not known)."""
    rows = classic_ema_rows(df)
    rows = rows[rows[metric].notna()]
    if metric != VAL_LOSS.column and not rows.empty:
        rows = T.in_setting(rows, T.main_setting(rows))
    steps = curves[["run", "step"]].drop_duplicates()
    points = rows.merge(steps, on=["run", "step"]).groupby(KEYS, dropna=False)[metric].mean().reset_index()
    points["ema_sigma_rel"] = [exponential_sigma_rel(ema_decay, int(s)) if ema_decay else np.nan
                               for s in points["step"]]
    return points


def plot_metric_vs_sigma_rel(curves: pd.DataFrame, classic: pd.DataFrame, metric: Metric):
    """One line per run: the metric against sigma_rel; a star for the classic EMA at its equivalent length."""
    fig, (ax,) = F._figure()
    for run, rows in T.in_run_order(curves).groupby("run", sort=False):
        first = rows.iloc[0]
        style = run_style(first["size"], first["patch_size"], first["block"])
        rows = rows.sort_values("ema_sigma_rel")
        ax.plot(rows["ema_sigma_rel"], rows[metric.column], label=run, **style)
        mark = classic[classic["run"] == run]
        ax.plot(mark["ema_sigma_rel"], mark[metric.column], marker="*", markersize=12, linestyle="none",
                color=style.get("color"))
    ax.set_xlabel("relative EMA length sigma_rel")
    ax.set_ylabel(metric.label)
    F._title(ax, f"{metric.label} against the EMA length", "star: the classic EMA at its equivalent sigma_rel")
    fig.legend(**F.LEGEND)
    return fig


def plot_best_sigma_rel(best: pd.DataFrame, metric: Metric):
    """Left: each model's best sigma_rel against Gflops, with the classic EMA's equivalent length; right: the
    metric against Gflops at the best length and with the classic EMA."""
    fig, (left, right) = F._figure(ncols=2)
    left.plot(best["gflops"], best["best_sigma_rel"], "o", color="#4e79a7", label="best length")
    left.plot(best["gflops"], best["classic_sigma_rel"], "*", markersize=11, color="#e15759", label="classic EMA")
    right.plot(best["gflops"], best["best"], "o", color="#4e79a7", label="at its best length")
    right.plot(best["gflops"], best["classic"], "*", markersize=11, color="#e15759", label="classic EMA")
    for ax, label in ((left, "best sigma_rel"), (right, metric.label)):
        ax.set_xscale("log")
        ax.set_xlabel("forward Gflops")
        ax.set_ylabel(label)
    F._title(left, "Best EMA length against model size", f"chosen on {VAL_LOSS.label}")
    F._title(right, f"{metric.label}: best length vs classic EMA")
    left.legend(fontsize=8, frameon=False)
    return fig


def best_table(df: pd.DataFrame, metric: Metric, curves: pd.DataFrame, classic: pd.DataFrame) -> pd.DataFrame:
    """Per run at its last post-hoc point: the best length of those with a `metric` value (chosen on val_loss),
    the classic EMA's equivalent length, and `metric` at each."""
    chosen = best_rows(df[df["ema_sigma_rel"].notna() & df[metric.column].notna()], ["ema_sigma_rel"],
                       VAL_LOSS.column)
    picks = chosen[["run", "step", "ema_sigma_rel"]].drop_duplicates()
    at_best = curves.merge(picks, on=["run", "step", "ema_sigma_rel"])
    if at_best.empty:
        raise T.NoData(f"the best length of no model has a {metric.label} value")
    table = at_best.rename(columns={"ema_sigma_rel": "best_sigma_rel", metric.column: "best"})
    fixed = classic.rename(columns={"ema_sigma_rel": "classic_sigma_rel", metric.column: "classic"})
    table = table.merge(fixed[["run", "step", "classic_sigma_rel", "classic"]], on=["run", "step"], how="left")
    return T.in_run_order(table).reset_index(drop=True)


def ranking_note(table: pd.DataFrame, metric: Metric) -> str:
    """Whether ordering the models by the metric gives the same answer at their best length as with the fixed EMA."""
    if len(table) < 2 or table["classic"].isna().any():
        return f"{metric.label}: too few models with both values to compare their order."
    same = list(table["best"].rank(method="min")) == list(table["classic"].rank(method="min"))
    gain = (table["classic"] - table["best"]).mean() * (1 if metric.lower_is_better else -1)
    return (f"{metric.label}: the models rank {'the same' if same else 'differently'} at their best EMA length as "
            f"with the classic EMA; the best length is better by {gain:.4g} on average.")


def ema_decay_of(run_dirs: dict) -> float | None:
    """The classic EMA's decay, from the first run's config.json (a grid's runs share their recipe)."""
    for path in run_dirs.values():
        config = RunLayout(path).config
        if config.exists():
            return json.loads(config.read_text()).get("train", {}).get("ema_decay")
    return None


def metric_blocks(df: pd.DataFrame, metric: Metric, ema_decay: float | None) -> list:
    """The two figures, the table and the note of one metric (NoData when it has no post-hoc values)."""
    curves = length_curves(df, metric.column)
    classic = classic_points(df, curves, metric.column, ema_decay)
    name = metric.column.replace("_", "-")
    table = best_table(df, metric, curves, classic)
    shown = table[["run", "gflops", "step", "classic_sigma_rel", "best_sigma_rel", "classic", "best"]]
    return [
        Plot(f"{name}-vs-ema-length", plot_metric_vs_sigma_rel(curves, classic, metric),
             f"{metric.label} of each model against its post-hoc EMA length at the last point (EDM2's Fig. 5)."),
        Plot(f"best-ema-length-{name}", plot_best_sigma_rel(table, metric),
             f"Each model's best EMA length (of those with a {metric.label} value), chosen on {VAL_LOSS.label}, "
             f"against Gflops, and {metric.label} there beside the classic EMA."),
        Table(format_table(shown), f"{metric.label} with the classic EMA and at the best length."),
        Text(ranking_note(table, metric)),
    ]


def ema_section(df: pd.DataFrame, metric: Metric, run_dirs: dict) -> Section:
    """The report's post-hoc EMA section: the validation loss, and the report's metric where lengths were sampled."""
    if "ema_sigma_rel" not in df.columns or df["ema_sigma_rel"].isna().all():
        return Section("Post-hoc EMA", "posthoc-ema", [Text(
            "No post-hoc EMA lengths in this grid (`eval.ema_sigma_rels` scores them at the last point).", note=True)])
    decay, blocks = ema_decay_of(run_dirs), []
    for m in dict.fromkeys([VAL_LOSS.column, metric.column]):
        try:
            blocks += metric_blocks(df, get_metric(m), decay)
        except T.NoData as exc:
            blocks.append(Text(f"{get_metric(m).label} against the EMA length: not drawn, {exc}.", note=True))
    return Section("Post-hoc EMA", "posthoc-ema", blocks)
