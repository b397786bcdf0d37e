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
    p.set_defaults(func=run)


TABLE_COLUMNS = ["run", "params", "gflops", "step", "train_compute_gflops", "sampling_steps", "cfg_scale",
                 *PAPER_METRICS]


def run(args):
    import pandas as pd

    from scaling.runs import refresh_results
    from study.schema import read_results

    if args.refresh:
        refresh_results(args.grid_dir)
    df = read_results(args.grid_dir)
    if args.format == "csv":
        print(df.to_csv(index=False), end="")
    elif args.format == "json":
        print(df.to_json(orient="records", indent=1))  # NaN and <NA> become null
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
            print(df[TABLE_COLUMNS].to_string(index=False) if len(df) else "(no evaluation points yet)")
