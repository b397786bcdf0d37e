"""A grid's results table, built from its runs' evaluation records and written atomically beside them.

What a row holds is `study.schema`'s; this module adds what needs the model and the disk: each run's
own columns (parameters through `dit.models`, Gflops through fvcore) and the atomic write.
"""
from pathlib import Path

import pandas as pd

from dit.io import atomic_path, read_json
from scaling.grid import RunSpec
from study.layout import GridLayout
from study.schema import KEY, SWEPT_COLUMNS, result_row


def run_columns(run: RunSpec) -> dict:
    """The results-table columns that describe the run itself (study.schema.RUN_COLUMNS)."""
    import torch

    from dit.models import DiT, count_params
    from scaling.flops import gflops

    config = run.dit_config()
    with torch.device("meta"):
        params = count_params(DiT(config))
    return {
        "run": run.name,
        "seed": run.train.seed,
        "model": config.name,
        "size": config.size,
        "patch_size": config.patch_size,
        "block": config.block,
        "width": config.hidden_size,
        "params": params,
        "gflops": gflops(config),
        "dataset": run.data.dataset,
        "resolution": run.data.resolution,
        **{name: run.train[name] for name in SWEPT_COLUMNS},
    }


def read_eval_record(path: Path) -> dict:
    """One evaluation record; a damaged one ends in one line naming it and how to redo it."""
    fix = ("delete it and re-run `scaling run-grid` to evaluate that point again, then "
           "`scaling results GRID_DIR --refresh`")
    return read_json(path, what="evaluation record", fix=fix)


def results_records(grid_dir, runs: list[RunSpec]) -> list[dict]:
    """One row per evaluation record of every run."""
    grid = GridLayout(grid_dir)
    records = []
    for run in runs:
        columns = run_columns(run)
        paths = grid.run(run.stem, run.seed).eval_records()
        records += [result_row(columns, read_eval_record(path)) for path in paths]
    return records


def write_results(df: pd.DataFrame, directory) -> tuple[Path, Path]:
    """Write the table as parquet and CSV atomically into the grid directory `directory`."""
    grid = GridLayout(directory)
    df = df.sort_values(list(KEY), kind="stable").reset_index(drop=True)
    with atomic_path(grid.results_parquet) as tmp:
        write_parquet_with_meanings(df, tmp)
    with atomic_path(grid.results_csv) as tmp:
        df.to_csv(tmp, index=False)
    return grid.results_parquet, grid.results_csv


def write_parquet_with_meanings(df: pd.DataFrame, path):
    """The table as parquet, each column's meaning and unit from the schema in its field metadata
    (`description`), so the file explains itself to pyarrow, polars or DuckDB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from study.schema import schema

    meanings = schema()
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = [f.with_metadata({**(f.metadata or {}), b"description": meanings[f.name][1].encode()})
              if f.name in meanings else f for f in table.schema]
    pq.write_table(table.cast(pa.schema(fields, metadata=table.schema.metadata)), path)
