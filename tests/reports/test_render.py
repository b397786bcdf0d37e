"""The rendered report: every figure and table row in one offline HTML file, the PDF's pages, atomic
writes, and one clear line for bad input."""
import base64
import math
import re
from html.parser import HTMLParser

import pytest

from reports import pdf
from reports.content import build_report
from reports.document import Code, Picture, Plot, Table, Text
from reports.render import render_report
from scaling.cli import main
from scaling.results import write_results
from study.schema import read_results, to_table
from tests.reports.synthetic_grid import make_grid

TINY = dict(sizes=("S",), patches=(4, 2), steps=(500, 1000), samples=False, logs=False)


class Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_html_inlines_every_figure_and_nothing_external(rendered, grid):
    page = rendered["html"].read_text()
    pngs = sorted(rendered["figures"].glob("*.png"))
    assert len(pngs) >= 12
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name
    lr_find = (grid.path / "runs" / "DiT-S-4" / "lr-find.png").read_bytes()
    assert base64.b64encode(lr_find).decode() in page
    assert page.count('src="data:image/png;base64,') == len(pngs) + 1
    assert not re.findall(r'(?:src|href)="(?!data:|#)', page)  # no file or network references


def test_every_figure_has_an_svg_unless_it_is_only_images(rendered):
    stems = {p.stem for p in rendered["figures"].glob("*.png")}
    svgs = {p.stem for p in rendered["figures"].glob("*.svg")}
    assert svgs == stems - {"samples-last-step", "samples-over-training"}


def test_html_has_every_row_of_the_results_table(rendered, grid):
    parser = Tables()
    parser.feed(rendered["html"].read_text())
    header, *rows = parser.tables[1]
    assert len(rows) == len(grid.df)
    seen = {(r[header.index("run")], r[header.index("step")], r[header.index("sampling_steps")], r[header.index("fid")])
            for r in rows}
    expected = {(r.run, f"{r.step:,}", str(r.sampling_steps), f"{r.fid:.2f}") for r in grid.df.itertuples()}
    assert seen == expected
    runs_header, *run_rows = parser.tables[0]
    assert sorted(r[0] for r in run_rows) == sorted(grid.df["run"].unique())


def test_html_shows_the_exact_configs(rendered, grid):
    page = rendered["html"].read_text()
    for name in grid.configs:
        assert f"runs/{name}/config.json" in page
    assert "&quot;model&quot;: &quot;DiT-B/2&quot;" in page


def code_lines(blocks):
    return sum(len(b.text.splitlines()) + 2 for b in blocks)  # a title line and a blank line each


def small_table_pages(rows: list[int]) -> int:
    """Pages of small tables filled in order: a table starts a new page when its rows + overhead overflow."""
    pages, used = 0, pdf.TABLE_ROWS
    for n in rows:
        if used + n + pdf.PACK_OVERHEAD > pdf.TABLE_ROWS:
            pages, used = pages + 1, 0
        used += n + pdf.PACK_OVERHEAD
    return pages


def expected_pages(report) -> int:
    """Pages by the PDF layout rules: a text page per section with paragraphs (and the first), small tables
    packed, TABLE_ROWS rows a larger table's page, a page per figure or picture, configs CODE_COLUMNS columns
    a page."""
    total = 0
    for index, section in enumerate(report.sections):
        texts = [b for b in section.blocks if isinstance(b, Text)]
        assert sum(len(t.text) for t in texts) < pdf.TEXT_LINES * pdf.TEXT_WIDTH / 3  # short enough for one page
        total += 1 if texts or index == 0 else 0
        tables = [b for b in section.blocks if isinstance(b, Table)]
        total += sum(math.ceil(len(b.df) / pdf.TABLE_ROWS) for b in tables if len(b.df) > pdf.SMALL_TABLE_ROWS)
        total += small_table_pages([len(b.df) for b in tables if len(b.df) <= pdf.SMALL_TABLE_ROWS])
        total += sum(isinstance(b, (Plot, Picture)) for b in section.blocks)
        codes = [b for b in section.blocks if isinstance(b, Code)]
        total += math.ceil(code_lines(codes) / (pdf.CODE_COLUMNS * pdf.CODE_LINES)) if codes else 0
    return total


def test_pdf_has_the_expected_number_of_pages(rendered, grid):
    report = build_report(grid.path, read_results(grid.path))
    data = rendered["pdf"].read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type /Page\b", data))
    assert pages == expected_pages(report)
    assert len(report.plots()) == len(list(rendered["figures"].glob("*.png")))


def test_a_failed_render_leaves_the_previous_report(tmp_path, monkeypatch):
    grid = make_grid(tmp_path / "grid", **TINY)
    previous = tmp_path / "out" / "report.pdf"
    previous.parent.mkdir()
    previous.write_bytes(b"%PDF-1.4 the previous good report")

    def crash(report, path):
        path.write_bytes(b"%PDF-1.4 half a file")
        raise RuntimeError("killed mid-render")

    monkeypatch.setattr("reports.render.write_figures", lambda report, directory: {})
    monkeypatch.setattr("reports.render.write_pdf", crash)
    with pytest.raises(RuntimeError):
        render_report(grid.path, tmp_path / "out", formats="pdf")
    assert previous.read_bytes() == b"%PDF-1.4 the previous good report"
    assert sorted(p.name for p in previous.parent.iterdir()) == ["report.pdf"]  # no temporary file left


def notes(report) -> str:
    return "\n".join(b.text for s in report.sections for b in s.blocks if isinstance(b, Text) and b.note)


def test_notes_replace_figures_the_grid_has_no_data_for(tmp_path):
    grid = make_grid(tmp_path / "grid", **TINY)
    said = notes(build_report(grid.path, grid.df))
    assert "FID vs sampling compute: not drawn, every checkpoint was evaluated with one sampling step count" in said
    assert "Block ablation: not drawn, no model was trained with more than one conditioning block" in said
    assert "Training curves: not drawn" in said and "Sample grids: not drawn" in said


def test_too_few_points_to_fit_is_one_line_in_the_report(tmp_path):
    grid = make_grid(tmp_path / "grid", **{**TINY, "steps": (1000,)})
    assert "not fitted, cannot fit a * C^(-b) (2 parameters) to 2 point(s)" in notes(
        build_report(grid.path, grid.df)
    )


def bad_grid_message(path, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        render_report(path, **kwargs)
    return str(info.value)


def test_bad_input_is_one_clear_line(tmp_path, grid):
    (tmp_path / "empty").mkdir()
    assert "is empty" in bad_grid_message(tmp_path / "empty")
    assert "does not exist" in bad_grid_message(tmp_path / "missing")
    (tmp_path / "no-table" / "runs" / "DiT-S-2").mkdir(parents=True)
    assert "no results table" in bad_grid_message(tmp_path / "no-table")
    write_results(to_table([]), tmp_path / "no-rows")
    assert "no rows yet" in bad_grid_message(tmp_path / "no-rows")
    (tmp_path / "no-gflops").mkdir()
    grid.df.drop(columns="gflops").to_csv(tmp_path / "no-gflops" / "results.csv", index=False)
    assert "no column 'gflops'" in bad_grid_message(tmp_path / "no-gflops")
    assert "unknown metric 'loss'" in bad_grid_message(grid.path, metric="loss")
    assert "unknown report format 'docx'" in bad_grid_message(grid.path, formats="html,docx")


def test_cli_writes_the_formats_asked_for_and_exits_2_on_bad_input(tmp_path, capsys):
    grid = make_grid(tmp_path / "grid", **TINY)
    assert main(["report", str(grid.path), "--out", str(tmp_path / "out"), "--format", "html"]) == 0
    assert (tmp_path / "out" / "report.html").exists() and not (tmp_path / "out" / "report.pdf").exists()
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scaling report: error: grid directory") and "is empty" in err


def test_a_report_of_an_empty_metric_is_refused_and_leaves_the_last_one(tmp_path, capsys):
    grid = make_grid(tmp_path / "grid", **TINY)
    out = tmp_path / "out"
    assert main(["report", str(grid.path), "--out", str(out), "--format", "html"]) == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "kid" not in grid.df.columns or grid.df["kid"].isna().all()
    capsys.readouterr()
    assert main(["report", str(grid.path), "--out", str(out), "--format", "html", "--metric", "kid"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the metric 'kid' is empty in this table" in err and "fid" in err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_the_results_table_caption_says_what_each_column_means(grid):
    from study.schema import schema

    report = build_report(grid.path, grid.df)
    table = next(b for s in report.sections for b in s.blocks
                 if isinstance(b, Table) and b.caption.startswith("Every evaluation point"))
    assert all(f"{c}: {schema()[c][1]}" in table.caption for c in table.df.columns)


def summary_texts(grid_path, df) -> list[str]:
    return [b.text for b in build_report(grid_path, df).sections[0].blocks if isinstance(b, Text)]


def test_the_summary_leads_with_the_trend_and_the_loss_and_says_why_fid_lacks_it(tmp_path):
    import numpy as np

    grid = make_grid(tmp_path / "grid", sizes=("S", "B"), patches=(8, 4, 2), steps=(1000, 2000), samples=False,
                     logs=False)
    df = grid.df.copy()
    shuffled = np.random.default_rng(1).permutation(len(df))
    df["fid"] = 50 + 10 * np.sin(shuffled)  # no relation to Gflops
    df["val_loss"] = 1.0 / np.log10(df["gflops"] * 100)  # falls as Gflops rise
    texts = summary_texts(grid.path, df)
    fid, loss, why = texts[2], texts[3], texts[4]
    assert "FID correlate with Pearson r" in fid and "no trend established" in fid
    assert "Validation loss correlate with Pearson r = -" in loss and "the trend holds" in loss
    assert why.startswith("Why FID does not show the paper's trend here") and "demo-long" in why
    assert any(t.startswith("Best single-seed FID") for t in texts)


def test_the_best_point_is_a_mean_across_seeds_with_its_interval(tmp_path):
    from scipy import stats

    grid = make_grid(tmp_path / "grid", sizes=("S",), patches=(4, 2), steps=(1000, 2000), samples=False, logs=False,
                     noise=0.05, seeds=(0, 1, 2))
    rows = grid.df[grid.df["sampling_steps"] == grid.df["sampling_steps"].max()]
    means = rows.groupby(["run", "step"])["fid"]
    (run, step), best = means.mean().idxmin(), means.mean().min()
    values = rows[(rows["run"] == run) & (rows["step"] == step)]["fid"]
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / 3 ** 0.5
    said = next(t for t in summary_texts(grid.path, grid.df) if t.startswith("Best FID"))
    assert said == (f"Best FID: {best:.3f} by {run} at step {step:,}, the mean of 3 seeds (95% CI {best - half:.3f} "
                    f"to {best + half:.3f}).")
