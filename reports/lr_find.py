"""The learning-rate range test's figure: loss against learning rate, with the suggestion marked."""
from matplotlib.figure import Figure


def plot_lr_range_test(result: dict, title: str = "Learning-rate range test") -> Figure:
    """result: the dict of dit.lr_find.lr_range_test (lr, loss, smoothed, suggested_lr, diverged_lr, min_loss_lr).

    A plain Figure (no pyplot), as every report figure: nothing stays registered once it is saved.
    """
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    finite = [(lr, v) for lr, v in zip(result["lr"], result["loss"], strict=True) if v != float("inf")]
    ax.plot(*zip(*finite, strict=True), color="0.75", lw=1, label="loss")
    ax.plot(result["lr"], result["smoothed"], color="C0", lw=2, label="smoothed loss")
    ax.axvline(result["suggested_lr"], color="C2", ls="--", label=f"suggested max lr {result['suggested_lr']:.1e}")
    ax.axvline(result["min_loss_lr"], color="C1", ls=":", label=f"lowest loss at {result['min_loss_lr']:.1e}")
    if result["diverged_lr"]:
        ax.axvline(
            result["diverged_lr"], color="C3", ls="-", alpha=0.6, label=f"diverged at {result['diverged_lr']:.1e}"
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    low = min(v for _, v in finite)
    ax.set_ylim(low * 0.9, result["smoothed"][0] * 1.15)  # from the first loss down; divergence runs off the top
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
