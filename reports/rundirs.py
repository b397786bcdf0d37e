"""Read what the report needs from a grid directory's run directories (never write to them).

Layout: GRID_DIR/runs/<run name, '/' -> '-'>/ with config.json, train-log.jsonl,
samples/step_NNNNNNN.png and, when a learning-rate range test ran, lr-find.png / lr-find.json.
"""
import json
import re
from pathlib import Path

import pandas as pd

RUNS_DIR = "runs"
TRAIN_LOG = "train-log.jsonl"
CONFIG = "config.json"
LR_FIND_PNG = "lr-find.png"
SAMPLE_PATTERN = re.compile(r"^step_(\d+)\.png$")


def run_dir_name(run: str) -> str:
    """'DiT-B/4-cross-attn' -> 'DiT-B-4-cross-attn' (file names replace '/' by '-')."""
    return run.replace("/", "-")


def run_dirs(grid_dir) -> dict[str, Path]:
    """Directory name -> path of every run directory under GRID_DIR/runs, sorted by name."""
    root = Path(grid_dir) / RUNS_DIR
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}


def read_train_log(run_dir) -> pd.DataFrame:
    """The run's train-log.jsonl as a DataFrame ordered by step (empty when there is none).

    A line cut short by a kill mid-write is skipped; the log is appended while training runs.
    """
    path = Path(run_dir) / TRAIN_LOG
    if not path.exists():
        return pd.DataFrame()
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    df = pd.DataFrame.from_records(records)
    if "step" in df.columns:
        df = df.sort_values("step", kind="stable").drop_duplicates("step", keep="last")
    return df.reset_index(drop=True)


def sample_images(run_dir) -> list[tuple[int, Path]]:
    """(step, path) of every samples/step_NNNNNNN.png, ordered by step."""
    folder = Path(run_dir) / "samples"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := SAMPLE_PATTERN.match(p.name))]
    return sorted(found)


def lr_find_image(run_dir) -> Path | None:
    """The run's learning-rate range test plot, when it has one."""
    path = Path(run_dir) / LR_FIND_PNG
    return path if path.exists() else None


def read_config_text(run_dir) -> str | None:
    """The config.json the run trained with, as written (None when absent)."""
    path = Path(run_dir) / CONFIG
    return path.read_text() if path.exists() else None
