"""The coordinate-check figure: mean |activation| of each layer against width, one line per Adam step,
one row of panels per parametrization (Yang et al., "Tensor Programs V", Fig. 5)."""
from matplotlib.figure import Figure


def plot_coord_check(records: list[dict]) -> Figure:
    """records: dit.coord_check.coord_check's (parametrization, width, step, layer, mean_abs)."""
    params = list(dict.fromkeys(r["parametrization"] for r in records))
    layers = list(dict.fromkeys(r["layer"] for r in records))
    steps = sorted({r["step"] for r in records})
    fig = Figure(figsize=(2.6 * len(layers), 2.4 * len(params) + 0.4), layout="constrained")
    axes = fig.subplots(len(params), len(layers), squeeze=False, sharex=True)
    for row, param in enumerate(params):
        for col, layer in enumerate(layers):
            ax = axes[row][col]
            for step in steps:
                points = sorted((r["width"], r["mean_abs"]) for r in records
                                if (r["parametrization"], r["layer"], r["step"]) == (param, layer, step))
                ax.plot(*zip(*points, strict=True), marker="o", ms=3, color=f"C{step % 10}", label=f"step {step}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{param}: {layer}", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            if col == 0:
                ax.set_ylabel("mean |activation|")
            if row == len(params) - 1:
                ax.set_xlabel("width")
    axes[0][0].legend(fontsize=6)
    fig.suptitle("Coordinate check: flat in width means the learning rate transfers", fontsize=10)
    return fig
