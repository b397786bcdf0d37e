"""Named choices behind one checked lookup (torch-fidelity's small registries).

    SAMPLERS = Registry("sampler", {"ddpm": sample_ddpm, "ddim": sample_ddim})
    SAMPLERS.get("ddmp")  # ValueError: unknown sampler 'ddmp'; choose one of ddpm, ddim
    p.add_argument("--sampler", choices=SAMPLERS.names())

A registry of plain names (no entry behind them) is `Registry("attention", ("sdpa", "math"))`.
It reads like a read-only dict: `name in r`, `r[name]` (checked), iteration in order, `items()`.
"""
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind (`what`, e.g. "sampler") by name; a wrong name fails naming the choices."""

    def __init__(self, what: str, entries: Mapping[str, T] | Iterable[str] = ()):
        self.what = what
        self._entries: dict[str, T] = dict(entries) if isinstance(entries, Mapping) else {n: n for n in entries}

    def register(self, name: str, entry: T | None = None):
        """Add `entry` as `name`; without an entry, a decorator that adds what it decorates."""
        if entry is None:
            return lambda decorated: self.register(name, decorated)
        assert name not in self._entries, f"{self.what} {name!r} is registered twice"
        self._entries[name] = entry
        return entry

    def error(self, name, *, what: str | None = None, where: str = "") -> ValueError:
        """The one line for a wrong name: "unknown <what> '<name>'<where>; choose one of a, b"."""
        return ValueError(f"unknown {what or self.what} {name!r}{where}; choose one of {', '.join(self._entries)}")

    def check(self, name: str, *, what: str | None = None) -> str:
        """`name` if registered, else the error (`what` names the field in it, default the registry's kind)."""
        if name not in self._entries:
            raise self.error(name, what=what)
        return name

    def get(self, name: str) -> T:
        """The entry called `name`; ValueError naming the choices when there is none."""
        return self._entries[self.check(name)]

    def names(self) -> tuple[str, ...]:
        """Every name, in registration order (for argparse `choices`)."""
        return tuple(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    __getitem__ = get

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()})"
