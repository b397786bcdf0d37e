"""How a run looks in every figure (what each metric is called comes from `study.metrics`).

As in the paper's figures, colour says the model size and line style says the patch size; the
marker says the conditioning block, so block variants of one model stay apart.
"""
import pandas as pd

SIZE_COLOURS = {
    "T": "#8c8c8c",
    "M": "#b07aa1",
    "S": "#4e79a7",
    "B": "#59a14f",
    "L": "#f28e2b",
    "XL": "#e15759",
}
OTHER_COLOUR = "#76b7b2"
PATCH_LINESTYLES = {2: "-", 4: "--", 8: ":"}
OTHER_LINESTYLE = "-."
BLOCK_MARKERS = {"adaln-zero": "o", "adaln": "s", "cross-attn": "^", "in-context": "D"}
OTHER_MARKER = "v"
BLOCK_COLOURS = {"adaln-zero": "#e15759", "adaln": "#4e79a7", "cross-attn": "#59a14f", "in-context": "#f28e2b"}


def run_style(size, patch_size, block) -> dict:
    """matplotlib keyword arguments (color, linestyle, marker) for a run."""
    return {
        "color": SIZE_COLOURS.get(size, OTHER_COLOUR),
        "linestyle": OTHER_LINESTYLE if pd.isna(patch_size) else PATCH_LINESTYLES.get(int(patch_size), OTHER_LINESTYLE),
        "marker": BLOCK_MARKERS.get(block, OTHER_MARKER),
    }
