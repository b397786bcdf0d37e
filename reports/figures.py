"""The paper's scaling figures, drawn from the results table (matplotlib, no pyplot state).

Every function takes plain inputs (the results DataFrame, a metric name, paths) and returns a
`matplotlib.figure.Figure`; saving is the renderer's job. One line (or point) is one run: colour
by model size, line style by patch size, marker by conditioning block (see `reports.style`).
Figure numbers below are the paper's (Peebles & Xie, arXiv:2212.09748).
"""
import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter
from PIL import Image

from reports import table as T
from reports.analysis import correlation, float_values, frontier_points, isoflop_fit, isoflop_rows
from reports.style import (
    BLOCK_COLOURS,
    BLOCK_MARKERS,
    PATCH_LINESTYLES,
    SIZE_COLOURS,
    run_style,
)
from study.blocks import DEFAULT_BLOCK
from study.layout import RunLayout
from study.metrics import METRICS, get_metric

PATCH_MARKERS = {2: "o", 4: "s", 8: "^"}
FIGSIZE = (8.0, 4.6)
LEGEND = dict(loc="outside right upper", fontsize=8, frameon=False)


def _figure(ncols: int = 1, nrows: int = 1, size=FIGSIZE, **kw):
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes.ravel()


def _plain(value, _=None) -> str:
    """20, 0.5, 1000; powers of ten from 10^4 up as 10^k."""
    exponent = np.log10(value) if value > 0 else 0.5
    if value >= 1e4 and exponent == round(exponent):
        return f"$10^{{{int(round(exponent))}}}$"
    return f"{value:g}"


def _minor_labels(mantissas):
    """A formatter labelling the minor ticks m x 10^k for m in `mantissas` only."""
    def label(value, _=None) -> str:
        mantissa = value / 10 ** np.floor(np.log10(value)) if value > 0 else 0
        return _plain(value) if any(np.isclose(mantissa, m) for m in mantissas) else ""
    return FuncFormatter(label)


def _log_axis(axis, values):
    """Log scale with plain tick labels (20, 50, 100; not 2x10^1); an axis spanning less than two
    decades also labels its 2 and 5 minor ticks (and 3 under one decade), so it is never bare."""
    axis.axes.set(**{f"{axis.axis_name}scale": "log"})
    values = np.asarray(values, float)
    values = values[np.isfinite(values) & (values > 0)]
    axis.set_major_formatter(FuncFormatter(_plain))
    ratio = values.max() / values.min() if len(values) else np.inf
    axis.set_minor_formatter(_minor_labels((2, 3, 5)) if ratio < 10 else _minor_labels((2, 5)) if ratio < 100
                             else NullFormatter())


def _auto_log_y(ax, values, min_ratio: float = 10.0):
    """Log y when the values are positive and their max/min exceeds `min_ratio` (FID early vs late);
    a narrower range stays linear, where a log axis would have no tick inside it."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) and values.min() > 0 and values.max() / values.min() > min_ratio:
        _log_axis(ax.yaxis, values)


def _title(ax, main: str, detail: str | None = None):
    ax.set_title(main + "\n" * (detail.count("\n") + 1 if detail else 0), fontsize=12)  # room for the detail
    if detail:
        ax.text(0.5, 1.015, detail, transform=ax.transAxes, ha="center", va="bottom", fontsize=9, color="0.35")


def _place_labels(ax, xs, ys, labels, fontsize: float = 7.5):
    """Annotate points, moving a label to another side of its point when it would cover an earlier one."""
    fig = ax.figure
    width_pt = fig.get_figwidth() * 72 * 0.75
    height_pt = fig.get_figheight() * 72 * 0.8
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()

    def to_pt(value, lo, hi, log, size):
        f = (np.log10(value) - np.log10(lo)) / (np.log10(hi) - np.log10(lo)) if log else (value - lo) / (hi - lo)
        return f * size

    placed = []
    for x, y, label in zip(xs, ys, labels, strict=True):
        px = to_pt(x, x0, x1, ax.get_xscale() == "log", width_pt)
        py = to_pt(y, y0, y1, ax.get_yscale() == "log", height_pt)
        w, h = 0.6 * fontsize * len(label), fontsize * 1.2
        for dx, dy in ((5, 3), (5, -3 - h), (-5 - w, 3), (-5 - w, -3 - h), (5, 3 + h), (5, -3 - 2 * h)):
            box = (px + dx, py + dy, px + dx + w, py + dy + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, va="bottom")


def _style_handles(run_table: pd.DataFrame, lines: bool = True) -> list:
    """Legend entries for the sizes, patch sizes and blocks present (not one per run)."""
    handles = []
    for size in [s for s in SIZE_COLOURS if s in set(run_table["size"])] + sorted(
        set(run_table["size"]) - set(SIZE_COLOURS)
    ):
        handles.append(Line2D([], [], color=run_style(size, 2, None)["color"], lw=3, label=f"size {size}"))
    for patch in sorted(int(p) for p in run_table["patch_size"].dropna().unique()):
        style = dict(linestyle=PATCH_LINESTYLES.get(patch, "-."), color="black") if lines else \
            dict(linestyle="none", marker=PATCH_MARKERS.get(patch, "v"), color="black")
        handles.append(Line2D([], [], lw=1.5, label=f"patch {patch}", **style))
    blocks = sorted(set(run_table["block"].dropna()))
    if lines and len(blocks) > 1:
        handles += [
            Line2D([], [], linestyle="none", color="black", marker=BLOCK_MARKERS.get(b, "v"), label=b) for b in blocks
        ]
    return handles


def _legend(fig, run_table: pd.DataFrame, extra=(), lines: bool = True):
    """Style legend when (size, patch, block) names each run; otherwise one entry per run."""
    keys = run_table[["size", "patch_size", "block"]].astype(str).agg("|".join, axis=1)
    if keys.duplicated().any():
        handles = [h for ax in fig.axes[:1] for h in ax.get_lines() if not h.get_label().startswith("_")]
        fig.legend(handles=handles + list(extra), **LEGEND)
    else:
        fig.legend(handles=_style_handles(run_table, lines) + list(extra), **LEGEND)


def _draw_runs(ax, rows: pd.DataFrame, x: str, y: str, **kw):
    """One line per run of `rows` (in their order), styled by size, patch and block; a run with several
    seeds at an x draws their mean and a band from their min to their max."""
    for run, g in rows.groupby("run", sort=False):
        style = run_style(*g.iloc[0][["size", "patch_size", "block"]])
        if not g.duplicated(x).any():
            ax.plot(float_values(g[x]), float_values(g[y]), label=run, **style, **kw)
            continue
        spread = T.seed_spread(g, [y], [x]).sort_values(x)
        ax.plot(float_values(spread[x]), float_values(spread[f"{y}_mean"]), label=run, **style, **kw)
        ax.fill_between(float_values(spread[x]), float_values(spread[f"{y}_min"]), float_values(spread[f"{y}_max"]),
                        color=style["color"], alpha=0.18, lw=0)


def _seed_note(rows: pd.DataFrame) -> str:
    """'' for one seed per point, else what the lines and bands of a figure are."""
    seeds = T.seeds_per_point(rows)
    return f"\n{T.SPREAD} (up to {seeds} seeds)" if seeds > 1 else ""


def _setting_rows(df: pd.DataFrame, metric: str, what: str, extra=()) -> tuple[pd.DataFrame, str]:
    col = get_metric(metric).column
    T.require(df, T.RUN_COLUMNS + ("step",) + T.SETTING + tuple(extra) + (col,), what)
    rows = T.evaluated(df, col)
    setting = T.main_setting(rows)
    return T.in_setting(rows, setting), T.describe_setting(setting)


def plot_metric_vs_steps(df: pd.DataFrame, metric: str = "fid") -> Figure:
    """Metric over training steps, one line per run (the paper's Fig. 6, FID-50K over training)."""
    m = get_metric(metric)
    rows, setting = _setting_rows(df, metric, f"the {m.label}-vs-steps figure")
    fig, (ax,) = _figure()
    _draw_runs(ax, rows, "step", m.column, ms=4, lw=1.6)
    ax.set(xlabel="training steps", ylabel=m.label)
    _title(ax, f"{m.label} over training", setting + _seed_note(rows))
    _auto_log_y(ax, rows[m.column])
    ax.grid(alpha=0.3)
    _legend(fig, T.runs(rows))
    return fig


def plot_metric_vs_gflops(df: pd.DataFrame, metric: str = "fid", step=None) -> Figure:
    """Metric against forward Gflops at one training step, one point per run (the paper's Fig. 8)."""
    m = get_metric(metric)
    rows, setting = _setting_rows(df, metric, f"the {m.label}-vs-Gflops figure")
    points, where = T.at_step(T.without_ablations(rows), step)
    points = points[points["gflops"].notna() & (points["gflops"] > 0)]
    if points.empty:
        raise T.NoData("no evaluated run has a Gflops count")
    fig, (ax,) = _figure()
    spread = T.seed_spread(points, [m.column], ["run", "size", "patch_size", "gflops"])
    for _, p in spread.iterrows():
        style = dict(linestyle="none", ms=8, color=run_style(p["size"], p["patch_size"], None)["color"],
                     marker=PATCH_MARKERS.get(int(p["patch_size"]), "v"), label=p["run"])
        mean = p[f"{m.column}_mean"]
        if p["n_seeds"] > 1:
            ax.errorbar([p["gflops"]], [mean], yerr=[[mean - p[f"{m.column}_min"]], [p[f"{m.column}_max"] - mean]],
                        capsize=3, **style)
        else:
            ax.plot([p["gflops"]], [mean], **style)
    r = correlation(points["gflops"], points[m.column])
    _log_axis(ax.xaxis, points["gflops"])
    ax.margins(x=0.12, y=0.1)
    ax.set(xlabel="transformer Gflops (log scale)", ylabel=m.label)
    said = f"Pearson r = {r:.3f} (log10 Gflops vs {m.label}, n = {len(points)})" if np.isfinite(r) else \
        f"too few models for Pearson r (n = {len(points)})"
    _title(ax, f"{m.label} vs Gflops at {where}", f"{setting}\n{said}" + _seed_note(points))
    ax.grid(alpha=0.3, which="both")
    _place_labels(ax, spread["gflops"].astype(float), spread[f"{m.column}_mean"].astype(float),
                  [run.removeprefix("DiT-") for run in spread["run"]])
    _legend(fig, T.runs(points), lines=False)
    return fig


def plot_metric_vs_train_compute(df: pd.DataFrame, metric: str = "fid") -> Figure:
    """Metric against training compute (Gflops x batch x steps x 3), log-log, every run one line,
    with the compute-efficient frontier (the paper's Fig. 9)."""
    m = get_metric(metric)
    rows, setting = _setting_rows(df, metric, f"the {m.label}-vs-training-compute figure", ("train_compute_gflops",))
    rows = rows[rows["train_compute_gflops"].astype("float64") > 0]
    if rows.empty:
        raise T.NoData("no evaluated row has positive training compute")
    fig, (ax,) = _figure()
    _draw_runs(ax, rows, "train_compute_gflops", m.column, ms=4, lw=1.6)
    front = T.seed_spread(frontier_points(rows, metric), [m.column], ["run", "step", "train_compute_gflops"])
    (frontier,) = ax.plot(
        float_values(front["train_compute_gflops"]),
        float_values(front[f"{m.column}_mean"]),
        color="black",
        lw=6,
        alpha=0.18,
        solid_capstyle="round",
        zorder=0,
        label="compute-efficient frontier",
    )
    _log_axis(ax.xaxis, rows["train_compute_gflops"])
    _auto_log_y(ax, rows[m.column], min_ratio=3.0)  # log-log as the paper's Fig. 9 when the range allows
    ax.set(xlabel="training compute (Gflops, log scale)", ylabel=m.label)
    _title(ax, f"{m.label} vs training compute", setting + _seed_note(rows))
    ax.grid(alpha=0.3, which="both")
    _legend(fig, T.runs(rows), extra=[frontier])
    return fig


def plot_metric_vs_sampling_compute(df: pd.DataFrame, metric: str = "fid", step=None) -> Figure:
    """Metric against sampling compute per image (Gflops x sampling steps), one line per run over
    its sampling step counts, at one training step (the paper's Fig. 10)."""
    m = get_metric(metric)
    T.require(df, T.RUN_COLUMNS + ("step", "sampling_compute_gflops") + T.SETTING + (m.column,),
              f"the {m.label}-vs-sampling-compute figure")
    rows = T.evaluated(df, m.column)
    rows = T.in_setting(rows, T.main_setting(rows), keys=("sampler", "cfg_scale", "features"))
    counts = rows.groupby(["run", "step"])["sampling_steps"].nunique()
    swept = counts[counts > 1]
    if swept.empty:
        raise T.NoData("every checkpoint was evaluated with one sampling step count; evaluate several "
                       "(e.g. 16 32 64 128 256) to draw sampling compute")
    step = int(swept.index.get_level_values("step").max()) if step is None else step
    rows = T.in_run_order(rows[rows["step"] == step].sort_values("sampling_steps"))
    if rows.empty:
        raise ValueError(f"no run was evaluated at step {step} with several sampling step counts")
    fig, (ax,) = _figure()
    _draw_runs(ax, rows, "sampling_compute_gflops", m.column, ms=5, lw=1.6)
    _log_axis(ax.xaxis, rows["sampling_compute_gflops"])
    _auto_log_y(ax, rows[m.column])
    steps = ", ".join(str(s) for s in sorted(rows["sampling_steps"].unique()))
    ax.set(xlabel="sampling compute per image (Gflops, log scale)", ylabel=m.label)
    _title(ax, f"{m.label} vs sampling compute at step {step:,}", f"sampling steps {steps}")
    ax.grid(alpha=0.3, which="both")
    _legend(fig, T.runs(rows))
    return fig


def plot_block_ablation(df: pd.DataFrame, metric: str = "fid") -> Figure:
    """Metric over training for each conditioning block of a model (the paper's Fig. 5)."""
    m = get_metric(metric)
    rows, setting = _setting_rows(df, metric, "the block-ablation figure")
    models = [model for model, g in rows.groupby("model", sort=True) if g["block"].nunique() > 1]
    if not models:
        raise T.NoData("no model was trained with more than one conditioning block")
    fig, axes = _figure(ncols=len(models), size=(max(FIGSIZE[0], 4.2 * len(models)), FIGSIZE[1]), sharey=True)
    for ax, model in zip(axes, models, strict=True):
        for block, g in rows[rows["model"] == model].groupby("block", sort=True):
            g = g.sort_values("step")
            ax.plot(float_values(g["step"]), float_values(g[m.column]), color=BLOCK_COLOURS.get(block, "0.4"),
                    marker=BLOCK_MARKERS.get(block, "v"), ms=4, lw=1.8, label=block)
        ax.set(title=model, xlabel="training steps")
        ax.grid(alpha=0.3)
        _auto_log_y(ax, rows.loc[rows["model"] == model, m.column])
    axes[0].set_ylabel(m.label)
    fig.suptitle(f"Conditioning blocks: {m.label} over training\n({setting})", fontsize=12)
    blocks = sorted(rows.loc[rows["model"].isin(models), "block"].unique())
    fig.legend(handles=[Line2D([], [], color=BLOCK_COLOURS.get(b, "0.4"), marker=BLOCK_MARKERS.get(b, "v"), label=b)
                        for b in blocks], **LEGEND)
    return fig


def plot_metrics_vs_train_compute(df: pd.DataFrame) -> Figure:
    """Every metric the table has values for, against training compute (the paper's Fig. 12, left)."""
    T.require(df, T.RUN_COLUMNS + ("step", "train_compute_gflops") + T.SETTING, "the all-metrics figure")
    present = [m for m in METRICS.values() if m.column in df.columns and df[m.column].notna().any()]
    if not present:
        raise T.NoData("no metric has values yet")
    ncols = min(3, len(present))
    nrows = -(-len(present) // ncols)
    fig, axes = _figure(ncols=ncols, nrows=nrows, size=(3.4 * ncols + 1.6, 3.0 * nrows))
    for ax in axes[len(present):]:
        ax.set_axis_off()
    for ax, m in zip(axes, present, strict=False):  # the grid may hold spare axes
        rows, _ = _setting_rows(df, m.column, "the all-metrics figure")
        rows = rows[rows["train_compute_gflops"].astype("float64") > 0]
        _draw_runs(ax, rows, "train_compute_gflops", m.column, ms=3, lw=1.2)
        _log_axis(ax.xaxis, rows["train_compute_gflops"])
        ax.set(title=m.label, xlabel="training compute (Gflops)")
        ax.grid(alpha=0.3, which="both")
    _legend(fig, T.runs(df[df["run"].notna()]))
    return fig


def plot_training_curves(logs: dict[str, pd.DataFrame], styles: dict[str, dict] | None = None,
                         keys=("loss", "mse", "vb")) -> Figure:
    """Training loss, its MSE and its variational-bound term against steps, one line per run
    (the paper's Fig. 13). `logs` maps a run name to its train log (a DataFrame); values are
    smoothed with a running mean over 1/20 of the logged points."""
    logs = {run: log for run, log in logs.items() if not log.empty and "step" in log.columns}
    present = [k for k in keys if any(k in log.columns and log[k].notna().any() for log in logs.values())]
    if not present:
        raise T.NoData(f"no run has a {RunLayout('.').train_log.name} with loss values yet")
    styles = styles or {}
    fig, axes = _figure(ncols=len(present), size=(max(FIGSIZE[0], 3.6 * len(present)), 3.8))
    for ax, key in zip(axes, present, strict=True):
        for run, log in logs.items():
            if key not in log.columns or not log[key].notna().any():
                continue
            values = log[key].astype("float64")
            smooth = values.rolling(max(1, len(values) // 20), min_periods=1).mean()
            style = dict(styles.get(run, {}))
            ax.plot(float_values(log["step"]), smooth.to_numpy(), lw=1.3, label=run, markevery=max(1, len(values) // 6),
                    ms=4, **style)
        ax.set(title=key, xlabel="training steps")
        _auto_log_y(ax, np.concatenate([float_values(log[key]) for log in logs.values() if key in log.columns]))
        ax.grid(alpha=0.3, which="both")
    handles = axes[0].get_lines()
    fig.legend(handles=handles, **LEGEND)
    return fig


def _read_image(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def plot_image(path, title: str) -> Figure:
    """A PNG the run wrote itself (e.g. the learning-rate range test) as a figure page."""
    image = _read_image(path)
    h, w = image.shape[:2]
    fig, (ax,) = _figure(size=(8.0, max(2.0, 8.0 * h / w + 0.5)))
    ax.imshow(image)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def _image_grid(tiles: list[tuple[str, np.ndarray, int | None]], title: str | None = None, width: float = 12.0,
                square: bool = True) -> Figure:
    """Images with a title each, in rows of at most `width` inches, each tile sized to its image's
    shape (sample grids are often wide: 8 x 2 samples); `square` arranges square-ish images in about
    as many rows as columns, otherwise rows are filled first (a strip). A tile's third entry, when not None,
    is its number of class columns (column c holds class c): each column is labelled with its class."""
    h, w = tiles[0][1].shape[:2]
    aspect = w / h
    tile = min(2.4 * max(1.0, aspect ** 0.5), width)  # inches of width per image
    fit = max(1, int(width // tile))
    columns = min(fit, len(tiles), int(np.ceil(np.sqrt(len(tiles)))) if square and aspect <= 1.5 else fit)
    nrows = -(-len(tiles) // columns)
    fig, axes = _figure(ncols=columns, nrows=nrows,
                        size=(tile * columns, nrows * (tile / aspect + 0.6) + (0.4 if title else 0.1)))
    for ax in axes:
        ax.set_axis_off()
    for ax, (label, image, classes) in zip(axes, tiles, strict=False):  # the grid may hold spare axes
        ax.imshow(image, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        if classes:
            _label_class_columns(ax, image.shape[1], classes)
    if title:
        fig.suptitle(title)
    return fig


def _label_class_columns(ax, image_width: int, classes: int):
    """Class c under column c of a preview grid (equal columns; the few pixels of padding are ignored)."""
    ax.set_axis_on()
    ax.set_xticks((np.arange(classes) + 0.5) * image_width / classes, [str(c) for c in range(classes)], fontsize=7)
    ax.tick_params(axis="x", length=0, pad=2)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_sample_grids(images: list[tuple[str, int, object, int | None]]) -> Figure:
    """Each run's sample grid at its last step (as the paper's Fig. 7 shows all 12 models):
    `images` is [(run, step, png path, class columns or None)]."""
    if not images:
        raise T.NoData("no run has written samples/step_*.png yet")
    return _image_grid([(f"{run}\nstep {step:,}", _read_image(path), classes) for run, step, path, classes in images])


def strip_steps(steps: list[int], count: int = 8) -> list[int]:
    """Up to `count` steps spread evenly from the first to the last."""
    if len(steps) <= count:
        return list(steps)
    picks = np.linspace(0, len(steps) - 1, count).round().astype(int)
    return [steps[i] for i in sorted(set(picks))]


def plot_sample_strip(run: str, images: list[tuple[int, object]], count: int = 8, classes: int | None = None) -> Figure:
    """One run's samples over training (the same noise and labels at each step), in step order; `classes` as
    plot_sample_grids'."""
    if not images:
        raise T.NoData(f"{run} has written no samples yet")
    by_step = dict(images)
    steps = strip_steps(sorted(by_step), count)
    return _image_grid([(f"step {step:,}", _read_image(by_step[step]), classes) for step in steps],
                       title=f"{run}: samples over training", width=14.0, square=False)


def plot_paper_overlay(points: pd.DataFrame, paper: pd.DataFrame, metric_label: str, grid_label: str,
                       *, separate: bool = False) -> Figure:
    """The grid's metric vs Gflops beside the paper's 12 models at 400K steps, on log-log axes: one plot when
    the numbers are comparable, two panels with their own y axes (`separate`) when they are not (another
    data set or feature network, a few hundred samples against the paper's 50,000).

    `points`: one row per run (size, patch_size, gflops, value); `paper`: model, gflops, fid.
    """
    fig, axes = _figure(ncols=2, size=(FIGSIZE[0] * 1.5, FIGSIZE[1])) if separate else _figure()
    paper_ax, grid_ax = axes[0], axes[-1]
    for _, p in paper.iterrows():
        size, patch = p["model"].removeprefix("DiT-").split("/")
        paper_ax.plot([p["gflops"]], [p["fid"]], linestyle="none", ms=8, mfc="none", mew=1.6,
                      color=SIZE_COLOURS.get(size, "0.5"), marker=PATCH_MARKERS.get(int(patch), "v"))
    for _, p in points.iterrows():
        grid_ax.plot([p["gflops"]], [p["value"]], linestyle="none", ms=8,
                     color=run_style(p["size"], 2, None)["color"], marker=PATCH_MARKERS.get(int(p["patch_size"]), "v"))
    panels = ((paper_ax, paper["gflops"], paper["fid"], "paper: ImageNet 256 FID-50K, 400K steps"),
              (grid_ax, points["gflops"], points["value"], f"{grid_label}: {metric_label}")) if separate else (
        (paper_ax, pd.concat([paper["gflops"], points["gflops"]]), pd.concat([paper["fid"], points["value"]]),
         f"{metric_label} vs Gflops: this grid beside the paper"),)
    for ax, x, y, title in panels:
        _log_axis(ax.xaxis, float_values(x))
        _log_axis(ax.yaxis, float_values(y))
        ax.set(xlabel="transformer Gflops (log scale)", ylabel=f"{metric_label} (log scale)")
        _title(ax, title)
        ax.grid(alpha=0.3, which="both")
    kinds = [Line2D([], [], linestyle="none", marker="o", color="black", mfc="none",
                    label="paper: ImageNet 256, 400K steps"),
             Line2D([], [], linestyle="none", marker="o", color="black", label=grid_label)]
    run_table = pd.concat([points[["size", "patch_size"]],
                           paper["model"].str.removeprefix("DiT-").str.split("/", expand=True)
                           .set_axis(["size", "patch_size"], axis=1).astype({"patch_size": int})])
    run_table["block"] = DEFAULT_BLOCK
    fig.legend(handles=kinds + _style_handles(run_table, lines=False), **LEGEND)
    return fig


def plot_fit(fit, xlabel: str, ylabel: str, title: str, target=None, backtest=None) -> Figure:
    """A law fitted to its points, with the fitted curve, its 95% prediction band (and its extrapolation
    to `target`) above, the backtest's held-out points when given, and the residuals below."""
    fig = Figure(figsize=(8.0, 5.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    x_hi = fit.x.max() if backtest is None else max(fit.x.max(), max(p["x"] for p in backtest.held_out))
    reach = fit.compute_for(target) if target is not None else None
    if reach is not None and np.isfinite(reach) and reach <= 1e4 * x_hi:
        x_hi = max(x_hi, reach)
    grid = np.geomspace(fit.x.min(), x_hi, 200)
    top.plot(fit.x, fit.y, "o", color="#4e79a7", ms=6, label="points fitted")
    top.plot(grid, fit.predict(grid), "-", color="#e15759", lw=1.8, label=fit.formula())
    if fit.dof > 0:
        top.fill_between(grid, *fit.prediction_interval(grid), color="#e15759", alpha=0.12, lw=0,
                         label=f"{fit.confidence:.0%} prediction interval")
    if fit.floor_identified:
        top.axhline(fit.c, color="0.5", lw=1, ls=":", label=f"asymptote c = {fit.c:.3g}")
    if backtest is not None:
        inside = sum(p["inside"] for p in backtest.held_out)
        top.plot([p["x"] for p in backtest.held_out], [p["y"] for p in backtest.held_out], "D", mfc="none",
                 color="black", ms=7, label=f"held out: {inside} of {len(backtest.held_out)} inside the backtest's PI")
    if target is not None:
        top.axhline(target, color="#59a14f", lw=1, ls="--", label=f"target {target:.3g}")
    _log_axis(top.xaxis, grid)
    top.set(ylabel=ylabel, title=title)
    top.legend(fontsize=8, loc="best")
    top.grid(alpha=0.3, which="both")
    bottom.axhline(0, color="0.5", lw=1)
    bottom.plot(fit.x, fit.residuals, "o", color="#4e79a7", ms=5)
    bottom.set(xlabel=xlabel, ylabel="residual")
    bottom.grid(alpha=0.3, which="both")
    return fig


ISOFLOP_AXES = {"gflops": "model Gflops (log scale)", "params": "parameters (log scale)"}


def _budget_colours(budgets) -> dict:
    colours = matplotlib.colormaps["viridis"](np.linspace(0.05, 0.85, max(len(budgets), 1)))
    return dict(zip(sorted(budgets), colours, strict=False))  # one colour even for no budget


def plot_isoflop(df: pd.DataFrame, metric: str = "val_loss") -> Figure:
    """For each budget, the metric against model Gflops (left) and parameters (right), its parabola in
    log-log space and the optimum with its 95% interval (delta method): the isoFLOP profiles."""
    m = get_metric(metric)
    rows = isoflop_rows(df, metric)
    colours = _budget_colours(rows["budget"].unique())
    fig, axes = _figure(ncols=2, size=(11.0, 4.6), sharey=True)
    for ax, x in zip(axes, ISOFLOP_AXES, strict=True):
        result = isoflop_fit(rows, metric, x)
        for budget, colour in colours.items():
            at = rows[rows["budget"] == budget]
            ax.plot(float_values(at[x]), float_values(at[m.column]), "o", color=colour, ms=5,
                    label=f"{budget:.3g} Gflops")
            if budget in result.profiles:
                parabola, best = result.profiles[budget], result.profiles[budget].optimum
                grid = np.geomspace(parabola.x.min(), parabola.x.max(), 100)
                ax.plot(grid, parabola.predict(grid), "-", color=colour, lw=1.4)
                ax.errorbar([best["x"]], [best["y"]], xerr=[[best["x"] - best["x_low"]], [best["x_high"] - best["x"]]],
                            marker="*", ms=12, color=colour, capsize=3, mec="black")
        _log_axis(ax.xaxis, rows[x])
        sizes = float_values(rows[x])
        ax.set(xlabel=ISOFLOP_AXES[x], xlim=(sizes.min() / 2, sizes.max() * 2))  # a wide interval runs off the edge
        ax.grid(alpha=0.3, which="both")
    _auto_log_y(axes[0], rows[m.column])
    axes[0].set_ylabel(m.label)
    _title(axes[0], f"{m.label} at fixed training compute",
           "parabola in log-log space; star: optimum, bar: 95% interval")
    handles = [Line2D([], [], color=c, marker="o", label=f"budget {b:.3g} Gflops") for b, c in colours.items()]
    fig.legend(handles=handles, **LEGEND)
    return fig


def _draw_optimum_law(ax, result, key: str, law, budgets):
    """Optima (with their intervals) against budget, the log-log law through them and its 10x prediction."""
    optima = result.optima()
    values = np.array([o[key] for _, o in optima])
    low, high = np.array([o[f"{key}_low"] for _, o in optima]), np.array([o[f"{key}_high"] for _, o in optima])
    ax.errorbar([b for b, _ in optima], values, yerr=[values - low, high - values], fmt="o", color="#4e79a7",
                capsize=3, label="optimum per budget (95% interval)")
    if law is not None:
        grid = np.geomspace(min(budgets), 10 * max(budgets), 100)
        ax.plot(grid, law.predict(grid), "-", color="#e15759", label=f"power law, exponent {law.exponent:.3f}")
        ax.fill_between(grid, *law.prediction_interval(grid), color="#e15759", alpha=0.12, lw=0,
                        label="95% prediction interval")
    _log_axis(ax.xaxis, list(budgets) + [10 * max(budgets)])
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")


def plot_isoflop_optima(df: pd.DataFrame, metric: str = "val_loss") -> Figure:
    """The compute-optimal model Gflops (left) and metric (right) against the budget, with power laws
    fitted in log-log space and extrapolated to 10x the largest budget."""
    m = get_metric(metric)
    result = isoflop_fit(isoflop_rows(df, metric), metric)
    if not result.profiles:
        raise T.NoData(f"no budget has an isoFLOP parabola with an optimum ({'; '.join(result.not_fitted.values())})")
    budgets = sorted(result.profiles)
    fig, (left, right) = _figure(ncols=2, size=(11.0, 4.4))
    _draw_optimum_law(left, result, "x", result.optimal_x, budgets)
    _draw_optimum_law(right, result, "y", result.optimal_y, budgets)
    left.set(xlabel="training compute budget (Gflops)", ylabel="compute-optimal model Gflops")
    right.set(xlabel="training compute budget (Gflops)", ylabel=f"{m.label} of the optimal model")
    fig.suptitle(f"Compute-optimal models ({m.label})" + ("" if result.why_no_law is None else
                                                         f"\nno power law: {result.why_no_law}"), fontsize=11)
    return fig
