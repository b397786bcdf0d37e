"""Grid files: YAML (a file, or a preset shipped in scaling/presets/) to `scaling.grid`'s dataclasses and back.

Each YAML node is converted to the type its dataclass field declares (a dataclass, tuple[X, ...],
X | None, int, float, str, bool). A malformed file, an unknown or missing key, a value of the
wrong type or one its dataclass refuses fails with one line naming the key and its line:
'grid.yaml line 12: train.lr: ...'.
"""
import dataclasses
import types
import typing
from pathlib import Path

import yaml

from dit.io import read_text
from scaling.grid import GridSpec, ModelEntry, SpecError
from study.registry import Registry

PRESET_DIR = Path(__file__).parent / "presets"


class GridFileError(ValueError):
    """A grid file error already located: '<source> line N: <key>: <problem>'."""



def _fail(source: str, node: yaml.Node, path: str, message: str):
    where = f"{source} line {node.start_mark.line + 1}"
    raise GridFileError(f"{where}: {path}: {message}" if path else f"{where}: {message}")


_SCALAR = yaml.constructor.SafeConstructor()
_TYPE_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false"}


def _scalar(node: yaml.Node, tp: type, path: str, source: str):
    if not isinstance(node, yaml.ScalarNode):
        _fail(
            source,
            node,
            path,
            f"expected {_TYPE_NAMES.get(tp, tp.__name__)}, got a "
            f"{'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}",
        )
    value = _SCALAR.construct_object(node)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
        try:
            return float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        _fail(source, node, path, f"expected {_TYPE_NAMES.get(tp, tp.__name__)}, got {value!r}")
    return value


def _convert(node: yaml.Node, tp, path: str, source: str):
    """The value of `node` as type `tp` (a dataclass, tuple[X, ...], X | None, int, float, str, bool)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            try:
                return _convert(node, option, path, source)
            except GridFileError:
                pass
        return _convert(node, options[-1], path, source)
    if origin is tuple:
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]  # a single value is a list of one
        return tuple(_convert(item, args[0], f"{path}[{i}]", source) for i, item in enumerate(items))
    if tp is ModelEntry and isinstance(node, yaml.ScalarNode):  # `- DiT-B/4` is short for `- name: DiT-B/4`
        return _build(
            tp,
            yaml.MappingNode(
                "tag:yaml.org,2002:map",
                [(yaml.ScalarNode("tag:yaml.org,2002:str", "name", node.start_mark), node)],
                node.start_mark,
            ),
            path,
            source,
        )
    if dataclasses.is_dataclass(tp):
        return _build(tp, node, path, source)
    return _scalar(node, tp, path, source)


def _build(cls, node: yaml.Node, path: str, source: str):
    """A `cls` from a YAML mapping node; errors name the key and its line."""
    section = path or "the grid"
    if not isinstance(node, yaml.MappingNode):
        _fail(source, node, path, f"{section} must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs, key_nodes = {}, {}
    for key_node, value_node in node.value:
        key = key_node.value
        dotted = f"{path}.{key}" if path else str(key)
        if key not in fields:
            _fail(source, key_node, "", f"unknown key {dotted!r}; valid keys in {section}: {', '.join(fields)}")
        if key in kwargs:
            _fail(source, key_node, "", f"key {dotted!r} appears twice")
        kwargs[key] = _convert(value_node, hints[key], dotted, source)
        key_nodes[key] = key_node
    missing = [
        k
        for k, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and k not in kwargs
    ]
    if missing:
        _fail(source, node, "", f"{section} is missing the key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except SpecError as exc:
        dotted = f"{path}.{exc.key}" if path and exc.key else (exc.key or path)
        _fail(source, key_nodes.get(exc.key, node), dotted, str(exc))


def parse_grid(text: str, source: str = "<grid>") -> GridSpec:
    """A GridSpec from YAML text; `source` names it in errors ('grid.yaml line 12: train.lr: ...')."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GridFileError(f"{source}{line}: malformed YAML: {problem}") from None
    if root is None:
        raise GridFileError(f"{source}: the grid file is empty")
    _check_steps_or_budgets(root, source)
    _check_sweep_lists(root, source)
    return _build(GridSpec, root, "", source)


def _keys(node: yaml.Node) -> dict:
    """Key -> (key node, value node) of a mapping node ({} for any other node)."""
    return {k.value: (k, v) for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}


def _check_steps_or_budgets(root: yaml.Node, source: str):
    """A grid trains to `train.steps` or to its `budgets`, never both: fail at the steps line."""
    train, budgets = _keys(root).get("train"), _keys(root).get("budgets")
    steps = _keys(train[1]).get("steps") if train else None
    if budgets and budgets[1].value not in ([], "", "null", "~") and steps:
        _fail(source, steps[0], "train.steps", "give train.steps or budgets, not both: a grid with budgets trains "
              "each model to the step that reaches each budget")


def _check_sweep_lists(root: yaml.Node, source: str):
    """Every value under `sweep:` is a list (or null): a single value would sweep nothing."""
    sweep = _keys(root).get("sweep")
    for key, (key_node, value) in (_keys(sweep[1]) if sweep else {}).items():
        if not isinstance(value, yaml.SequenceNode) and value.tag != "tag:yaml.org,2002:null":
            _fail(source, key_node, f"sweep.{key}", f"expected a list of values to sweep, got {value.value!r}; "
                  f"write [{value.value}, ...] with every value to train, or set train.{key} for one value")


def load_grid(path) -> GridSpec:
    """A GridSpec from a YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no grid file {path}; give a YAML grid file or a preset ({', '.join(preset_names())})")
    return parse_grid(read_text(path, what="grid file", expected="a YAML grid spec"), source=str(path))


def presets() -> Registry[Path]:
    """The grid files shipped in scaling/presets/, by name (the file's stem), sorted."""
    return Registry("preset", {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"), key=lambda p: p.stem)})


def preset_names() -> tuple[str, ...]:
    return presets().names()


def load_preset(name: str) -> GridSpec:
    """A grid shipped with the package (`preset_names()`): paper, blocks, demo, demo-long, demo-isoflop."""
    path = presets().get(name)
    return parse_grid(path.read_text(), source=f"preset {name} ({path.name})")


def load_grid_or_preset(name_or_path: str) -> GridSpec:
    """A grid file if `name_or_path` is one, else the preset of that name."""
    if Path(name_or_path).is_file() or name_or_path not in preset_names():
        return load_grid(name_or_path)
    return load_preset(name_or_path)


def grid_to_dict(spec: GridSpec) -> dict:
    """The resolved spec (every default filled in) as plain YAML/JSON values."""

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    resolved = plain(dataclasses.asdict(spec))
    if spec.budgets:  # the steps are the budgets'
        del resolved["train"]["steps"]
    return resolved


def dump_grid(spec: GridSpec) -> str:
    """The resolved spec as YAML; parse_grid(dump_grid(spec)) == spec."""
    return yaml.safe_dump(grid_to_dict(spec), sort_keys=False)
