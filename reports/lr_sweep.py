"""Learning-rate sweeps: the validation loss against lr per width (the μTransfer figure, Yang et al. 2021 Fig. 1),
each model's best lr from a parabola in log lr, how it moves with width, and the scaling law at the grid's fixed
lr beside the law at each model's best lr (chosen on the validation loss, never on the reported metric)."""
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports import table as T
from reports.fits import MIN_EXTRA_POINTS, Parabola, _ols, fit_loglog
from study.selection import best_rows

MODEL = ("run", "parametrization")  # a model of a sweep: its run (name) under one parametrization
NEIGHBOURS = 2  # lrs on each side of the grid's best that the parabola goes through


def is_lr_sweep(df: pd.DataFrame) -> bool:
    return "lr" in df.columns and df["lr"].nunique() > 1


def lr_points(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per model and lr, at the model's last step in the main setting: the metric's mean over seeds (value),
    with the model's width and Gflops."""
    rows = T.main_rows(df, metric)
    rows = rows[rows["step"] == rows.groupby(list(MODEL))["step"].transform("max")]
    by = [*MODEL, "width", "gflops", "lr"]
    return rows.groupby(by, dropna=False)[metric].mean().reset_index(name="value")


def best_lr(lr, value, confidence: float = 0.95) -> dict:
    """The grid's best lr and lr* at the vertex of ln value = p0 + p1 u + p2 u^2 in u = ln lr through the best
    point and up to NEIGHBOURS lrs on each side, with a delta-method interval when the fit has dof >= 1;
    lr* is the grid's best (no interval) when the best lies at an end of the sweep."""
    order = np.argsort(lr)
    lr, value = np.asarray(lr, float)[order], np.asarray(value, float)[order]
    i = int(np.argmin(value))
    out = dict(grid_lr=lr[i], lr=lr[i], low=np.nan, high=np.nan, bracketed=0 < i < len(lr) - 1)
    if not out["bracketed"]:
        return out
    near = slice(max(0, i - NEIGHBOURS), i + NEIGHBOURS + 1)
    x, y = lr[near], value[near]
    centre = float(np.log(x).mean())
    u = np.log(x) - centre
    coef, cov, dof = _ols(np.stack([np.ones_like(u), u, u ** 2], axis=1), np.log(y))
    if coef[2] <= 0:
        return out
    if dof < 1:
        return dict(out, lr=float(np.exp(centre - coef[1] / (2 * coef[2]))))
    optimum = Parabola(coef=coef, cov=cov, centre=centre, x=x, y=y, confidence=confidence).optimum
    return dict(out, lr=optimum["x"], low=optimum["x_low"], high=optimum["x_high"])


def best_lr_table(df: pd.DataFrame, metric: str = "val_loss") -> pd.DataFrame:
    """One row per model: width, Gflops, the grid's best lr and lr* with its interval."""
    rows = []
    for (run, param), points in lr_points(df, metric).groupby(list(MODEL), sort=False):
        best = best_lr(points["lr"], points["value"])
        rows.append({"run": run, "parametrization": param, "width": points["width"].iloc[0],
                     "gflops": points["gflops"].iloc[0], "grid best lr": best["grid_lr"], "lr*": best["lr"],
                     "95% CI low": best["low"], "95% CI high": best["high"],
                     "bracketed": "yes" if best["bracketed"] else "no (at an end of the sweep)"})
    return pd.DataFrame(rows)


def width_slopes(best: pd.DataFrame) -> dict[str, str]:
    """Per parametrization, a sentence on the slope of ln lr* against ln width (0: the lr transfers), and a warning
    when some best lrs lie at an end of the sweep: those bound lr* rather than locate it."""
    said = {}
    for param, models in best.groupby("parametrization", sort=False):
        rows = models.groupby("width", as_index=False)["lr*"].apply(lambda v: float(np.exp(np.log(v).mean())))
        if len(rows) < 2:
            continue
        at_end = models.loc[models["bracketed"] != "yes", "lr*"]
        if len(at_end) == len(models):
            ends = ", ".join(f"{lr:g}" for lr in sorted(set(at_end)))
            said[param] = (f"{param}: every model's best lr lies at an end of the sweep ({ends}), so lr* and its drift "
                           "with width are not identified; widen the sweep past that end.")
            continue
        if len(rows) >= 2 + MIN_EXTRA_POINTS:
            fit = fit_loglog(rows["width"], rows["lr*"])
            lo, hi = fit.exponent_ci
            slope, interval = fit.exponent, f" (95% CI {lo:.2f} to {hi:.2f}, n = {len(rows)} widths)"
        else:
            slope = float(np.polyfit(np.log(rows["width"]), np.log(rows["lr*"]), 1)[0])
            interval = f" (n = {len(rows)} widths: too few for an interval)"
        said[param] = (f"{param}: ln lr* against ln width has slope {slope:.2f}{interval}; the best lr changes by "
                       f"x{2 ** slope:.2f} per doubling of width.")
        if len(at_end):
            said[param] += (f" {len(at_end)} of {len(models)} best lrs lie at an end of the sweep and only bound lr*: "
                            "widen the sweep before reading this slope.")
    return said


OFF_SCALE = 3.0  # the lr-sweep figure's y axis ends at this multiple of the best value: a diverging lr stays readable


def _width_key(width) -> float:
    """Curves in order of width; a model whose width the table does not know goes last."""
    return float("inf") if pd.isna(width) else float(width)


def plot_lr_sweep(df: pd.DataFrame, metric: str = "val_loss", label: str = "validation loss") -> Figure:
    """The metric against lr, one curve per model in order of width, one panel per parametrization, lr* marked. The y
    axis (shared) ends at OFF_SCALE x the best value: points above it (a wide SP model at a too-high lr) are drawn
    as triangles on the top edge, so they do not flatten every other curve."""
    points, best = lr_points(df, metric), best_lr_table(df, metric)
    params = list(dict.fromkeys(points["parametrization"]))
    low = float(points["value"].min())
    top = min(float(points["value"].max()) * 1.05, OFF_SCALE * low)
    fig = Figure(figsize=(5 * len(params), 3.8), layout="constrained")
    axes = fig.subplots(1, len(params), squeeze=False, sharey=True)[0]
    for ax, param in zip(axes, params, strict=True):
        panel = points[points["parametrization"] == param]
        models = panel.groupby("run", sort=False)
        for k, (run, rows) in enumerate(sorted(models, key=lambda item: _width_key(item[1]["width"].iloc[0]))):
            rows = rows.sort_values("lr")
            colour = f"C{k % 10}"
            ax.plot(rows["lr"], rows["value"].clip(upper=top), marker="o", ms=3, color=colour,
                    label=f"{run} (width {rows['width'].iloc[0]})")
            above = rows[rows["value"] > top]
            ax.plot(above["lr"], np.full(len(above), top), ls="none", marker="^", ms=7, color=colour)
            star = best[(best["run"] == run) & (best["parametrization"] == param)]["lr*"].iloc[0]
            ax.axvline(star, color=colour, ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(low * 0.95, top * 1.08)
        ax.set_xlabel("learning rate")
        off = " (triangles: off scale)" if (panel["value"] > top).any() else ""
        ax.set_title(f"{param}: {label} at the last step; dotted: lr*{off}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel(label)
    return fig


def at_fixed_lr(df: pd.DataFrame, lr: float) -> pd.DataFrame:
    """The rows trained at the grid's fixed lr (the recipe's), every parametrization."""
    return df[np.isclose(df["lr"].astype(float), lr, rtol=1e-9, atol=0)]


def at_best_lr(df: pd.DataFrame, select_on: str = "val_loss") -> pd.DataFrame:
    """Each model's rows at its best lr, chosen on `select_on` at its last step; every step of that lr's run."""
    chosen = best_rows(df, ["lr"], select_on)
    last = chosen.groupby(list(MODEL))["step"].transform("max")
    chosen = chosen[chosen["step"] == last][[*MODEL, "lr"]].drop_duplicates()
    return df.merge(chosen, on=[*MODEL, "lr"], how="inner")


def _law(rows: pd.DataFrame, metric: str) -> tuple[str, object, float]:
    """(text, fit or None, Spearman rho) of the metric against Gflops across models at their last step."""
    rows = T.main_rows(rows, metric)
    rows = rows[rows["step"] == rows.groupby("run")["step"].transform("max")]
    points = rows.groupby("run")[["gflops", metric]].mean()
    rho = float(points["gflops"].rank().corr(points[metric].rank())) if len(points) > 2 else np.nan
    if len(points) < 2 + MIN_EXTRA_POINTS:
        return f"{len(points)} models, too few for a power law (it needs {2 + MIN_EXTRA_POINTS})", None, rho
    fit = fit_loglog(points["gflops"], points[metric])
    lo, hi = fit.exponent_ci
    return f"Gflops^{fit.exponent:.3f} (95% CI {lo:.3f} to {hi:.3f}, n = {len(points)}, {fit.dof} dof)", fit, rho


def compare_laws(fixed: pd.DataFrame, best: pd.DataFrame, metric: str, label: str, lr: float) -> str:
    """One paragraph: the law at the fixed lr, at each model's best, and whether the conclusion changed
    (the exponents' intervals do not overlap, or the Spearman ordering of Gflops and the metric flips sign)."""
    (text_f, fit_f, rho_f), (text_b, fit_b, rho_b) = _law(fixed, metric), _law(best, metric)
    said = (f"{label} at the fixed lr {lr:g}: {text_f}, Spearman rho(Gflops, {label}) {rho_f:.2f}; at each "
            f"model's best lr: {text_b}, rho {rho_b:.2f}. ")
    flipped = np.sign(rho_f) != np.sign(rho_b) if np.isfinite(rho_f) and np.isfinite(rho_b) else False
    apart = (fit_f is not None and fit_b is not None
             and (fit_f.exponent_ci[1] < fit_b.exponent_ci[0] or fit_b.exponent_ci[1] < fit_f.exponent_ci[0]))
    if flipped or apart:
        why = "the ordering of the models by Gflops reverses" if flipped else "the exponents' intervals do not overlap"
        return said + f"The conclusion changed with tuning: {why}."
    return said + "The conclusion did not change with tuning (same ordering sign, overlapping intervals)."
