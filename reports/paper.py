"""The DiT paper's published numbers, so a reproduction can be read beside them.

Shipped as `reports/data/dit_paper.json`, each table with its source (the paper's table number and
what was measured how). Values were checked against the paper's text (arXiv:2212.09748v2):
- `fid_400k`: Table 4, FID-50K of the 12 S/B/L/XL x 2/4/8 models after 400K steps, no guidance.
- `blocks_400k`: Table 4, the four conditioning blocks on DiT-XL/2 after 400K steps.
- `xl2_final`: Tables 2 and 3, DiT-XL/2's final FID, sFID, IS, Precision and Recall at 256 px
  (7M steps) and 512 px (3M steps), without guidance and with cfg 1.25 and 1.5.
Table 4 uses the ft-MSE decoder and Tables 2/3 the ft-EMA decoder, which is why DiT-XL/2 at 512 px
without guidance reads 11.93 in one and 12.03 in the other.
"""
import functools
import json
from importlib import resources

import pandas as pd

from study.registry import Registry

PAPER_TABLES = Registry("paper table", ("fid_400k", "blocks_400k", "xl2_final"))


@functools.cache
def _paper_json() -> dict:
    return json.loads(resources.files("reports").joinpath("data/dit_paper.json").read_text())


def paper_citation() -> str:
    """The paper the shipped numbers come from."""
    return _paper_json()["paper"]


def paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables as a DataFrame; its source sentence is in `df.attrs["source"]`."""
    table = _paper_json()[PAPER_TABLES.check(name)]
    df = pd.DataFrame(table["rows"], columns=table["columns"])
    df.attrs["source"] = table["source"]
    return df
