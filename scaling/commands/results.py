"""`scaling results`: the grid's results table as a table, CSV or JSON."""
from scaling.commands.output import add_format_argument
from study.metrics import PAPER_METRICS


def add_parser(subparsers):
    p = subparsers.add_parser("results", help="print the results table of a grid directory",
                              description="Print GRID_DIR's results table (one row per run x step x sampling setting). "
                              "--refresh rebuilds it from the runs' evaluation records first.")
    p.add_argument("grid_dir", help="grid directory written by `scaling run-grid`")
    add_format_argument(p)
    p.add_argument("--refresh", action="store_true", help="rebuild the table from the evaluation records first")
    p.add_argument("--describe", action="store_true",
                   help="print what each column of the table means (and its type) instead of the rows")
    p.add_argument("--aggregate", choices=("seeds",),
                   help="seeds: one row per run x step x setting over its seeds, with n_seeds and each metric's "
                   "mean, min, max and 95%% t interval of the mean (ci_low, ci_high; empty with one seed)")
    p.add_argument("--best", metavar="AXIS[,AXIS]",
                   help="each model at each step at its best value of these columns (e.g. lr or another swept recipe "
                   "field, or ema_sigma_rel, a grid's post-hoc EMA lengths), chosen on --select-on; rows without a "
                   "value (the classic EMA) are left out")
    p.add_argument("--select-on", default="val_loss", metavar="METRIC",
                   help="the metric --best chooses on, averaged over seeds and settings (default: val_loss)")
    p.set_defaults(func=run)


TABLE_COLUMNS = ["run", "params", "gflops", "step", "train_compute_gflops", "sampling_steps", "cfg_scale",
                 *PAPER_METRICS, "class_accuracy", "val_loss"]
TABLE_FORMATS = {"train_compute_gflops": "{:.3e}".format, "params": lambda n: f"{n / 1e6:.2f}M"}


# columns this command adds to the stored table, with their meaning
ADDED_COLUMNS = {"failed": ("boolean", "the run stopped with an error: its last rows are from before it")}


def describe_rows(df) -> list[dict]:
    """Each column of the table with its type and meaning (the schema's words; columns it lacks say so)."""
    from study.schema import schema

    meanings = {**schema(), **ADDED_COLUMNS}
    return [{"column": c, "dtype": str(df[c].dtype),
             "meaning": meanings[c][1] if c in meanings else "(not in the schema)"} for c in df.columns]


def table_text(df, columns) -> str:
    """The rows as aligned text: the columns that have values, each in one number format, a missing value blank
    (a post-hoc EMA row has no sampling setting)."""
    import pandas as pd

    from scaling.commands.output import gflops_text

    shown = [c for c in columns if c in df.columns and df[c].notna().any()]
    formats = {**TABLE_FORMATS, "gflops": gflops_text}

    def cells(c):
        text = formats.get(c) or ("{:.4g}".format if pd.api.types.is_float_dtype(df[c]) else str)
        return ["" if pd.isna(v) else text(v) for v in df[c]]

    view = pd.DataFrame({c: cells(c) for c in shown})
    return view.to_string(index=False)


def shown_columns(df) -> list[str]:
    """The table's columns: TABLE_COLUMNS, with the swept recipe columns that take several values, ema_sigma_rel
    where the table has values of it, and `failed` where a run failed."""
    from study.schema import SWEPT_COLUMNS

    swept = [c for c in SWEPT_COLUMNS if c in df.columns and df[c].nunique() > 1]
    ema = ["ema_sigma_rel"] if "ema_sigma_rel" in df.columns and df["ema_sigma_rel"].notna().any() else []
    failed = ["failed"] if "failed" in df.columns and df["failed"].any() else []
    return TABLE_COLUMNS[:1] + swept + TABLE_COLUMNS[1:4] + ema + TABLE_COLUMNS[4:] + failed


def check_swept(df, axes: list[str]):
    """ValueError in one line for an axis the grid does not sweep (one value: nothing to choose)."""
    for axis in axes:
        values = df[axis].dropna().unique() if axis in df.columns else []
        if len(values) == 1:
            raise ValueError(f"the grid does not sweep {axis} (one value: {values[0]}); sweep it in the grid spec "
                             f"(sweep: {{{axis}: [...]}}) or leave --best out")


def run(args):
    import pandas as pd

    from scaling.runs import read_grid, refresh_results
    from study.metrics import METRICS
    from study.schema import read_results

    spec = read_grid(args.grid_dir)  # a file or a folder that is no grid is named as such, not as a missing table
    if args.refresh:
        refresh_results(args.grid_dir)
    df = mark_failed_runs(read_results(args.grid_dir), args.grid_dir, spec)
    if args.best:
        from study.selection import best_rows

        axes = [a.strip() for a in args.best.split(",") if a.strip()]
        check_swept(df, axes)
        df = best_rows(df, axes, args.select_on)
    columns = shown_columns(df)
    if args.aggregate == "seeds":
        df = aggregate_seeds(df)
        columns = ["run", "step", "sampling_steps", "cfg_scale", "n_seeds"] + [
            f"{c}_{stat}" for c in METRICS if f"{c}_mean" in df.columns and df[f"{c}_mean"].notna().any()
            for stat in ("mean", "min", "max")]
    if args.describe:
        from scaling.commands.output import format_rows

        print(format_rows(describe_rows(df), args.format))
    elif args.format == "csv":
        print(df.to_csv(index=False), end="")
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1))  # NaN and <NA> become null
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table_text(df, columns) if len(df) else "(no evaluation points yet)")


def mark_failed_runs(df, grid_dir, spec):
    """The table with a `failed` column: True on the rows of runs that stopped with an error (their last rows are
    from before it), and a note naming them."""
    from scaling.commands.output import note
    from scaling.grid import plan
    from scaling.run_state import run_state

    states = [run_state(grid_dir, r) for r in plan(spec)]
    failed = [s.name for s in states if s.state in ("failed", "damaged")]
    if failed:
        note(f"failed runs (marked in the column failed): {', '.join(failed)}; `scaling status` says why")
    return df.assign(failed=df["run"].isin(failed)) if "run" in df.columns else df


def aggregate_seeds(df):
    """One row per group of everything but the seed and the measured values, with their spread across seeds."""
    from reports.table import seed_spread
    from study.schema import measured_columns

    values = [c for c in measured_columns() if c in df.columns]
    by = [c for c in df.columns if c not in values and c != "seed"]
    return seed_spread(df, values, by)
