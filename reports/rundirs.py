"""Read what the report needs from a grid directory's run directories (never write to them).

Where each file lives is `study.layout`'s: the run's config, its train log, its sample previews
and, when a learning-rate range test ran, its plot.
"""
import json
from pathlib import Path

import pandas as pd

from study.layout import GridLayout, RunLayout, preview_columns


def run_dirs(grid_dir) -> dict[str, Path]:
    """Directory name -> path of every run directory of the grid, sorted by name."""
    return GridLayout(grid_dir).run_dirs()


def read_train_log(run_dir) -> pd.DataFrame:
    """The run's train log as a DataFrame ordered by step (empty when there is none).

    A line cut short by a kill mid-write is skipped; the log is appended while training runs.
    """
    path = RunLayout(run_dir).train_log
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
    """(step, path) of every sample preview of the run, ordered by step."""
    return RunLayout(run_dir).previews()


def preview_classes(run_dir) -> int | None:
    """How many class columns the run's sample previews have (column c holds class c), from its config; None when
    they have none (too many classes) or the config does not say."""
    path = RunLayout(run_dir).config
    try:
        config = json.loads(path.read_text())
        return preview_columns(int(config["model"]["num_classes"]), int(config["train"]["sample_images"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lr_find_image(run_dir) -> Path | None:
    """The run's learning-rate range test plot, when it has one."""
    path = RunLayout(run_dir).lr_find_png
    return path if path.exists() else None


def read_config_text(run_dir) -> str | None:
    """The config the run trained with, as written (None when absent)."""
    path = RunLayout(run_dir).config
    return path.read_text() if path.exists() else None
