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
    p.add_argument("--aggregate", choices=("seeds",),
                   help="seeds: one row per run x step x setting over its seeds, with n_seeds and each metric's "
                   "mean, min, max and 95%% t interval of the mean (ci_low, ci_high; empty with one seed)")
    p.add_argument("--best", metavar="AXES",
                   help="comma-separated swept columns (e.g. lr): one row per model (and seed and setting) at the "
                   "values of these axes whose --select-on value, averaged over seeds at the last step, is lowest")
    p.add_argument("--select-on", default="val_loss", help="the column --best minimises (default val_loss)")
    p.set_defaults(func=run)


TABLE_COLUMNS = ["run", "params", "gflops", "step", "train_compute_gflops", "sampling_steps", "cfg_scale",
                 *PAPER_METRICS]


def run(args):
    import pandas as pd

    from scaling.runs import refresh_results
    from study.metrics import METRICS
    from study.schema import read_results

    if args.refresh:
        refresh_results(args.grid_dir)
    df = read_results(args.grid_dir)
    columns = TABLE_COLUMNS
    if args.best:
        from study.selection import best_rows

        axes = [a.strip() for a in args.best.split(",") if a.strip()]
        df = best_rows(df, axes, args.select_on)
        chosen = list(dict.fromkeys(["parametrization", *axes, "seed", args.select_on]))
        columns = ["run", *chosen, *(c for c in TABLE_COLUMNS[1:] if c not in chosen)]
    if args.aggregate == "seeds":
        df = aggregate_seeds(df)
        columns = ["run", "step", "sampling_steps", "cfg_scale", "n_seeds"] + [
            f"{c}_{stat}" for c in METRICS if f"{c}_mean" in df.columns and df[f"{c}_mean"].notna().any()
            for stat in ("mean", "min", "max")]
    if args.format == "csv":
        print(df.to_csv(index=False), end="")
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1))  # NaN and <NA> become null
    else:
        with pd.option_context(
            "display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format
        ):
            print(df[columns].to_string(index=False) if len(df) else "(no evaluation points yet)")


def aggregate_seeds(df):
    """One row per group of everything but the seed and the measured values, with their spread across seeds."""
    from reports.table import seed_spread
    from study.schema import measured_columns

    values = [c for c in measured_columns() if c in df.columns]
    by = [c for c in df.columns if c not in values and c != "seed"]
    return seed_spread(df, values, by)
