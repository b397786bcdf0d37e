"""The report as a PDF through matplotlib's PdfPages: the same figures as the HTML, kept as vector
graphics, and text, tables and configs laid out on A4 landscape pages.

Pages, section by section: the section's paragraphs on one page (more when long; the first page
also carries the report title), then the small tables packed several to a page (each counting its
rows + PACK_OVERHEAD of TABLE_ROWS), each larger table (TABLE_ROWS rows a page), each figure on its own
page with its caption, each run's own PNG on a page, and last the section's config files run
together, set small as an appendix (CODE_COLUMNS columns of CODE_LINES lines a page).
"""
import textwrap

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from reports.document import Code, Picture, Plot, Report, Section, Table, Text, is_numeric_column
from reports.figures import plot_image

PAGE = (11.69, 8.27)  # A4 landscape, inches
TABLE_ROWS = 32
SMALL_TABLE_ROWS = 10  # tables of at most this many rows share pages
PACK_OVERHEAD = 4  # lines a packed table takes beyond its rows: caption, header, gap
TEXT_LINES = 30
TEXT_WIDTH = 120  # characters a line at 10.5 pt
CODE_LINES = 90  # a column
CODE_COLUMNS = 3
CODE_WIDTH = 80  # characters a line at 5 pt monospace (a third of the page)
CODE_FONT = 5.0
MARGIN = 0.06


def _page(title: str) -> Figure:
    fig = Figure(figsize=PAGE)
    fig.text(MARGIN, 1 - MARGIN, title, fontsize=15, weight="bold", va="top")
    return fig


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def _paragraph_lines(blocks: list[Text]) -> list[tuple[str, bool]]:
    lines = []
    for block in blocks:
        wrapped = textwrap.wrap(block.text, TEXT_WIDTH) or [""]
        lines += [(line, block.note) for line in wrapped] + [("", False)]
    return lines


def text_pages(title: str, blocks: list[Text], heading: str | None = None) -> list[Figure]:
    """Paragraphs (notes in brown) on as many pages as they need."""
    pages = []
    for number, chunk in enumerate(_chunks(_paragraph_lines(blocks), TEXT_LINES)):
        fig = _page(title if number == 0 else f"{title} (continued)")
        top = 1 - MARGIN - 0.07
        if heading and number == 0:
            fig.text(MARGIN, top, heading, fontsize=11, color="0.35", va="top")
            top -= 0.06
        for i, (line, note) in enumerate(chunk):
            fig.text(MARGIN, top - i * 0.026, line, fontsize=10.5, va="top", color="#9a6700" if note else "black")
        pages.append(fig)
    return pages


def _draw_rows(fig: Figure, df, rows: list, top: float):
    """Draw a header and `rows` as one text column per table column (fast: no per-cell artists).

    Column widths come from the longest cell; the font shrinks until the table fits the page width.
    """
    columns = list(df.columns)
    widths = [max([1.2 * len(str(c))] + [len(r[i]) for r in rows]) + 3 for i, c in enumerate(columns)]  # bold header
    fontsize = min(9.5, PAGE[0] * (1 - 2 * MARGIN) * 72 / (0.55 * sum(widths)))
    header = fontsize * 1.8 / 72 / PAGE[1]  # header height, figure fraction
    text_columns = {i for i, c in enumerate(columns) if i == 0 or not is_numeric_column(df[c])}
    fig.add_artist(Line2D([MARGIN, 1 - MARGIN], [top - header] * 2, transform=fig.transFigure, color="0.5", lw=0.8))
    x = MARGIN
    for i, name in enumerate(columns):
        span = widths[i] / sum(widths) * (1 - 2 * MARGIN)
        at, ha = (x + 0.003, "left") if i in text_columns else (x + span - 0.006, "right")
        fig.text(at, top, str(name), fontsize=fontsize, weight="bold", ha=ha, va="top")
        fig.text(at, top - 1.3 * header, "\n".join(r[i] for r in rows), fontsize=fontsize, ha=ha, va="top",
                 multialignment=ha, linespacing=1.45)
        x += span
    return top - 1.3 * header - len(rows) * fontsize * 1.45 * 1.25 / 72 / PAGE[1]  # the bottom of the last row


def table_pages(title: str, block: Table) -> list[Figure]:
    """A formatted table, TABLE_ROWS rows a page, its caption under the title."""
    pages = []
    chunks = _chunks([list(r) for r in block.df.itertuples(index=False)], TABLE_ROWS)
    for number, rows in enumerate(chunks):
        fig = _page(title)
        part = (
            f" (rows {number * TABLE_ROWS + 1}-{number * TABLE_ROWS + len(rows)} of {len(block.df)})"
            if len(chunks) > 1
            else ""
        )
        fig.text(MARGIN, 1 - MARGIN - 0.065, textwrap.fill(block.caption + part, TEXT_WIDTH + 20), fontsize=9.5,
                 color="0.3", va="top")
        _draw_rows(fig, block.df, rows, top=1 - MARGIN - 0.15)
        pages.append(fig)
    return pages


def packed_pages(blocks: list[Table]) -> list[list[Table]]:
    """Small tables in order, as many to a page as fit TABLE_ROWS lines (each its rows + PACK_OVERHEAD)."""
    pages, used = [], TABLE_ROWS
    for block in blocks:
        need = len(block.df) + PACK_OVERHEAD
        if used + need > TABLE_ROWS:
            pages.append([])
            used = 0
        pages[-1].append(block)
        used += need
    return pages


def packed_table_page(title: str, blocks: list[Table]) -> Figure:
    """Several small tables on one page, each under its caption."""
    fig = _page(title)
    top = 1 - MARGIN - 0.065
    for block in blocks:
        caption = textwrap.wrap(block.caption, TEXT_WIDTH + 20)
        fig.text(MARGIN, top, "\n".join(caption), fontsize=9.5, color="0.3", va="top")
        top = _draw_rows(fig, block.df, [list(r) for r in block.df.itertuples(index=False)],
                         top=top - 0.025 * len(caption) - 0.01) - 0.035
    return fig


def code_lines(blocks: list[Code]) -> list[str]:
    """The files one after another, each under a '== name ==' line, long lines wrapped."""
    lines = []
    for block in blocks:
        lines.append(f"== {block.title} ==")
        for line in block.text.splitlines():
            lines += textwrap.wrap(line, CODE_WIDTH, subsequent_indent="    ", drop_whitespace=False) or [""]
        lines.append("")
    return lines


def code_pages(title: str, blocks: list[Code]) -> list[Figure]:
    """Config files in small monospace, run together, an appendix of CODE_COLUMNS columns of CODE_LINES lines a
    page."""
    pages = []
    for number, chunk in enumerate(_chunks(code_lines(blocks), CODE_COLUMNS * CODE_LINES)):
        fig = _page(f"Appendix: {title}" + (" (continued)" if number else ""))
        for column, lines in enumerate(_chunks(chunk, CODE_LINES)):
            fig.text(MARGIN + column * (1 - 2 * MARGIN) / CODE_COLUMNS, 1 - MARGIN - 0.07, "\n".join(lines),
                     family="monospace", fontsize=CODE_FONT, va="top", linespacing=1.2)
        pages.append(fig)
    return pages


def _save_plot(pdf: PdfPages, plot: Plot):
    """The figure itself as a page (vector), its caption under it (constrained layout makes room).

    Call after the figure's PNG and SVG are saved: the caption stays on the figure.
    """
    fig = plot.figure
    fig.supxlabel(textwrap.fill(plot.caption, int(fig.get_figwidth() * 13)), fontsize=9, color="0.3")
    pdf.savefig(fig)


def section_pages(section: Section, heading: str | None = None):
    """Yield ('figure', Figure) for drawn pages and ('plot', Plot) for figures saved as they are."""
    texts = [b for b in section.blocks if isinstance(b, Text)]
    if texts or heading:
        for page in text_pages(section.title, texts, heading):
            yield "figure", page
    small = [b for b in section.blocks if isinstance(b, Table) and len(b.df) <= SMALL_TABLE_ROWS]
    for tables in packed_pages(small) if small else []:
        yield "figure", packed_table_page(section.title, tables)
    for block in section.blocks:
        if isinstance(block, Table) and len(block.df) > SMALL_TABLE_ROWS:
            yield from (("figure", page) for page in table_pages(section.title, block))
        elif isinstance(block, Plot):
            yield "plot", block
        elif isinstance(block, Picture):
            yield "figure", plot_image(block.path, block.caption)
    codes = [b for b in section.blocks if isinstance(b, Code)]
    if codes:
        yield from (("figure", page) for page in code_pages(section.title, codes))


def write_pdf(report: Report, path) -> int:
    """Write the report to `path` (a PDF); returns the number of pages."""
    count = 0
    with PdfPages(path, metadata={"Title": report.title, "Subject": "DiT scaling study report"}) as pdf:
        for index, section in enumerate(report.sections):
            heading = f"{report.title}  |  {report.subtitle}" if index == 0 else None
            for kind, item in section_pages(section, heading):
                if kind == "plot":
                    _save_plot(pdf, item)
                else:
                    pdf.savefig(item)
                count += 1
    return count

