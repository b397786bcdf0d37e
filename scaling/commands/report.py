"""`scaling report GRID_DIR`: the scaling figures, fits and a self-contained HTML + PDF report."""
from scaling.commands.argtypes import finite_float, non_negative_int
from study.metrics import metric_names

DESCRIPTION = """\
Render a grid directory's report from its results table and run directories: the paper's scaling
figures (metric vs steps, vs Gflops, vs training compute with the compute-efficient frontier, vs
sampling compute, block ablation, training curves, sample grids), the DiT paper's published numbers
beside the grid's, saturating power-law fits (metric = a * C^(-b) + c) with confidence intervals,
and each run's exact config. Writes {html} (one file, images inlined, opens
offline), {pdf} and {figures}/*.png|svg, each atomically. Trains and evaluates nothing."""
# Seconds: while runs go on, the report (its HTML and figures; the PDF waits for the last run) is re-rendered at most
# this often. A render of the demo's report costs ~15 s of one core, which a CPU grid takes from its runs: every
# 60 s cost the demo ~8 renders and ~1 minute of its 10; every 300 s keeps renders under 5% of any grid's time.
REPORT_INTERVAL = 300.0


def add_parser(subparsers):
    import argparse

    from study.layout import GridLayout

    grid = GridLayout("GRID_DIR")
    report = grid.report
    description = DESCRIPTION.format(html=report.html, pdf=report.pdf.name, figures=report.figures_dir.name)
    p = subparsers.add_parser("report", help="render the scaling figures, fits and an HTML + PDF report of a grid",
                              description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid_dir", metavar="GRID_DIR",
                   help=f"the --out directory of `scaling run-grid` (holds {grid.results_parquet.name} and "
                   f"{grid.runs_dir.name}/)")
    p.add_argument("--out", default=None, metavar="DIR", help=f"where to write the report (default: {grid.report_dir})")
    p.add_argument(
        "--format", default="html,pdf", help="comma-separated formats to write: html, pdf (default: html,pdf)"
    )
    p.add_argument("--metric", default="fid",
                   help="metric of the main figures and fits, a results column or its alias: "
                   f"{', '.join(metric_names())} (default: fid)")
    p.add_argument(
        "--step",
        type=non_negative_int,
        default=None,
        help="training step of the metric-vs-Gflops figure and fit (default: the last step every run reached)",
    )
    p.add_argument(
        "--target",
        type=finite_float,
        default=None,
        help="metric value the fits predict the needed compute for (default: 10%% better than the best so far)",
    )
    p.set_defaults(func=run)


def run(args):
    from reports.render import render_report

    paths = render_report(args.grid_dir, args.out, args.format, metric=args.metric, step=args.step, target=args.target)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def refresh_report(grid_dir, *, interval: float = 0.0, formats=None):
    """Render GRID_DIR's report as `scaling report` does (in `formats`, default all), unless it was rendered less
    than `interval` seconds ago. A failure is one warning line: a broken report must not stop a study that is
    training."""
    import time

    from reports.render import FORMATS, render_report
    from study.layout import GridLayout

    html = GridLayout(grid_dir).report.html
    if html.exists() and time.time() - html.stat().st_mtime < interval:
        return
    try:
        render_report(grid_dir, formats=formats or FORMATS)
    except Exception as exc:
        print(f"warning: the report was not refreshed: {type(exc).__name__}: {exc}")


def refresh_report_while_training(grid_dir, *, final: bool = True):
    """The `on_results` of a grid's runs: the report's HTML after an evaluation point, at most every REPORT_INTERVAL
    s, and the whole report once the grid's last run is done (a grid whose jobs run detached has no final refresh),
    unless `final` is False (the caller renders it: run-grid after its workers)."""
    from scaling.grid import plan
    from scaling.run_state import run_state
    from scaling.runs import read_grid

    if all(run_state(grid_dir, run).state == "done" for run in plan(read_grid(grid_dir))):
        if final:
            refresh_report(grid_dir)
    else:
        refresh_report(grid_dir, interval=REPORT_INTERVAL, formats=("html",))
