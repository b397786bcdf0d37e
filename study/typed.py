"""Typed, line-numbered reading of YAML (and JSON) files into dataclasses: grid files and training config files.

Each node is converted to the type its dataclass field declares (a dataclass, tuple[X, ...], X | None, int,
float, str, bool). A malformed file, an unknown or missing key, a value of the wrong type, a number that is
not finite or a value the dataclass refuses fails with one line naming the key and its line:
'grid.yaml line 12: train.lr: expected a number, got 'ten''.
"""
import contextlib
import dataclasses
import math
import types
import typing

import yaml

_SCALAR = yaml.constructor.SafeConstructor()
_TYPE_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false"}
MAP_TAG = "tag:yaml.org,2002:map"
STR_TAG = "tag:yaml.org,2002:str"


class TypedFileError(ValueError):
    """An error already located in its file: '<source> line N: <key>: <problem>'."""


@dataclasses.dataclass(frozen=True)
class TypedReader:
    """Reads the YAML nodes of one file (`source` names it in errors) into typed values.

    `shorthands` maps a dataclass to the key a bare scalar stands for (`- DiT-B/4` for `- name: DiT-B/4`).
    """

    source: str
    shorthands: dict = dataclasses.field(default_factory=dict)

    def fail(self, node: yaml.Node, path: str, message: str):
        where = f"{self.source} line {node.start_mark.line + 1}"
        raise TypedFileError(f"{where}: {path}: {message}" if path else f"{where}: {message}")

    def compose(self, text: str) -> yaml.Node | None:
        """The root node of YAML or JSON text (None when empty); malformed text fails naming its line."""
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise TypedFileError(f"{self.source}{line}: malformed YAML: {problem}") from None

    def scalar(self, node: yaml.Node, tp: type, path: str):
        """A plain value of type `tp`; floats must be finite."""
        if not isinstance(node, yaml.ScalarNode):
            kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
            self.fail(node, path, f"expected {_TYPE_NAMES.get(tp, tp.__name__)}, got a {kind}")
        value = _SCALAR.construct_object(node)
        if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text, and JSON's NaN too
            with contextlib.suppress(ValueError):
                value = float(value)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            self.fail(node, path, f"expected {_TYPE_NAMES.get(tp, tp.__name__)}, got {value!r}")
        if tp is float and not math.isfinite(value):
            self.fail(node, path, f"expected a finite number, got {value}")
        return value

    def convert(self, node: yaml.Node, tp, path: str):
        """The value of `node` as type `tp` (a dataclass, tuple[X, ...], X | None, int, float, str, bool)."""
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
                return None
            options = [a for a in args if a is not type(None)]
            for option in options[:-1]:
                try:
                    return self.convert(node, option, path)
                except TypedFileError:
                    pass
            return self.convert(node, options[-1], path)
        if origin is tuple:
            items = node.value if isinstance(node, yaml.SequenceNode) else [node]  # a single value is a list of one
            return tuple(self.convert(item, args[0], f"{path}[{i}]") for i, item in enumerate(items))
        if tp in self.shorthands and isinstance(node, yaml.ScalarNode):
            key = yaml.ScalarNode(STR_TAG, self.shorthands[tp], node.start_mark)
            return self.build(tp, yaml.MappingNode(MAP_TAG, [(key, node)], node.start_mark), path)
        if dataclasses.is_dataclass(tp):
            return self.build(tp, node, path)
        return self.scalar(node, tp, path)

    def fields(self, cls, node: yaml.Node, path: str) -> tuple[dict, dict]:
        """(typed values, key nodes) of a mapping node's keys, each a field of `cls`; unknown or repeated keys fail."""
        section = path or "the file"
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"{section} must be a mapping of keys to values")
        hints, names = typing.get_type_hints(cls), [f.name for f in dataclasses.fields(cls)]
        values, key_nodes = {}, {}
        for key_node, value_node in node.value:
            key = key_node.value
            dotted = f"{path}.{key}" if path else str(key)
            if key not in names:
                self.fail(key_node, "", f"unknown key {dotted!r}; valid keys in {section}: {', '.join(names)}")
            if key in values:
                self.fail(key_node, "", f"key {dotted!r} appears twice")
            values[key] = self.convert(value_node, hints[key], dotted)
            key_nodes[key] = key_node
        return values, key_nodes

    def build(self, cls, node: yaml.Node, path: str):
        """A `cls` from a mapping node; a missing key or a value `cls` refuses (ValueError, its `key` if it has
        one) fails at that key's line."""
        values, key_nodes = self.fields(cls, node, path)
        for name, field in ((f.name, f) for f in dataclasses.fields(cls)):
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if required and name not in values:
                self.fail(node, "", f"{path or 'the file'} is missing the key {name!r}")
        try:
            return cls(**values)
        except TypedFileError:
            raise
        except ValueError as exc:
            key = getattr(exc, "key", None)
            dotted = f"{path}.{key}" if path and key else (key or path)
            self.fail(key_nodes.get(key, node), dotted, str(exc))


def mapping_keys(node: yaml.Node) -> dict:
    """Key -> (key node, value node) of a mapping node ({} for any other node)."""
    return {k.value: (k, v) for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}
