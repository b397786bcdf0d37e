"""argparse types that refuse what no command can use: non-finite numbers and sizes out of range.

Each raises argparse.ArgumentTypeError with the value and what to give instead; the parser prints it as one
line ("scaling CMD: error: argument --x: ..."), exit status 2.
"""
import argparse
import math

from dit.config import MAX_IMAGE_SIDE


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a number such as 1.5") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number; give a number such as 1.5")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be at least 0")
    return value


def bounded_int(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give one such as {low}") from None
        if value < low or (high is not None and value > high):
            interval = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {interval} (got {value})")
        return value

    parse.__name__ = "int"
    return parse


positive_int = bounded_int(1)
non_negative_int = bounded_int(0)
image_side = bounded_int(1, MAX_IMAGE_SIDE)
