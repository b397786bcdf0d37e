"""Render a grid directory's report: figures (PNG + SVG), the HTML page and the PDF, each written
atomically so a crash mid-render leaves the previous good file in place.

`render_report` is what `scaling report` and `scaling run-grid` (after each evaluation point) call.
"""
import io
from pathlib import Path

import pandas as pd

from dit.io import atomic_path, atomic_write_bytes
from reports.content import build_report
from reports.document import Report
from reports.html import render_html
from reports.pdf import write_pdf
from study.layout import GridLayout, ReportLayout
from study.schema import read_results

FORMATS = ("html", "pdf")
DPI = 150


def check_formats(formats) -> tuple[str, ...]:
    """('html', 'pdf') from a sequence or a comma-separated string; ValueError on an unknown one."""
    if isinstance(formats, str):
        formats = formats.split(",")
    formats = tuple(f.strip().lower() for f in formats if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown report format {unknown[0] if unknown else ''!r}; choose from {', '.join(FORMATS)}")
    return formats


def load_table(grid_dir: Path) -> pd.DataFrame:
    """The grid's results table, with one clear error for a missing, empty or unfinished grid."""
    if not grid_dir.is_dir():
        raise ValueError(f"grid directory {grid_dir} does not exist; give the --out directory of `scaling run-grid`")
    if not any(grid_dir.iterdir()):
        raise ValueError(f"grid directory {grid_dir} is empty; run `scaling run-grid --out {grid_dir}` first")
    df = read_results(grid_dir)
    if df.empty:
        raise ValueError(f"the results table in {grid_dir} has no rows yet; evaluate at least one checkpoint first")
    return df


def _figure_bytes(figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    return buffer.getvalue()


def write_figures(report: Report, directory: Path) -> dict[str, bytes]:
    """Save every figure as PNG, and as SVG unless it is only images, under `directory` (dropping
    figures of earlier renders that this one no longer draws); returns each figure's PNG bytes by name."""
    pngs = {}
    for plot in report.plots():
        pngs[plot.name] = _figure_bytes(plot.figure, "png")
        atomic_write_bytes(directory / f"{plot.name}.png", pngs[plot.name])
        if plot.vector:
            atomic_write_bytes(directory / f"{plot.name}.svg", _figure_bytes(plot.figure, "svg"))
    current = {f"{p.name}.png" for p in report.plots()} | {f"{p.name}.svg" for p in report.plots() if p.vector}
    for stale in list(directory.glob("*.png")) + list(directory.glob("*.svg")):
        if stale.name not in current:
            stale.unlink()
    return pngs


def render_report(grid_dir, out_dir=None, formats=FORMATS, *, metric: str = "fid", step: int | None = None,
                  target: float | None = None) -> dict[str, Path]:
    """Render GRID_DIR's report into `out_dir` (default GRID_DIR/report).

    Returns {"figures": dir, "html": path, "pdf": path} for the formats written. `metric` picks the
    metric of the main figures and fits, `step` the training step of the Gflops figure (default: the
    last step every run reached), `target` the value the fits predict the compute for.
    """
    formats = check_formats(formats)
    grid_dir = Path(grid_dir)
    report = build_report(grid_dir, load_table(grid_dir), metric=metric, step=step, target=target)
    out = ReportLayout(out_dir) if out_dir is not None else GridLayout(grid_dir).report
    paths = {"figures": out.figures_dir}
    pngs = write_figures(report, paths["figures"])
    if "html" in formats:
        paths["html"] = out.html
        atomic_write_bytes(paths["html"], render_html(report, pngs).encode("utf-8"))
    if "pdf" in formats:
        paths["pdf"] = out.pdf
        with atomic_path(paths["pdf"]) as tmp:
            write_pdf(report, tmp)
    return paths
