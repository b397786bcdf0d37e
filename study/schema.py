"""The results table: one schema, one pandas DataFrame, for every package that writes or reads results.

One row is one evaluation point: a run (model x patch x block x recipe) at a training step,
sampled with one sampler / step count / guidance scale, and scored with one feature extractor.
A row is the run's own columns (RUN_COLUMNS) plus one evaluation record (`result_row`). The
columns are the point's (POINT_SCHEMA), then the values measured at it: every metric of the
registry in `study.metrics` (a metric registered there is a column here) and wall_seconds. The
table is written (atomically, sorted by KEY) by `scaling.results.write_results`, which needs `dit.io`.
"""
from pathlib import Path

import pandas as pd

from study.layout import GridLayout
from study.metrics import METRICS

# column -> (pandas dtype, meaning) of what identifies and describes an evaluation point
POINT_SCHEMA = {
    "run": ("string", "run name: the model plus what differs, e.g. DiT-B/4-cross-attn"),
    "seed": ("Int64", "training seed; runs that differ only in it are repeats of one recipe"),
    "model": ("string", "paper model name, e.g. DiT-XL/2"),
    "size": ("string", "model size: T, M, S, B, L, XL or custom"),
    "patch_size": ("Int64", "patch side p"),
    "block": ("string", "conditioning block: in-context, cross-attn, adaln, adaln-zero"),
    "width": ("Int64", "hidden size D of the transformer (the width μP scales by)"),
    "params": ("Int64", "parameter count"),
    "gflops": ("float64", "forward Gflops of one sample (fvcore, one multiply-add = one flop)"),
    "dataset": ("string", "training data set, e.g. mnist32 or imagenet256"),
    "resolution": ("Int64", "image side in pixels"),
    "batch_size": ("Int64", "global training batch size"),
    "lr": ("float64", "AdamW learning rate of the recipe (under μP: of its input and readout groups)"),
    "parametrization": ("string", "sp (the paper's standard parametrization) or mup (μP, dit.parametrization)"),
    "warmup_steps": ("Int64", "steps of linear learning-rate warmup"),
    "weight_decay": ("float64", "AdamW's decoupled weight decay"),
    "step": ("Int64", "training step of the evaluated checkpoint"),
    "images_seen": ("Int64", "step x batch_size"),
    "train_compute_gflops": ("float64", "gflops x batch_size x step x 3 (the paper's training compute)"),
    "budget": (
        "float64",
        "training compute budget (Gflops) this step was evaluated for, in isoFLOP grids; NA otherwise",
    ),
    "ema_sigma_rel": ("float64", "relative length sigma_rel of the post-hoc EMA evaluated (EDM2); empty for the "
                      "classic EMA of ema_decay"),
    "sampler": ("string", "ddpm or ddim; empty in a row of a post-hoc EMA's validation loss alone"),
    "sampling_steps": ("Int64", "number of sampling steps"),
    "cfg_scale": ("float64", "classifier-free guidance scale (1 = none)"),
    "sampling_compute_gflops": ("float64", "gflops x sampling_steps, doubled under guidance, per image"),
    "num_samples": ("Int64", "number of generated samples evaluated"),
    "sampling_seed": ("Int64", "seed of the samples: sample i draws its label and noise from (sampling_seed, i)"),
    "features": ("string", "feature extractor: inception or mnist"),
}
WALL_SECONDS = ("float64", "wall-clock seconds of training up to this step")
# The training-recipe columns a grid can sweep (scaling.grid.SWEEPABLE): part of a row's key, as the seed.
SWEPT_COLUMNS = ("parametrization", "lr", "batch_size", "warmup_steps", "weight_decay")
KEY = ("run", "seed", *SWEPT_COLUMNS, "step", "ema_sigma_rel", "sampler", "sampling_steps", "cfg_scale", "features")
RUN_COLUMNS = ("run", "seed", "model", "size", "patch_size", "block", "width", "params", "gflops", "dataset",
               "resolution", *SWEPT_COLUMNS)


def schema() -> dict[str, tuple[str, str]]:
    """Every column -> (pandas dtype, meaning), in table order: the point's own columns, then what was
    measured at it (each metric of `study.metrics`, then wall_seconds)."""
    metrics = {metric.column: ("float64", metric.meaning) for metric in METRICS.values()}
    return {**POINT_SCHEMA, **metrics, "wall_seconds": WALL_SECONDS}


def measured_columns() -> tuple[str, ...]:
    """The values measured at an evaluation point (every metric and wall_seconds): what differs across seeds."""
    return tuple(column for column in schema() if column not in POINT_SCHEMA)


def train_compute_gflops(gflops: float, batch_size: int, steps: int) -> float:
    """Training compute as the paper defines it: Gflops x batch size x steps x 3 (forward + backward)."""
    return gflops * batch_size * steps * 3


def sampling_compute_gflops(gflops: float, sampling_steps: int, cfg_scale: float) -> float:
    """Sampling compute of one image: Gflops x sampling steps, doubled when guidance runs two passes."""
    return gflops * sampling_steps * (2 if cfg_scale != 1.0 else 1)


def result_row(run: dict, record: dict) -> dict:
    """One row: the run's own columns (RUN_COLUMNS) and one evaluation record (step, setting, metrics); a
    post-hoc EMA's validation record has no sampling setting (those columns stay empty)."""
    step, gflops, batch_size = record["step"], run["gflops"], run["batch_size"]
    sampled = "sampler" in record
    return {
        **run, "step": step, "images_seen": step * batch_size,
        "train_compute_gflops": train_compute_gflops(gflops, batch_size, step), "budget": record.get("budget"),
        "ema_sigma_rel": record.get("ema_sigma_rel"),
        "sampler": record.get("sampler"), "sampling_steps": record.get("sampling_steps"),
        "cfg_scale": record.get("cfg_scale"),
        "sampling_compute_gflops": (sampling_compute_gflops(gflops, record["sampling_steps"], record["cfg_scale"])
                                    if sampled else None),
        "num_samples": record.get("num_samples"), "sampling_seed": record.get("sampling_seed"),
        "features": record.get("features"),
        **{column: record.get(column) for column in measured_columns()},
    }


def to_table(records: list[dict]) -> pd.DataFrame:
    """Records (dicts of schema columns) -> the typed results table; unknown keys are a bug."""
    table = schema()
    for record in records:
        unknown = set(record) - set(table)
        assert not unknown, f"results record has columns outside the schema: {sorted(unknown)}"
    df = pd.DataFrame.from_records(records, columns=list(table))
    return df.astype({name: dtype for name, (dtype, _) in table.items()})


def check_columns(df: pd.DataFrame, needed, what: str = "this"):
    """ValueError naming the first missing column, for readers that need some of them."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"the results table has no column {missing[0]!r}, which {what} needs; "
                         "re-run `scaling results` on the grid directory")


def read_results(directory) -> pd.DataFrame:
    """The results table of a grid directory (or a .parquet / .csv path)."""
    path = Path(directory)
    if path.is_dir():
        grid = GridLayout(path)
        path = grid.results_parquet if grid.results_parquet.exists() else grid.results_csv
    if not path.exists():
        raise ValueError(f"no results table at {path}; run `scaling run-grid` first, or give the grid directory")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except ValueError as exc:  # pyarrow's ArrowInvalid, pandas' ParserError
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise ValueError(f"cannot read the results table {path} ({detail}); rebuild it from the evaluation records "
                         f"with `scaling results GRID_DIR --refresh`") from None
    known = {name: dtype for name, (dtype, _) in schema().items() if name in df.columns}
    return df.astype(known)
