"""`scaling fit`: fit a scaling law to any results table (a grid's, a CSV or parquet of your own, or the
paper's published numbers), with t intervals and an optional backtest on the largest x values."""
import json
import math

from scaling.commands.argtypes import finite_float, non_negative_int

LAW_CHOICES = ("saturating", "power")


def add_parser(subparsers):
    p = subparsers.add_parser("fit", help="fit a scaling law to a results table",
                              description="Fit y = a * x^(-b) + c (saturating) or y = a * x^(-b) (power) to the rows "
                              "of TABLE (a grid directory, a .csv or .parquet file), or of a table the DiT paper "
                              "published (--paper). A grid's table is fitted in its main sampling setting.")
    p.add_argument("table", nargs="?", help="grid directory, or a .csv / .parquet results table")
    p.add_argument("--paper", help="fit one of the DiT paper's tables instead: fid_400k, blocks_400k, xl2_final")
    p.add_argument("--x", default="train_compute_gflops", help="column of x (positive), default train_compute_gflops")
    p.add_argument("--y", default="fid", help="column of y, default fid")
    p.add_argument("--law", choices=LAW_CHOICES, default="saturating", help="the law to fit (default saturating)")
    p.add_argument("--frontier", action="store_true", help="fit only the compute-efficient frontier of y against x")
    p.add_argument("--higher-is-better", action="store_true", help="the frontier keeps the highest y (e.g. IS)")
    p.add_argument("--holdout", type=non_negative_int, default=0, metavar="K",
                   help="backtest: fit without the K largest x values and check the held-out points")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="keep only rows where COLUMN equals VALUE (repeatable), e.g. --where cfg_scale=1")
    p.add_argument("--confidence", type=finite_float, default=0.95, help="level of the intervals (default 0.95)")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(func=run)


def _read(args):
    from reports.paper import paper_table
    from study.schema import read_results

    if (args.table is None) == (args.paper is None):
        raise ValueError("give either a TABLE (grid directory, .csv or .parquet) or --paper NAME")
    return paper_table(args.paper) if args.paper else read_results(args.table)


def _filter(df, conditions):
    """Rows where each COLUMN=VALUE holds (VALUE compared as a number when the column is numeric)."""
    import pandas as pd

    for condition in conditions:
        column, sep, value = condition.partition("=")
        if not sep or column not in df.columns:
            raise ValueError(f"--where {condition!r}: give COLUMN=VALUE with a column of the table "
                             f"({', '.join(df.columns)})")
        wanted = float(value) if pd.api.types.is_numeric_dtype(df[column]) else value
        df = df[(df[column] == wanted).fillna(False)]
    return df


def select_points(df, args):
    """The rows to fit: filtered, with y present, in a grid's main setting, on the frontier if asked; the classic
    EMA's unless --where names an ema_sigma_rel. Returns them and a sentence saying which they are."""
    from reports import table as T
    from study.selection import classic_ema_rows

    missing = [c for c in (args.x, args.y) if c not in df.columns]
    if missing:
        raise ValueError(f"the table has no column {missing[0]!r}; its columns: {', '.join(df.columns)}")
    rows = _filter(df, args.where)
    if not any(condition.startswith("ema_sigma_rel=") for condition in args.where):
        rows = classic_ema_rows(rows)
    rows = rows[rows[args.y].notna() & rows[args.x].notna()]
    said = f"{len(rows)} rows with {args.x} and {args.y}"
    if all(c in rows.columns for c in T.SETTING) and len(rows):
        setting = T.main_setting(rows)
        rows = T.in_setting(rows, setting)
        said += f", in the main setting ({T.describe_setting(setting)})"
    if (rows[args.x].astype("float64") <= 0).any():
        raise ValueError(f"{int((rows[args.x] <= 0).sum())} row(s) have {args.x} <= 0, outside a power law's domain; "
                         f"leave them out with --where or pick another --x")
    if args.frontier:
        rows = T.frontier_rows(rows, args.x, args.y, lower_is_better=not args.higher_is_better)
        said += ", on the compute-efficient frontier"
    return rows, said


def _number(value):
    return None if value is None or not math.isfinite(value) else float(value)


def fit_result(rows, args) -> dict:
    """The fit (and backtest) of the selected rows as plain data: the JSON output."""
    from reports.fits import backtest, fit_law

    x, y = rows[args.x].astype("float64"), rows[args.y].astype("float64")
    fit = fit_law(x, y, args.law, confidence=args.confidence)
    held_out = [] if not args.holdout else backtest(x, y, args.law, holdout=args.holdout,
                                                    confidence=args.confidence).held_out
    return {
        "law": args.law, "formula": fit.law.formula, "x": args.x, "y": args.y, "confidence": args.confidence,
        "params": {name: {"value": _number(value), "ci_low": _number(fit.ci[name][0]),
                          "ci_high": _number(fit.ci[name][1])} for name, value in fit.params.items()},
        "n_points": len(fit.x), "dof": fit.dof, "rmse": fit.rmse, "trend_established": fit.trend_is_established(),
        "holdout": [{key: _number(v) if key != "inside" else v for key, v in p.items()} for p in held_out],
    }


def _print_table(result: dict, said: str):
    pct = f"{result['confidence']:.0%}"
    print(f"{result['y']} = {result['formula'].replace('C', result['x'])}  ({result['law']} law)")
    print(f"fitted to {said}: n = {result['n_points']} points, {result['dof']} dof, residual RMS {result['rmse']:.4g}")
    print(f"{'parameter':>10} {'estimate':>12} {pct + ' CI low':>12} {pct + ' CI high':>12}")
    for name, p in result["params"].items():
        print(f"{name:>10} " + " ".join(f"{v:>12.4g}" if v is not None else f"{'nan':>12}" for v in p.values()))
    print("trend: " + ("b's interval excludes 0" if result["trend_established"] else "not established (b's interval "
                                                                                       "includes 0 or is undefined)"))
    if result["holdout"]:
        inside = sum(p["inside"] for p in result["holdout"])
        print(f"backtest (fitted without the {len(result['holdout'])} held-out rows): {inside} of "
              f"{len(result['holdout'])} inside their {pct} prediction interval")
        print(f"{result['x']:>22} {'measured':>12} {'predicted':>12} {'PI low':>12} {'PI high':>12}  inside")
        for p in result["holdout"]:
            print(f"{p['x']:>22.4g} {p['y']:>12.4g} {p['predicted']:>12.4g} {p['pi_low']:>12.4g} "
                  f"{p['pi_high']:>12.4g}  {'yes' if p['inside'] else 'no'}")


def run(args):
    if not 0 < args.confidence < 1:
        raise ValueError(f"--confidence must lie between 0 and 1, not {args.confidence}")
    if args.holdout < 0:
        raise ValueError(f"--holdout must be 0 (no backtest) or more, not {args.holdout}")
    rows, said = select_points(_read(args), args)
    result = fit_result(rows, args)
    if args.format == "json":
        print(json.dumps({**result, "rows": said}, indent=1))
    else:
        _print_table(result, said)
