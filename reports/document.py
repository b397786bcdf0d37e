"""The report as a document: sections of text, tables, figures, pictures and configs.

`reports.content` builds one from a grid directory; `reports.html` and `reports.pdf` write it.
A Table holds display text, formatted by `format_table`; `is_numeric_column` tells the writers
which columns hold numbers (aligned right) and which hold names (aligned left).
"""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd

NUMBER = re.compile(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?")


@dataclasses.dataclass(frozen=True)
class Text:
    """A paragraph, or a note (what is missing and why) shown apart."""

    text: str
    note: bool = False  # a note says what is missing and why


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of display text with its caption."""

    df: pd.DataFrame  # already formatted as strings
    caption: str


@dataclasses.dataclass(frozen=True)
class Plot:
    """A matplotlib figure the report draws, saved under figures/ and inlined."""

    name: str  # file stem under figures/
    figure: object  # matplotlib Figure
    caption: str
    vector: bool = True  # also saved as SVG (not for figures that are only images)


@dataclasses.dataclass(frozen=True)
class Picture:
    """An image a run wrote itself, shown as it is."""

    path: Path  # a PNG a run wrote itself
    caption: str


@dataclasses.dataclass(frozen=True)
class Code:
    """A file shown verbatim (a config), folded in the HTML."""

    title: str
    text: str


@dataclasses.dataclass
class Section:
    """A titled part of the report: its blocks in order."""

    title: str
    anchor: str
    blocks: list


@dataclasses.dataclass
class Report:
    """The whole document: title, subtitle and sections."""

    title: str
    subtitle: str
    sections: list

    def plots(self) -> list[Plot]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Plot)]


def format_number(value) -> str:
    """Numbers as a reader wants them in a table: ints with separators, big floats in e-notation."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}"
    return str(value)


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Every cell as display text (empty for missing)."""
    return pd.DataFrame({c: [format_number(v) for v in df[c].astype(object)] for c in df.columns})


def is_numeric_column(cells) -> bool:
    """Whether formatted cells hold numbers (aligned right) rather than names (aligned left)."""
    cells = [c for c in cells if c]
    return bool(cells) and all(NUMBER.fullmatch(c) is not None for c in cells)
