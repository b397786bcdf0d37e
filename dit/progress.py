"""One progress bar for every loop that shows one (training, sampling, encoding, feature extraction).

Bars go to stderr and show only on a terminal (or in a notebook), so a log file or a pipe gets no
carriage-return frames and stdout stays the command's result.
"""
import sys

from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as chosen_tqdm
from tqdm.std import tqdm as terminal_tqdm

IN_NOTEBOOK = chosen_tqdm is not terminal_tqdm  # tqdm chose its notebook widget (tqdm.auto subclasses both)


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """tqdm(iterable, **kwargs) on stderr; disabled unless `enabled` and stderr is a terminal (or a notebook)."""
    shown = enabled and (IN_NOTEBOOK or sys.stderr.isatty())
    return tqdm(iterable, file=sys.stderr, disable=not shown, dynamic_ncols=True, **kwargs)
