"""`scaling report GRID_DIR`: the scaling figures, fits and a self-contained HTML + PDF report."""
from study.metrics import PAPER_METRICS

DESCRIPTION = """\
Render a grid directory's report from its results table and run directories: the paper's scaling
figures (metric vs steps, vs Gflops, vs training compute with the compute-efficient frontier, vs
sampling compute, block ablation, training curves, sample grids), the DiT paper's published numbers
beside the grid's, saturating power-law fits (metric = a * C^(-b) + c) with confidence intervals,
and each run's exact config. Writes GRID_DIR/report/report.html (one file, images inlined, opens
offline), report.pdf and figures/*.png|svg, each atomically. Trains and evaluates nothing."""


def add_parser(subparsers):
    import argparse

    p = subparsers.add_parser("report", help="render the scaling figures, fits and an HTML + PDF report of a grid",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid_dir", metavar="GRID_DIR", help="the --out directory of `scaling run-grid` (holds results.parquet and runs/)")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write the report (default: GRID_DIR/report)")
    p.add_argument("--format", default="html,pdf", help="comma-separated formats to write: html, pdf (default: html,pdf)")
    p.add_argument("--metric", default="fid",
                   help=f"metric of the main figures and fits: {', '.join(PAPER_METRICS)}; "
                   "is = inception_score (default: fid)")
    p.add_argument("--step", type=int, default=None,
                   help="training step of the metric-vs-Gflops figure and fit (default: the last step every run reached)")
    p.add_argument("--target", type=float, default=None,
                   help="metric value the fits predict the needed compute for (default: 10%% better than the best so far)")
    p.set_defaults(func=run)


def run(args):
    from reports.render import render_report

    paths = render_report(args.grid_dir, args.out, args.format, metric=args.metric, step=args.step, target=args.target)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
