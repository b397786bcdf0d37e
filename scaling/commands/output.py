"""How every command prints a table or a result: `--format table|csv|json`, JSON and tables on stdout.

Logs, warnings and progress bars go to stderr, so `scaling results DIR --format json | jq` works.
"""
import math

FORMATS = ("table", "csv", "json")


def add_format_argument(parser):
    parser.add_argument("--format", default="table", choices=FORMATS,
                        help="table (default), csv or json (records on stdout; notes go to stderr)")


def gflops_text(value: float) -> str:
    """Two decimals as the paper prints Gflops, three significant digits below 1 (tiny models)."""
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"


# How the text table shows the columns of `scaling gflops` and `scaling plan`; CSV and JSON keep full values.
TABLE_FORMATTERS = {"params": lambda n: f"{n / 1e6:.2f}M", "gflops": gflops_text}


def json_safe(value):
    """NaN and infinities -> None (JSON has no NaN), inside dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def format_rows(rows: list[dict], fmt: str, formatters: dict | None = None) -> str:
    """Rows of equal keys as an aligned text table (column -> function to text in `formatters`), CSV or JSON records."""
    import json

    import pandas as pd

    if fmt == "json":
        return json.dumps(json_safe(rows), indent=1)
    df = pd.DataFrame.from_records(rows)
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    return df.to_string(index=False, formatters=formatters)


def note(text: str):
    """A line for the reader, not the data: on stderr."""
    import sys

    print(text, file=sys.stderr)
