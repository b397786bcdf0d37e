"""What the report says: a list of sections of text, tables, figures and configs, built once from
the grid directory and then written as HTML and as PDF by `reports.html` and `reports.pdf`.

A figure that the grid has no data for yet (no sampling-step sweep, no blocks, no samples) becomes
a one-line note in its place; a malformed table or an unknown metric is a ValueError.
"""
import dataclasses
import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from reports import figures as F
from reports import lr_sweep as LR
from reports import rundirs
from reports import table as T
from reports.analysis import correlation, frontier_points, isoflop_fit, isoflop_rows
from reports.document import Code, Picture, Plot, Report, Section, Table, Text, format_number, format_table
from reports.ema import ema_section
from reports.fits import choose_law, fit_law, try_backtest
from reports.paper import paper_citation, paper_table
from reports.style import run_style
from study.layout import GridLayout, RunLayout, dir_name, run_dir_name
from study.metrics import METRICS, Metric, get_metric
from study.schema import measured_columns, schema
from study.selection import best_rows, classic_ema_rows

PAPER_FID_STEP = 400_000
RUN_FILES = RunLayout(".")  # the names of a run directory's files, for captions
# the columns of an evaluation point the results table shows before what was measured at it
POINT_COLUMNS = ("run", "seed", "step", "budget", "sampler", "sampling_steps", "cfg_scale", "features", "num_samples",
                 "sampling_seed", "gflops", "train_compute_gflops")
VAL_LOSS = get_metric("val_loss")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Context:
    """Everything the section builders read, loaded once."""

    grid_dir: Path
    df: pd.DataFrame
    metric: Metric
    step: int | None
    target: float | None
    run_dirs: dict  # directory name -> Path, runs of the table first in the paper's order
    run_names: dict  # directory name -> run name, for runs in the table
    swept: pd.DataFrame | None = None  # every row of a grid that sweeps lr (df: those of the fixed recipe)
    fixed_lr: float | None = None  # the recipe's lr in a grid that sweeps lr
    posthoc: pd.DataFrame | None = None  # the whole table, post-hoc EMA rows too (`df` has the classic EMA's)


def _attempt(blocks: list, what: str, build):
    """Run `build()`; a NoData becomes a note in `blocks` instead of the figure."""
    try:
        blocks.append(build())
    except T.NoData as exc:
        blocks.append(Text(f"{what}: not drawn, {exc}.", note=True))


def _rows(ctx: Context) -> pd.DataFrame:
    """Evaluated rows of the report's metric in the main setting (one per run and step)."""
    return T.main_rows(ctx.df, ctx.metric.column)


def _best(rows: pd.DataFrame, metric: Metric) -> pd.Series:
    values = rows[metric.column].astype("float64")
    return rows.loc[values.idxmin() if metric.lower_is_better else values.idxmax()]


def _default_target(rows: pd.DataFrame, metric: Metric) -> float:
    """10% better than the best value so far."""
    best = float(_best(rows, metric)[metric.column])
    return best * 0.9 if metric.lower_is_better else best * 1.1


def target_for(ctx: Context, rows: pd.DataFrame) -> float:
    """The value the fits predict compute for: the one asked for, else 10% better than the best so far."""
    return ctx.target if ctx.target is not None else _default_target(rows, ctx.metric)


def summary_section(ctx: Context) -> Section:
    """What holds first: the metric's trend with Gflops and its interval, the validation loss's, the frontier
    fit; then the best point with its spread across seeds (or said to have none)."""
    df, m = ctx.df, ctx.metric
    models = ", ".join(T.runs(df)["run"])
    datasets = ", ".join(
        f"{d} ({r} px)" for d, r in df[["dataset", "resolution"]].drop_duplicates().itertuples(index=False)
    )
    lines = [Text(f"Grid directory {ctx.grid_dir}: {df['run'].nunique()} runs ({models}) trained on {datasets}; "
                  f"{len(df)} evaluation rows, training steps {df['step'].min():,} to {df['step'].max():,}.")]
    try:
        rows = _rows(ctx)
    except T.NoData as exc:
        return Section("Summary", "summary", lines + [Text(f"Nothing to summarise yet: {exc}.", note=True)])
    lines.append(
        Text(f"Curves over training use the main evaluation setting: {T.describe_setting(T.main_setting(rows))}.")
    )
    trend = _gflops_trend(ctx, rows, m)
    lines.append(Text(trend.sentence))
    loss = _loss_trend(ctx, m)
    if loss is not None:
        lines.append(Text(loss.sentence))
    if not trend.holds:
        lines.append(Text(_why_not_reproduced(rows, m), note=True))
    lines.append(Text(_fit_headline(ctx, rows)))
    lines.append(Text(_best_sentence(rows, m)))
    lines.append(Text(f"Published numbers shown beside the grid: {paper_citation()}, Tables 2, 3 and 4."))
    return Section("Summary", "summary", lines)


@dataclasses.dataclass(frozen=True)
class Trend:
    """A metric's correlation with log Gflops across models, in a sentence, and whether it holds."""

    sentence: str
    holds: bool  # the interval of r excludes 0 on the side where the metric improves with Gflops


def _gflops_trend(ctx: Context, rows: pd.DataFrame, m: Metric) -> Trend:
    points, where = T.at_step(T.without_ablations(rows), ctx.step)
    r = correlation(points["gflops"], points[m.column])
    if not np.isfinite(r):
        return Trend(f"At {where}, {len(points)} model(s) are too few for a Gflops correlation of {m.label} "
                     "(it needs 3).", False)
    bounds = _fisher_bounds(r, len(points))
    holds = bounds is not None and (bounds[1] < 0 if m.lower_is_better else bounds[0] > 0)
    verdict = ("the trend holds: its interval excludes 0" if holds else
               "no trend established: its interval includes 0 or points the other way")
    return Trend(f"At {where}, log10 Gflops and {m.label} correlate with Pearson r = {r:.2f} over {_models(points)}"
                 f"{_fisher_interval(r, len(points))}: {verdict}"
                 + (" (the paper: FID falls as Gflops rise, Fig. 8)." if m.column == "fid" else "."),
                 holds)


def _loss_trend(ctx: Context, m: Metric) -> Trend | None:
    """The validation loss's trend: the least noisy metric (fixed items, timesteps and noise)."""
    if m.column == VAL_LOSS.column or not _extra_metrics(ctx):
        return None
    trend = _gflops_trend(ctx, T.main_rows(ctx.df, VAL_LOSS.column), VAL_LOSS)
    return Trend(f"{trend.sentence} The validation loss is the least noisy measure here: fixed held-out items, "
                 "timesteps and noise.", trend.holds)


def _why_not_reproduced(rows: pd.DataFrame, m: Metric) -> str:
    samples = "/".join(f"{int(n):,}" for n in sorted(set(rows["num_samples"].dropna())))
    seeds = T.seeds_per_point(rows)
    return (f"Why {m.label} does not show the paper's trend here: {m.label} of {samples} "
            f"samples from {seeds} seed(s) moves between resamples by more than the gaps between these models, and "
            f"{int(rows['step'].max()):,} steps are early in training. Longer training (the demo-long preset), more "
            "samples (eval.num_samples) and more seeds (seeds: [0, 1, 2]) are what would show it.")


def _best_sentence(rows: pd.DataFrame, m: Metric) -> str:
    """The best point: by its mean across seeds with their t interval, or one seed's value said to be one."""
    spread = T.seed_spread(rows, [m.column], ["run", "step"])
    best = _best(spread.rename(columns={f"{m.column}_mean": m.column}), m)
    where = f"{best['run']} at step {int(best['step']):,}"
    if best["n_seeds"] > 1:
        return (f"Best {m.label}: {best[m.column]:.3f} by {where}, the mean of {int(best['n_seeds'])} seeds (95% CI "
                f"{best[f'{m.column}_ci_low']:.3f} to {best[f'{m.column}_ci_high']:.3f}).")
    return (f"Best single-seed {m.label}: {best[m.column]:.3f} by {where}; one seed gives no interval, so read it "
            "as one draw, not a ranking (train seeds to rank models).")


def _models(points: pd.DataFrame) -> str:
    """'4 models', or '8 rows of 4 models' when seeds repeat them."""
    models = points["run"].nunique()
    return f"{models} models" if models == len(points) else f"{len(points)} rows of {models} models (every seed)"


def _fisher_bounds(r: float, n: int) -> tuple[float, float] | None:
    """The 95% interval of Pearson's r over n points (Fisher z); None below 4 points or at |r| = 1."""
    if n < 4 or abs(r) >= 1:
        return None
    half = 1.96 / np.sqrt(n - 3)
    return float(np.tanh(np.arctanh(r) - half)), float(np.tanh(np.arctanh(r) + half))


def _fisher_interval(r: float, n: int) -> str:
    """' (95% CI lo to hi, Fisher z)' for Pearson's r over n points; '' below 4 points."""
    bounds = _fisher_bounds(r, n)
    return "" if bounds is None else f" (95% CI {bounds[0]:.2f} to {bounds[1]:.2f}, Fisher z)"


def _levels_off(fit) -> str:
    """Where a saturating fit levels off, or that its floor is not identified."""
    if fit.floor_identified:
        return f"it levels off at c = {fit.c:.3g}"
    return "it levels off at a floor the points do not identify"


def _fit_headline(ctx: Context, rows: pd.DataFrame) -> str:
    """The frontier fit in one sentence; a trend in words only when b's interval excludes 0."""
    m = ctx.metric
    front = frontier_points(rows, m.column)
    what = f"Scaling-law fit of {m.label} on the compute-efficient frontier"
    try:
        choice = choose_law(front["train_compute_gflops"], front[m.column], bounds=m.bounds)
    except ValueError as exc:
        return f"{what}: not fitted, {exc}."
    fit, what = choice.fit, f"{what} ({choice.reason()})"
    lo, hi = fit.ci["b"]
    counts = f"n = {len(fit.x)} points, {fit.dof} dof"
    if not fit.trend_is_established():
        return (f"{what}: no trend established, the exponent's {fit.confidence:.0%} CI ({lo:.3g} to {hi:.3g}, "
                f"{counts}) does not exclude b = 0.")
    target = target_for(ctx, rows)
    reach = fit.compute_for(target)
    where = (f"it predicts {m.label} {target:.3g} at {reach:.3g} Gflops of training compute" if reach is not None
             else f"it never reaches {m.label} {target:.3g} ({_levels_off(fit)})")
    direction = "falls" if (fit.b > 0) == (fit.a > 0) else "rises"
    return (f"{m.label} {direction} with training compute on the frontier: {m.label} = {fit.formula()}, exponent "
            f"b = {fit.b:.3f} ({fit.confidence:.0%} CI {lo:.3f} to {hi:.3f}, {counts}; {choice.reason()}); {where}.")


def column_meanings(columns) -> str:
    """'Columns: fid: Frechet Inception Distance; ...' from the results schema, for a table's caption."""
    meanings = schema()
    return "Columns: " + "; ".join(f"{c}: {meanings[c][1]}" for c in columns if c in meanings) + "."


def result_columns() -> tuple[str, ...]:
    """The columns of the report's results table: the point's (POINT_COLUMNS), then every measured one of the
    schema (each registered metric and wall_seconds)."""
    return (*POINT_COLUMNS, *measured_columns())


def grid_section(ctx: Context) -> Section:
    df = ctx.df
    per_run = T.in_run_order(df).groupby("run", sort=False).tail(1)
    runs = per_run[
        [
            c
            for c in ("run", "model", "block", "params", "gflops", "dataset", "resolution", "batch_size", "step")
            if c in df.columns
        ]
    ].rename(columns={"step": "last evaluated step"})
    columns = [c for c in result_columns() if c in df.columns and df[c].notna().any()]
    results = T.in_run_order(df.sort_values(["cfg_scale", "sampling_steps"], kind="stable"))[columns]
    return Section("Grid and results table", "results", [
        Table(format_table(runs), "One row per run: the model, its conditioning block, parameters and forward Gflops "
                                  "(one multiply-add = one flop), the data and the last step evaluated."),
        Table(format_table(results), "Every evaluation point of the results table (empty columns left out). "
                                     + column_meanings(columns)),
    ])


def _metric_figures(ctx: Context, metric: Metric) -> list:
    """The metric against steps, Gflops and training compute (the paper's Figs. 6, 8 and 9)."""
    df, m, label, blocks = ctx.df, metric.column, metric.label, []
    name = m.replace("_", "-")
    _attempt(blocks, f"{label} vs steps", lambda: Plot(f"{name}-vs-steps", F.plot_metric_vs_steps(df, m),
             f"{label} over training, one line per run (the paper's Fig. 6)."))
    _attempt(
        blocks,
        f"{label} vs Gflops",
        lambda: Plot(
            f"{name}-vs-gflops",
            F.plot_metric_vs_gflops(df, m, ctx.step),
            f"{label} against forward Gflops at one step, with Pearson's r of log10 Gflops and {label} (the paper's "
            "Fig. 8).",
        ),
    )
    _attempt(blocks, f"{label} vs training compute", lambda: Plot(
        f"{name}-vs-train-compute", F.plot_metric_vs_train_compute(df, m),
        f"{label} against training compute (Gflops x batch x steps x 3); the grey band is the compute-efficient "
        "frontier, the best value reached for each amount of compute (the paper's Fig. 9)."))
    return blocks


def scaling_section(ctx: Context) -> Section:
    df, m, label = ctx.df, ctx.metric.column, ctx.metric.label
    name = m.replace("_", "-")
    blocks = _metric_figures(ctx, ctx.metric)
    for extra in _extra_metrics(ctx):
        blocks += _metric_figures(ctx, extra)
    _attempt(blocks, f"{label} vs sampling compute", lambda: Plot(
        f"{name}-vs-sampling-compute", F.plot_metric_vs_sampling_compute(df, m),
        f"{label} against sampling compute per image (Gflops x sampling steps) for each run (the paper's Fig. 10)."))
    _attempt(
        blocks,
        "Block ablation",
        lambda: Plot(
            f"block-ablation-{name}",
            F.plot_block_ablation(df, m),
            f"{label} over training for the conditioning blocks of each model trained with several (the paper's Fig. "
            "5).",
        ),
    )
    _attempt(blocks, "All metrics", lambda: Plot("metrics-vs-train-compute", F.plot_metrics_vs_train_compute(df),
             "Every metric with values against training compute (the paper's Fig. 12, left)."))
    return Section("Scaling figures", "figures", blocks)


def _styles(ctx: Context) -> dict:
    """Run name (and 'run seed N') -> line style of that run (runs not yet in the table get matplotlib's default)."""
    styles = {r.run: run_style(r.size, r.patch_size, r.block) for r in T.runs(ctx.df).itertuples()}
    return styles | {f"{run} seed {seed}": styles[run] for run, seed in seed_runs(ctx.df)}


def training_section(ctx: Context) -> Section:
    logs = {ctx.run_names.get(name, name): rundirs.read_train_log(path) for name, path in ctx.run_dirs.items()}
    blocks = []
    _attempt(blocks, "Training curves", lambda: Plot("training-curves", F.plot_training_curves(logs, _styles(ctx)),
             "Training loss (mse + vb), its noise-prediction MSE and its variational-bound term per run, from "
             f"{RUN_FILES.train_log.name}, smoothed by a running mean (the paper's Fig. 13)."))
    for name, path in ctx.run_dirs.items():
        image = rundirs.lr_find_image(path)
        if image is not None:
            blocks.append(Picture(image, f"{ctx.run_names.get(name, name)}: learning-rate range test ({image.name})."))
    return Section("Training", "training", blocks)


def _grid_points_at(rows: pd.DataFrame, step) -> tuple[pd.DataFrame, str]:
    """The grid's rows at the paper's 400K steps when evaluated there, else at `step` / the default."""
    if step is None and (rows["step"] == PAPER_FID_STEP).any():
        step = PAPER_FID_STEP
    return T.at_step(rows, step)


def paper_section(ctx: Context) -> Section:
    m = ctx.metric
    fid400, final = paper_table("fid_400k"), paper_table("xl2_final")
    blocks = [Text(f"Published numbers from {paper_citation()}. {fid400.attrs['source']}. {final.attrs['source']}.")]
    datasets = set(ctx.df["dataset"].dropna())
    comparable = datasets == {"imagenet256"} and set(ctx.df["features"].dropna()) == {"inception"}
    if not comparable:
        blocks.append(Text(f"This grid trained on {', '.join(sorted(datasets))} and scored with "
                           f"{', '.join(sorted(set(ctx.df['features'].dropna())))} features: compare trends "
                           "(how FID falls with Gflops and compute), not values.", note=True))
    try:
        rows = T.main_rows(ctx.df, "fid")
    except T.NoData as exc:
        return Section("Beside the paper", "paper", blocks + [Text(f"No grid FID yet: {exc}.", note=True)])
    points, where = _grid_points_at(T.without_ablations(rows), ctx.step)
    blocks.append(Table(format_table(_fid400_table(fid400, points)),
                        f"FID-50K after 400K steps (paper, Table 4) beside this grid's FID at {where}. Paper "
                        "Gflops are the paper's printed values; fvcore's count here reads a little higher (DiT-XL/2: "
                        "118.69 against 118.64), a difference the paper does not explain."))
    blocks.append(
        Table(
            format_table(_final_table(final, rows)),
            "DiT-XL/2's final metrics (paper, Tables 2 and 3) beside any DiT-XL/2 of this grid at its last step.",
        )
    )
    overlay = points[points["gflops"].notna()].rename(columns={"fid": "value"})
    label = "FID" if comparable else _grid_fid_label(points)
    caption = ("FID against Gflops: the paper's 12 models after 400K steps (hollow) and this grid (filled)."
               if comparable else f"Left, the paper's 12 models: ImageNet 256 FID-50K after 400K steps. Right, this "
               f"grid: {label}. Two numbers on different scales (data, feature network, sample count), so two "
               "panels with their own axes: compare how each falls with Gflops, not the values.")
    blocks.append(Plot("paper-overlay-fid", F.plot_paper_overlay(overlay, fid400, label, f"this grid: {where}",
                                                                 separate=not comparable), caption))
    if m.column != "fid":
        blocks.append(
            Text(f"The paper's per-model table gives FID only, so the comparison uses FID, not {m.label}.", note=True)
        )
    return Section("Beside the paper", "paper", blocks)


def _grid_fid_label(points: pd.DataFrame) -> str:
    """'MNIST-feature FID of 200 samples' for the grid's rows."""
    features = "/".join(sorted(set(points["features"].dropna())))
    samples = "/".join(f"{int(n):,}" for n in sorted(set(points["num_samples"].dropna())))
    return f"{features}-feature FID of {samples} samples" if samples else f"{features}-feature FID"


def _fid400_table(paper: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    ours = points[["model", "run", "step", "gflops", "fid"]].rename(
        columns={"gflops": "grid Gflops", "fid": "grid FID", "step": "grid step", "run": "grid run"})
    theirs = paper[["model", "gflops", "fid"]].rename(columns={"gflops": "paper Gflops", "fid": "paper FID-50K (400K)"})
    merged = theirs.merge(ours, on="model", how="outer")
    order = {name: i for i, name in enumerate(paper["model"])}
    merged["_order"] = merged["model"].map(order).fillna(len(order))
    return merged.sort_values(["_order", "model"], kind="stable").drop(columns="_order")


def _final_table(paper: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    theirs = paper.assign(source="paper (Table 2: 256 px, Table 3: 512 px)")
    ours = rows[rows["model"] == "DiT-XL/2"].sort_values("step").groupby(["resolution", "cfg_scale"]).tail(1)
    ours = ours.rename(columns={"step": "steps"}).assign(source=lambda d: "this grid: " + d["run"])
    columns = ["source"] + list(paper.columns)
    return pd.concat([theirs[columns], ours.reindex(columns=columns)], ignore_index=True)


def _extra_metrics(ctx: Context) -> list[Metric]:
    """Validation loss beside the report's metric when the table has values for it."""
    df = ctx.df
    has_loss = VAL_LOSS.column in df.columns and df[VAL_LOSS.column].notna().any()
    return [VAL_LOSS] if has_loss and ctx.metric.column != VAL_LOSS.column else []


def _backtest_table(backtest, x_name: str, label: str) -> pd.DataFrame:
    pct = f"{backtest.fit.confidence:.0%}"
    return pd.DataFrame(
        {
            x_name: [p["x"] for p in backtest.held_out],
            f"measured {label}": [p["y"] for p in backtest.held_out],
            "predicted": [p["predicted"] for p in backtest.held_out],
            f"{pct} PI low": [p["pi_low"] for p in backtest.held_out],
            f"{pct} PI high": [p["pi_high"] for p in backtest.held_out],
            "inside": ["yes" if p["inside"] else "no" for p in backtest.held_out],
        }
    )


def _params_table(fit) -> pd.DataFrame:
    """The fit's parameters with their intervals; a floor the points do not identify is said, not printed."""
    pct = f"{fit.confidence:.0%}"
    names = {"a": "a", "b": "b (exponent)", "c": "c (asymptote)"}
    shown = {k: (v, *fit.ci[k]) for k, v in fit.params.items() if k != "c" or fit.floor_identified}
    hidden = ["not identified"] * 3 if fit.law.saturates and not fit.floor_identified else []
    return pd.DataFrame({"parameter": [names[k] for k in shown] + ["c (asymptote)"] * bool(hidden),
                         "estimate": [format_number(v[0]) for v in shown.values()] + hidden[:1],
                         f"{pct} CI low": [format_number(v[1]) for v in shown.values()] + hidden[1:2],
                         f"{pct} CI high": [format_number(v[2]) for v in shown.values()] + hidden[2:]})


def _fit_blocks(fit, backtest, x_name: str, m: Metric, target: float, name: str, title: str, chosen: str) -> list:
    pct = f"{fit.confidence:.0%}"
    params = _params_table(fit)
    residuals = pd.DataFrame({x_name: fit.x, m.label: fit.y, "fitted": fit.predict(fit.x), "residual": fit.residuals})
    reach = fit.compute_for(target)
    where = (f"reaches {m.label} {target:.3g} at {x_name} = {reach:.3g}" if reach is not None
             else f"never reaches {m.label} {target:.3g}: {_levels_off(fit)}")
    lo, hi = fit.ci["b"]
    trend = "" if fit.trend_is_established() else " The exponent's interval includes 0: no trend is established."
    tested = ("No backtest: too few points remain without the largest x." if backtest is None else
              f"Backtest, fitted without the largest x: {sum(p['inside'] for p in backtest.held_out)} of "
              f"{len(backtest.held_out)} held-out points inside their {pct} prediction interval.")
    blocks = [
        Text(f"{title}: {m.label} = {fit.formula()} ({chosen}) over n = {len(fit.x)} points (one per row) with "
             f"{fit.dof} degrees of freedom. "
             f"Exponent b = {fit.b:.3f} ({pct} CI {lo:.3f} to {hi:.3f}); the fit {where}; residual RMS "
             f"{fit.rmse:.3g}.{trend} {tested}"),
        Plot(name, F.plot_fit(fit, x_name, m.label, f"{title}: {m.label} = {fit.law.formula}", target, backtest),
             f"{title}: the points fitted (every seed's), the fitted curve with its {pct} prediction band, the "
             "backtest's held-out points, and the residuals (observed - fitted)."),
        Table(format_table(params), f"{title}: parameters with {pct} confidence intervals (t with {fit.dof} dof, "
                                    "from curve_fit's covariance)."),
        Table(format_table(residuals), f"{title}: residuals."),
    ]
    if backtest is not None:
        blocks.append(Table(format_table(_backtest_table(backtest, x_name, m.label)),
                            f"{title}: backtest, each held-out point against the prediction of the fit without it."))
    return blocks


def _metric_fits(ctx: Context, m: Metric, suffix: str) -> list:
    try:
        rows = T.main_rows(ctx.df, m.column)
    except T.NoData as exc:
        return [Text(f"No {m.label} fits: {exc}.", note=True)]
    target = ctx.target if ctx.target is not None and m is ctx.metric else _default_target(rows, m)
    front = frontier_points(rows, m.column)
    points, where = T.at_step(T.without_ablations(rows), ctx.step)
    points = points[points["gflops"].notna()]
    blocks = []
    for x, y, law, x_name, name, title in (
            (front["train_compute_gflops"], front[m.column], "auto", "training compute (Gflops)",
             "fit-train-compute", "Fit on the compute-efficient frontier"),
            (points["gflops"], points[m.column], "power", "forward Gflops", "fit-gflops",
             f"Fit against Gflops at {where}")):
        title = title if not suffix else f"{m.label}: {title[0].lower()}{title[1:]}"
        x, y = x.astype("float64"), y.astype("float64")
        try:
            fit, chosen = _law_fit(x, y, law, m)
        except ValueError as exc:
            blocks.append(Text(f"{title}: not fitted, {exc}.", note=True))
            continue
        backtest = try_backtest(x, y, fit.law, bounds=m.bounds)
        blocks += _fit_blocks(fit, backtest, x_name, m, target, name + suffix, title, chosen)
    return blocks


def _law_fit(x, y, law: str, m: Metric):
    """The fit of `law` within the metric's range, or with 'auto' the law AICc chooses; and how it was chosen."""
    if law != "auto":
        return fit_law(x, y, law, bounds=m.bounds), f"{law} law, as the paper's Fig. 8"
    choice = choose_law(x, y, bounds=m.bounds)
    return choice.fit, choice.reason()


def fits_section(ctx: Context) -> Section:
    m = ctx.metric
    try:
        rows = _rows(ctx)
    except T.NoData as exc:
        return Section("Scaling-law fits", "fits", [Text(f"No fits: {exc}.", note=True)])
    target = target_for(ctx, rows)
    blocks = [Text("Least-squares fits (scipy curve_fit) to every seed's row with t intervals, only where there are "
                   "parameters + 2 points or more. Over training compute: the saturating law "
                   f"{m.label} = a * C^(-b) + c (c between the metric's bound and the best point) or the power law "
                   "a * C^(-b), whichever has the lower AICc. Across models at one step: the power law "
                   f"{m.label} = a * G^(-b), as the paper's Fig. 8. The target {m.label} {target:.3g} is "
                   + ("the one asked for." if ctx.target is not None else "10% better than the best so far."))]
    blocks += _metric_fits(ctx, m, "")
    for extra in _extra_metrics(ctx):
        blocks += _metric_fits(ctx, extra, f"-{extra.column.replace('_', '-')}")
    return Section("Scaling-law fits", "fits", blocks)


def _optima_table(result, x_name: str, label: str) -> pd.DataFrame:
    rows = [
        {
            "budget (Gflops)": budget,
            f"optimal {x_name}": o["x"],
            "95% CI low": o["x_low"],
            "95% CI high": o["x_high"],
            f"optimal {label}": o["y"],
            f"{label} CI low": o["y_low"],
            f"{label} CI high": o["y_high"],
            "n": len(result.profiles[budget].x),
            "dof": result.profiles[budget].dof,
            "inside the models trained": "yes" if o["inside"] else "no (extrapolated)",
        }
        for budget, o in result.optima()
    ]
    return pd.DataFrame(rows)


def _optimum_law_text(law, what: str, budgets) -> str:
    if law is None:
        return ""
    lo, hi = law.exponent_ci
    at = 10 * max(budgets)
    (p_lo,), (p_hi,) = law.prediction_interval(at)
    return (f"{what} grows as budget^{law.exponent:.3f} (95% CI {lo:.3f} to {hi:.3f}, n = {len(law.x)} budgets, "
            f"{law.dof} dof); at 10x the largest budget ({at:.3g} Gflops) it predicts {law.predict(at)[0]:.3g} "
            f"(95% prediction interval {p_lo:.3g} to {p_hi:.3g}). ")


def _isoflop_blocks(df: pd.DataFrame, m: Metric, at: str = "", tag: str = "") -> list:
    """The isoFLOP profiles, optima table and laws of `m` over `df`'s rows; `at` names which rows they are (" at each
    model's best lr") in the titles, `tag` ends their figures' names."""
    try:
        rows = isoflop_rows(df, m.column)
    except T.NoData as exc:
        return [Text(f"{m.label} isoFLOP profiles{at}: not drawn, {exc}.", note=True)]
    name = m.column.replace("_", "-") + tag
    result = isoflop_fit(rows, m.column)
    blocks = [Plot(f"isoflop-{name}", F.plot_isoflop(df, m.column),
                   f"{m.label}{at} of every model (every seed) at each training-compute budget against its Gflops and "
                   "parameters, a parabola in log-log space per budget and its optimum with a 95% delta-method "
                   "interval.")]
    blocks += [Text(f"Budget {b:.3g} Gflops: not fitted, {why}.", note=True) for b, why in result.not_fitted.items()]
    if not result.profiles:
        return blocks
    budgets = sorted(result.profiles)
    blocks.append(Table(format_table(_optima_table(result, "Gflops", m.label)),
                        f"Compute-optimal model per budget ({m.label}{at}), intervals by the delta method."))
    said = (_optimum_law_text(result.optimal_x, "The optimal model's Gflops", budgets)
            + _optimum_law_text(result.optimal_y, f"The optimal {m.label}", budgets))
    blocks.append(Text(said.strip() if said else f"No power law of the optima{at}: {result.why_no_law}.",
                       note=not said))
    _attempt(blocks, f"{m.label} optima{at}", lambda: Plot(
        f"isoflop-optima-{name}", F.plot_isoflop_optima(df, m.column),
        f"The compute-optimal Gflops and {m.label}{at} against the budget, power laws fitted in log-log space, "
        "extrapolated to 10x the largest budget with their 95% prediction band."))
    return blocks


def isoflop_section(ctx: Context) -> Section:
    """The isoFLOP analysis at the grid's fixed recipe and, when the grid sweeps lr, again with each model at its best
    lr at each budget (chosen on the validation loss, per parametrization)."""
    title = "Compute-optimal models (isoFLOP)"
    if "budget" not in ctx.df.columns or ctx.df["budget"].isna().all():
        return Section(title, "isoflop", [Text(
            "No isoFLOP budgets in this grid (a grid spec's `budgets:` trains each model to them).", note=True)])
    metrics = [VAL_LOSS] + [ctx.metric] * (ctx.metric.column != VAL_LOSS.column)
    blocks = [b for m in metrics for b in _isoflop_blocks(ctx.df, m)]
    if ctx.swept is not None:
        for param, rows in ctx.swept.groupby("parametrization", sort=False):
            best = best_rows(rows, ["lr"], VAL_LOSS.column)
            at = f" at each model's best lr ({param})"
            blocks.append(Text(f"The same{at}: at each budget every model takes the lr of the sweep with the lowest "
                               f"validation loss there, so the optimum is not an artefact of the fixed lr "
                               f"{ctx.fixed_lr:g}."))
            blocks += [b for m in metrics for b in _isoflop_blocks(best, m, at, f"-best-lr-{param}")]
    return Section(title, "isoflop", blocks)


def samples_section(ctx: Context) -> Section:
    images = {name: rundirs.sample_images(path) for name, path in ctx.run_dirs.items()}
    classes = {ctx.run_names.get(name, name): rundirs.preview_classes(ctx.run_dirs[name]) for name in images}
    images = {ctx.run_names.get(name, name): found for name, found in images.items() if found}
    last = [(name, *found[-1], classes[name]) for name, found in images.items()]
    labelled = " Column c holds class c (the number under it); the rows repeat the classes with other noise." \
        if any(classes.values()) else ""
    blocks = []
    _attempt(blocks, "Sample grids", lambda: Plot("samples-last-step", F.plot_sample_grids(last),
             f"Each run's EMA samples at its last sampled step (fixed noise and labels).{labelled}", vector=False))
    if images:
        gflops = {r.run: r.gflops for r in T.runs(ctx.df).itertuples()}
        chosen = max(images, key=lambda n: (len(images[n]) > 1, np.nan_to_num(gflops.get(n, 0.0) or 0.0), n))
        strip = F.plot_sample_strip(chosen, images[chosen], classes=classes[chosen])
        blocks.append(Plot("samples-over-training", strip,
                           f"Samples of {chosen} over training, the same noise and labels at each step.{labelled}",
                           vector=False))
    return Section("Samples", "samples", blocks)


def configs_section(ctx: Context) -> Section:
    blocks = []
    spec = GridLayout(ctx.grid_dir).spec
    if spec.exists():
        blocks.append(Code(spec.name, spec.read_text()))
    for path in ctx.run_dirs.values():
        text = rundirs.read_config_text(path)
        if text is not None:
            blocks.append(Code(RunLayout(path).config.relative_to(ctx.grid_dir).as_posix(), text))
    if not blocks:
        blocks.append(Text(f"No {spec.name} and no run {RUN_FILES.config.name} found.", note=True))
    return Section("Exact configs", "configs", blocks)


def _sweep_blocks(ctx: Context, m: Metric, param: str) -> list:
    """One parametrization's metric against Gflops at the fixed lr and at each model's best, and the comparison."""
    mine = ctx.swept[ctx.swept["parametrization"] == param]
    fixed, best = LR.at_fixed_lr(mine, ctx.fixed_lr), LR.at_best_lr(mine, VAL_LOSS.column)
    name, blocks = f"{m.column.replace('_', '-')}-{param}", []
    for rows, what in ((fixed, f"fixed-lr {ctx.fixed_lr:g}"), (best, "best-lr")):
        _attempt(blocks, f"{param} {m.label} vs Gflops at {what}", lambda rows=rows, what=what: Plot(
            f"{name}-vs-gflops-{what.split(' ')[0]}", F.plot_metric_vs_gflops(rows, m.column),
            f"{param}: {m.label} against Gflops with every model at the {what.replace('-', ' ')} "
            "(best chosen on the validation loss)."))
    blocks.append(Text(f"{param}: " + LR.compare_laws(fixed, best, m.column, m.label, ctx.fixed_lr)))
    return blocks


def lr_sweep_section(ctx: Context) -> Section:
    title = "Each model at its best learning rate"
    if ctx.swept is None:
        return Section(title, "lr-sweep", [Text("This grid does not sweep lr (`sweep: {lr: [...]}` in a grid spec "
                                                "trains each model at several).", note=True)])
    df = ctx.swept
    blocks = [Text(f"The main figures above use the grid's fixed recipe (lr {ctx.fixed_lr:g}); here every lr of "
                   "the sweep. lr* is the vertex of a parabola in log lr through the best lr of the sweep and up to "
                   f"{LR.NEIGHBOURS} on each side, with a 95% delta-method interval.")]
    _attempt(blocks, "Validation loss vs lr", lambda: Plot("val-loss-vs-lr", LR.plot_lr_sweep(df, VAL_LOSS.column),
             "Validation loss against lr at the last step, one curve per model, one panel per parametrization "
             "(the μTransfer figure): under μP the best lr should stay put as the width grows."))
    try:
        best = LR.best_lr_table(df, VAL_LOSS.column)
    except T.NoData as exc:
        return Section(title, "lr-sweep", blocks + [Text(f"No best lr yet: {exc}.", note=True)])
    blocks.append(Table(format_table(best), "Each model's best lr, chosen on the validation loss."))
    blocks += [Text(line) for line in LR.width_slopes(best).values()]
    for m in [VAL_LOSS] + [ctx.metric] * (ctx.metric.column != VAL_LOSS.column):
        if df[m.column].notna().any():
            for param in df["parametrization"].dropna().unique():
                blocks += _sweep_blocks(ctx, m, param)
    return Section(title, "lr-sweep", blocks)


def fixed_recipe(grid_dir: Path, df: pd.DataFrame) -> tuple[float, str]:
    """The lr and parametrization of the grid spec's train section (else the sweep's middle lr and sp)."""
    import yaml

    spec = GridLayout(grid_dir).spec
    train = (yaml.safe_load(spec.read_text()) or {}).get("train", {}) if spec.exists() else {}
    lrs = sorted(df["lr"].dropna().unique())
    lr = float(train.get("lr", lrs[len(lrs) // 2]))
    return (lr if any(np.isclose(lrs, lr)) else float(lrs[len(lrs) // 2])), train.get("parametrization", "sp")


def posthoc_ema_section(ctx: Context) -> Section:
    return ema_section(ctx.posthoc if ctx.posthoc is not None else ctx.df, ctx.metric, ctx.run_dirs)


def recipe_rows(grid_dir: Path, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None, float | None]:
    """(the rows of the grid's fixed recipe, every row, the fixed lr) of a grid that sweeps lr; (df, None, None)
    otherwise. The fixed recipe is the spec's train.lr and train.parametrization."""
    if not LR.is_lr_sweep(df):
        return df, None, None
    fixed_lr, param = fixed_recipe(grid_dir, df)
    main = LR.at_fixed_lr(df, fixed_lr)
    return (main[main["parametrization"] == param] if (main["parametrization"] == param).any() else main), df, fixed_lr


SECTIONS = (summary_section, grid_section, scaling_section, training_section, paper_section, fits_section,
            isoflop_section, lr_sweep_section, posthoc_ema_section, samples_section, configs_section)


def seed_runs(df: pd.DataFrame) -> list[tuple[str, int]]:
    """(run, seed) of every row's run and seed."""
    if "seed" not in df.columns:
        return []
    pairs = df[["run", "seed"]].dropna().drop_duplicates()
    return [(run, int(seed)) for run, seed in pairs.itertuples(index=False)]


def seed_run_names(df: pd.DataFrame) -> dict:
    """Directory name -> 'run seed N' of each seed's run directory, for grids that name seeds."""
    return {run_dir_name(run, seed): f"{run} seed {seed}" for run, seed in seed_runs(df)}


def check_metric_has_values(df: pd.DataFrame, m: Metric):
    """ValueError when no row has a value of `m`: a report of it would be empty and replace a fuller one."""
    if df[m.column].notna().any():
        return
    with_values = [c for c in METRICS if c in df.columns and df[c].notna().any()]
    raise ValueError(f"the metric {m.column!r} is empty in this table (no row has a value), so the report was left "
                     f"as it was; choose a metric with values: {', '.join(with_values) or 'none yet'}")


def build_report(grid_dir, df: pd.DataFrame, *, metric: str = "fid", step=None, target=None) -> Report:
    """The whole report for a grid directory and its results table."""
    m = get_metric(metric)
    T.require(df, T.RUN_COLUMNS + ("step", "dataset", "resolution", "train_compute_gflops") + T.SETTING + (m.column,),
              "the report")
    check_metric_has_values(df, m)
    grid_dir = Path(grid_dir)
    names = {dir_name(run): run for run in T.runs(df)["run"]} | seed_run_names(df)
    found = rundirs.run_dirs(grid_dir)
    ordered = {d: found[d] for d in names if d in found} | found
    main, swept, fixed_lr = recipe_rows(grid_dir, classic_ema_rows(df))
    ctx = Context(grid_dir=grid_dir, df=main, metric=m, step=step, target=target, run_dirs=ordered,
                  run_names=names, posthoc=df, swept=swept, fixed_lr=fixed_lr)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return Report(title=f"DiT scaling report: {grid_dir.resolve().name}",
                  subtitle=f"{m.label} | {df['run'].nunique()} runs | generated {stamp}",
                  sections=[build(ctx) for build in SECTIONS])
