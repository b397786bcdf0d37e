"""The report as one self-contained HTML file: images inlined as base64 PNG, styles inlined, no
scripts and no network, so it opens offline and can be mailed as a single file."""
import base64
import html
import string
from importlib import resources

from reports.document import Code, Picture, Plot, Report, Table, Text, is_numeric_column


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _figure(png: bytes, caption: str) -> str:
    return f"<figure>{_img(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _table(block: Table) -> str:
    left = [i == 0 or not is_numeric_column(block.df[c]) for i, c in enumerate(block.df.columns)]
    cls = ['class="l"' if is_left else "" for is_left in left]
    head = "".join(f"<th {k}>{html.escape(str(c))}</th>" for k, c in zip(cls, block.df.columns, strict=True))
    rows = "".join("<tr>" + "".join(f"<td {k}>{html.escape(v)}</td>" for k, v in zip(cls, row, strict=True)) + "</tr>"
                   for row in block.df.itertuples(index=False))
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'
            f'<p class="caption">{html.escape(block.caption)}</p>')


def _block(block, pngs: dict[str, bytes]) -> str:
    if isinstance(block, Text):
        return f'<p class="note">{html.escape(block.text)}</p>' if block.note else f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Plot):
        return _figure(pngs[block.name], block.caption)
    if isinstance(block, Picture):
        return _figure(block.path.read_bytes(), block.caption)
    if isinstance(block, Code):
        return f"<details><summary>{html.escape(block.title)}</summary><pre>{html.escape(block.text)}</pre></details>"
    raise AssertionError(f"unknown report block {type(block).__name__}")


def render_html(report: Report, pngs: dict[str, bytes]) -> str:
    """The page for `report`; `pngs` maps each Plot's name to its PNG bytes."""
    template = string.Template(resources.files("reports").joinpath("templates/report.html").read_text())
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in report.sections)
    body = "\n".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>\n'
                     + "\n".join(_block(b, pngs) for b in s.blocks) + "</section>" for s in report.sections)
    return template.substitute(
        title=html.escape(report.title), subtitle=html.escape(report.subtitle), nav=nav, body=body
    )
