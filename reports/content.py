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
from reports import rundirs
from reports import table as T
from reports.document import Code, Picture, Plot, Report, Section, Table, Text, format_number, format_table
from reports.fits import fit_power_law
from reports.paper import paper_citation, paper_table
from reports.style import Metric, get_metric, run_style
from study.layout import GridLayout, RunLayout, dir_name

PAPER_FID_STEP = 400_000
RUN_FILES = RunLayout(".")  # the names of a run directory's files, for captions
RESULT_COLUMNS = ("run", "step", "sampler", "sampling_steps", "cfg_scale", "features", "num_samples", "gflops",
                  "train_compute_gflops", "fid", "sfid", "inception_score", "precision", "recall", "wall_seconds")


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


def target_for(ctx: Context, rows: pd.DataFrame) -> float:
    """The value the fits predict compute for: the one asked for, else 10% better than the best so far."""
    if ctx.target is not None:
        return ctx.target
    best = float(_best(rows, ctx.metric)[ctx.metric.column])
    return best * 0.9 if ctx.metric.lower_is_better else best * 1.1


def summary_section(ctx: Context) -> Section:
    df, m = ctx.df, ctx.metric
    models = ", ".join(T.runs(df)["run"])
    datasets = ", ".join(f"{d} ({r} px)" for d, r in df[["dataset", "resolution"]].drop_duplicates().itertuples(index=False))
    lines = [Text(f"Grid directory {ctx.grid_dir}: {df['run'].nunique()} runs ({models}) trained on {datasets}; "
                  f"{len(df)} evaluation rows, training steps {df['step'].min():,} to {df['step'].max():,}.")]
    try:
        rows = _rows(ctx)
    except T.NoData as exc:
        return Section("Summary", "summary", lines + [Text(f"Nothing to summarise yet: {exc}.", note=True)])
    lines.append(Text(f"Curves over training use the main evaluation setting: {T.describe_setting(T.main_setting(rows))}."))
    best = _best(rows, m)
    lines.append(Text(f"Best {m.label}: {best[m.column]:.3f} by {best['run']} at step {best['step']:,} "
                      f"({format_number(float(best['train_compute_gflops']))} Gflops of training compute)."))
    points, where = T.at_step(T.without_ablations(rows), ctx.step)
    r = F.correlation(points["gflops"], points[m.column])
    lines.append(Text(f"At {where}, log10 Gflops and {m.label} correlate with Pearson r = {r:.3f} over {len(points)} models "
                      "(the paper finds FID falls as Gflops rise, Fig. 8)." if np.isfinite(r) else
                      f"At {where}, {len(points)} model(s) are too few for a Gflops correlation (it needs 3)."))
    lines.append(Text(_fit_headline(ctx, rows)))
    lines.append(Text(f"Published numbers shown beside the grid: {paper_citation()}, Tables 2, 3 and 4."))
    return Section("Summary", "summary", lines)


def _fit_headline(ctx: Context, rows: pd.DataFrame) -> str:
    m = ctx.metric
    front = F.frontier_points(rows, m.column)
    try:
        fit = fit_power_law(front["train_compute_gflops"], front[m.column])
    except ValueError as exc:
        return f"Scaling-law fit on the compute-efficient frontier: not made, {exc}."
    target = target_for(ctx, rows)
    reach = fit.compute_for(target)
    where = (f"predicts {m.label} {target:.3g} at {reach:.3g} Gflops of training compute" if reach is not None
             else f"never reaches {m.label} {target:.3g} (it levels off at c = {fit.c:.3g})")
    lo, hi = fit.ci["b"]
    return (f"Scaling-law fit {m.label} = {fit.formula()} on the {len(front)} frontier points: exponent b = {fit.b:.3f} "
            f"({fit.confidence:.0%} CI {lo:.3f} to {hi:.3f}); it {where}.")


def grid_section(ctx: Context) -> Section:
    df = ctx.df
    per_run = T.in_run_order(df).groupby("run", sort=False).tail(1)
    runs = per_run[[c for c in ("run", "model", "block", "params", "gflops", "dataset", "resolution", "batch_size", "step")
                    if c in df.columns]].rename(columns={"step": "last evaluated step"})
    columns = [c for c in RESULT_COLUMNS if c in df.columns and df[c].notna().any()]
    results = T.in_run_order(df.sort_values(["cfg_scale", "sampling_steps"], kind="stable"))[columns]
    return Section("Grid and results table", "results", [
        Table(format_table(runs), "One row per run: the model, its conditioning block, parameters and forward Gflops "
                                  "(one multiply-add = one flop), the data and the last step evaluated."),
        Table(format_table(results), "Every evaluation point of the results table (empty columns left out); "
                                     "training compute = Gflops x batch size x steps x 3."),
    ])


def scaling_section(ctx: Context) -> Section:
    df, m, label = ctx.df, ctx.metric.column, ctx.metric.label
    name = m.replace("_", "-")
    blocks = []
    _attempt(blocks, f"{label} vs steps", lambda: Plot(f"{name}-vs-steps", F.plot_metric_vs_steps(df, m),
             f"{label} over training, one line per run (the paper's Fig. 6)."))
    _attempt(blocks, f"{label} vs Gflops", lambda: Plot(f"{name}-vs-gflops", F.plot_metric_vs_gflops(df, m, ctx.step),
             f"{label} against forward Gflops at one step, with Pearson's r of log10 Gflops and {label} (the paper's Fig. 8)."))
    _attempt(blocks, f"{label} vs training compute", lambda: Plot(
        f"{name}-vs-train-compute", F.plot_metric_vs_train_compute(df, m),
        f"{label} against training compute (Gflops x batch x steps x 3); the grey band is the compute-efficient "
        "frontier, the best value reached for each amount of compute (the paper's Fig. 9)."))
    _attempt(blocks, f"{label} vs sampling compute", lambda: Plot(
        f"{name}-vs-sampling-compute", F.plot_metric_vs_sampling_compute(df, m),
        f"{label} against sampling compute per image (Gflops x sampling steps) for each run (the paper's Fig. 10)."))
    _attempt(blocks, "Block ablation", lambda: Plot(f"block-ablation-{name}", F.plot_block_ablation(df, m),
             f"{label} over training for the conditioning blocks of each model trained with several (the paper's Fig. 5)."))
    _attempt(blocks, "All metrics", lambda: Plot("metrics-vs-train-compute", F.plot_metrics_vs_train_compute(df),
             "Every metric with values against training compute (the paper's Fig. 12, left)."))
    return Section("Scaling figures", "figures", blocks)


def _styles(ctx: Context) -> dict:
    """Run name -> line style of that run (runs not yet in the table get matplotlib's default)."""
    return {r.run: run_style(r.size, r.patch_size, r.block) for r in T.runs(ctx.df).itertuples()}


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
    if datasets != {"imagenet256"} or set(ctx.df["features"].dropna()) != {"inception"}:
        blocks.append(Text(f"This grid trained on {', '.join(sorted(datasets))} and scored with "
                           f"{', '.join(sorted(set(ctx.df['features'].dropna())))} features: compare trends "
                           "(how FID falls with Gflops and compute), not values.", note=True))
    try:
        rows = T.main_rows(ctx.df, "fid")
    except T.NoData as exc:
        return Section("Beside the paper", "paper", blocks + [Text(f"No grid FID yet: {exc}.", note=True)])
    points, where = _grid_points_at(T.without_ablations(rows), ctx.step)
    blocks.append(Table(format_table(_fid400_table(fid400, points)),
                        f"FID-50K after 400K steps (paper, Table 4) beside this grid's FID at {where}."))
    blocks.append(Table(format_table(_final_table(final, rows)),
                        "DiT-XL/2's final metrics (paper, Tables 2 and 3) beside any DiT-XL/2 of this grid at its last step."))
    overlay = points[points["gflops"].notna()].rename(columns={"fid": "value"})
    blocks.append(Plot("paper-overlay-fid", F.plot_paper_overlay(overlay, fid400, "FID", f"this grid: {where}"),
                       "FID against Gflops: the paper's 12 models after 400K steps (hollow) and this grid (filled)."))
    if m.column != "fid":
        blocks.append(Text(f"The paper's per-model table gives FID only, so the comparison uses FID, not {m.label}.", note=True))
    return Section("Beside the paper", "paper", blocks)


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


def _fit_blocks(fit, x_name: str, m: Metric, target: float, name: str, title: str) -> list:
    lo, hi = fit.ci["b"]
    params = pd.DataFrame({"parameter": ["a", "b (exponent)", "c (asymptote)"],
                           "estimate": [fit.a, fit.b, fit.c],
                           f"{fit.confidence:.0%} CI low": [fit.ci[k][0] for k in "abc"],
                           f"{fit.confidence:.0%} CI high": [fit.ci[k][1] for k in "abc"]})
    residuals = pd.DataFrame({x_name: fit.x, m.label: fit.y, "fitted": fit.predict(fit.x), "residual": fit.residuals})
    reach = fit.compute_for(target)
    where = (f"reaches {m.label} {target:.3g} at {x_name} = {reach:.3g}" if reach is not None
             else f"never reaches {m.label} {target:.3g}: it levels off at c = {fit.c:.3g}")
    ci_note = "" if fit.dof > 0 else " With as many points as parameters the intervals are undefined."
    return [
        Text(f"{title}: {m.label} = {fit.formula()} over {len(fit.x)} points. Exponent b = {fit.b:.3f} "
             f"({fit.confidence:.0%} CI {lo:.3f} to {hi:.3f}); the fit {where}; residual RMS {fit.rmse:.3g} "
             f"with {max(fit.dof, 0)} degrees of freedom.{ci_note}"),
        Plot(name, F.plot_fit(fit, x_name, m.label, f"{title}: {m.label} = a * C^(-b) + c", target),
             f"{title}: the points fitted, the fitted curve and its residuals (observed - fitted)."),
        Table(format_table(params), f"{title}: parameters with {fit.confidence:.0%} confidence intervals (t, from curve_fit's covariance)."),
        Table(format_table(residuals), f"{title}: residuals."),
    ]


def fits_section(ctx: Context) -> Section:
    m = ctx.metric
    try:
        rows = _rows(ctx)
    except T.NoData as exc:
        return Section("Scaling-law fits", "fits", [Text(f"No fits: {exc}.", note=True)])
    target = target_for(ctx, rows)
    blocks = [Text(f"Saturating power law {m.label} = a * C^(-b) + c fitted by least squares (scipy curve_fit); "
                   f"the target {m.label} {target:.3g} is " + ("the one asked for." if ctx.target is not None else
                                                                 "10% better than the best so far."))]
    front = F.frontier_points(rows, m.column)
    points, where = T.at_step(T.without_ablations(rows), ctx.step)
    points = points[points["gflops"].notna()]
    for x, y, x_name, name, title in (
            (front["train_compute_gflops"], front[m.column], "training compute (Gflops)", "fit-train-compute",
             "Fit on the compute-efficient frontier"),
            (points["gflops"], points[m.column], "forward Gflops", "fit-gflops", f"Fit against Gflops at {where}")):
        try:
            fit = fit_power_law(x.astype("float64"), y.astype("float64"))
        except ValueError as exc:
            blocks.append(Text(f"{title}: not fitted, {exc}.", note=True))
            continue
        blocks += _fit_blocks(fit, x_name, m, target, name, title)
    return Section("Scaling-law fits", "fits", blocks)


def samples_section(ctx: Context) -> Section:
    images = {name: rundirs.sample_images(path) for name, path in ctx.run_dirs.items()}
    images = {ctx.run_names.get(name, name): found for name, found in images.items() if found}
    last = [(name, *found[-1]) for name, found in images.items()]
    blocks = []
    _attempt(blocks, "Sample grids", lambda: Plot("samples-last-step", F.plot_sample_grids(last),
             "Each run's EMA samples at its last sampled step (fixed noise and labels).", vector=False))
    if images:
        gflops = {r.run: r.gflops for r in T.runs(ctx.df).itertuples()}
        chosen = max(images, key=lambda n: (len(images[n]) > 1, np.nan_to_num(gflops.get(n, 0.0) or 0.0), n))
        blocks.append(Plot("samples-over-training", F.plot_sample_strip(chosen, images[chosen]),
                           f"Samples of {chosen} over training, the same noise and labels at each step.", vector=False))
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


SECTIONS = (summary_section, grid_section, scaling_section, training_section, paper_section, fits_section,
            samples_section, configs_section)


def build_report(grid_dir, df: pd.DataFrame, *, metric: str = "fid", step=None, target=None) -> Report:
    """The whole report for a grid directory and its results table."""
    m = get_metric(metric)
    T.require(df, T.RUN_COLUMNS + ("step", "dataset", "resolution", "train_compute_gflops") + T.SETTING + (m.column,),
              "the report")
    grid_dir = Path(grid_dir)
    names = {dir_name(run): run for run in T.runs(df)["run"]}
    found = rundirs.run_dirs(grid_dir)
    ordered = {d: found[d] for d in names if d in found} | found
    ctx = Context(grid_dir=grid_dir, df=df, metric=m, step=step, target=target, run_dirs=ordered, run_names=names)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return Report(title=f"DiT scaling report: {grid_dir.resolve().name}",
                  subtitle=f"{m.label} | {df['run'].nunique()} runs | generated {stamp}",
                  sections=[build(ctx) for build in SECTIONS])
