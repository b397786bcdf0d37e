"""The throughput table: measured images/s of training, sampling, VAE decoding and feature extraction.

`scaling bench --save FILE.json` writes one (several saves merge into one table); the package ships
ours in data/throughput.json (the README's "Measured speed": one H100, its date and versions).
`scaling.cost` turns a table into the GPU-hours of a grid. The file is {"rows": [...]}, one row per
measured rate, each with device, device_type (cuda or cpu), images_per_sec, date and versions, and:

    kind      what it timed                             its own keys
    train     full steps: forward, backward, AdamW, EMA  model, gflops, batch_size (per GPU), precision, compile
    sample    DDPM/DDIM steps (no decoding)             model, gflops, batch_size, precision, compile, sampler,
                                                          steps, cfg_scale
    decode    the VAE decoder on samples                codec, precision
    features  feature extraction for the metrics        features
"""

import datetime
import json
import math
import platform
from pathlib import Path

SHIPPED_TABLE = Path(__file__).parent / "data" / "throughput.json"
KINDS = {
    "train": ("model", "gflops", "batch_size", "precision", "compile"),
    "sample": ("model", "gflops", "batch_size", "precision", "compile", "sampler", "steps", "cfg_scale"),
    "decode": ("codec", "precision"),
    "features": ("features",),
}
COMMON_KEYS = ("device", "device_type", "images_per_sec")
# What makes two rows the same measurement: a later save replaces an earlier row with the same key.
KEY_FIELDS = (
    "kind",
    "device",
    "model",
    "input_size",
    "in_channels",
    "batch_size",
    "precision",
    "attention",
    "compile",
    "sampler",
    "steps",
    "cfg_scale",
    "codec",
    "features",
)


def guidance_passes(cfg_scale: float) -> int:
    """Network forward passes per sampling step: 2 with classifier-free guidance (conditional, null class), else 1."""
    return 1 if cfg_scale == 1.0 else 2


def passes_per_sec(row: dict) -> float:
    """A sampling row's rate as one-image network forward passes per second (images x steps x passes / s),
    which transfers between step counts and guidance scales."""
    return row["images_per_sec"] * row["steps"] * guidance_passes(row["cfg_scale"])


def _check_row(row, where: str):
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be a mapping of keys to values")
    kind = row.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    missing = [k for k in COMMON_KEYS + KINDS[kind] if k not in row]
    if missing:
        raise ValueError(f"{where}: a {kind} row needs {', '.join(missing)}")
    rate = row["images_per_sec"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"{where}: images_per_sec {rate!r} must be a positive number")


def load_table(path=None) -> list[dict]:
    """The rows of a throughput file (the shipped table without `path`); a malformed file fails in one line."""
    path = Path(path) if path else SHIPPED_TABLE
    if not path.is_file():
        raise ValueError(f"no throughput file {path}; write one with `scaling bench --save {path}`")
    try:
        rows = json.loads(path.read_text())["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f'{path} is not a throughput table ({{"rows": [...]}}): {exc}') from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: rows must be a list")
    for i, row in enumerate(rows):
        _check_row(row, f"{path} row {i + 1}")
    return rows


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in KEY_FIELDS)


def merge_rows(existing: list[dict], new: list[dict]) -> list[dict]:
    """The rows of both, in order; a new row replaces an existing one of the same key (a re-measurement)."""
    replaced = {row_key(r) for r in new}
    return [r for r in existing if row_key(r) not in replaced] + list(new)


def save_rows(path, rows: list[dict]):
    """Merge `rows` into the throughput file at `path` (created if absent), atomically."""
    from dit.io import atomic_write_text

    path = Path(path)
    existing = load_table(path) if path.exists() else []
    atomic_write_text(path, json.dumps({"rows": merge_rows(existing, rows)}, indent=1) + "\n")


def device_identity(device) -> dict:
    """Device name and type and the versions a measurement ran with."""
    import torch

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine() or "cpu")
    )
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda if device.type == "cuda" else None}
    return {"device": name, "device_type": device.type, **versions, "date": datetime.date.today().isoformat()}


def bench_rows(
    measured: dict,
    *,
    model: str,
    gflops: float,
    geometry: dict,
    batch_size: int,
    options: dict,
    sampling: dict | None,
    identity: dict,
) -> list[dict]:
    """Table rows from one path of `scaling bench`: its training rate and, when timed, its sampling rate.

    `options` are the path's settings (precision, attention, compile), `sampling` the benchmark's
    sampler, steps, cfg_scale and batch_size (None when sampling was skipped).
    """
    base = {
        **identity,
        "model": model,
        "gflops": gflops,
        **geometry,
        "precision": options["precision"],
        "attention": options["attention"],
        "compile": options["compile"],
    }
    rows = [
        {
            "kind": "train",
            **base,
            "batch_size": batch_size,
            "images_per_sec": measured["train_images_per_sec"],
            "peak_mem_gb": None if math.isnan(measured["peak_mem_gb"]) else measured["peak_mem_gb"],
        }
    ]
    if sampling:
        rows.append({"kind": "sample", **base, **sampling, "images_per_sec": measured["sample_images_per_sec"]})
    return rows
