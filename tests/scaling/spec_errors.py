"""Helpers for tests of grid-spec errors: the one-line message a bad spec gives, and where a line is."""
import pytest

from scaling.gridfile import parse_grid


def spec_error(text: str) -> str:
    """The message parse_grid raises for the spec `text`, checked to be one line."""
    with pytest.raises(ValueError) as info:
        parse_grid(text, source="grid.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def line_of(text: str, fragment: str) -> int:
    """The 1-based number of the first line of `text` holding `fragment`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)
