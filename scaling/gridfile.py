"""Grid files: YAML (a file, or a preset shipped in scaling/presets/) to `scaling.grid`'s dataclasses and back.

Read by study.typed, as training config files are: a malformed file, an unknown or missing key, a value
of the wrong type, a number that is not finite or one its dataclass refuses fails with one line naming
the key and its line: 'grid.yaml line 12: train.lr: ...'.
"""
import dataclasses
from pathlib import Path

import yaml

from dit.io import read_text
from scaling.grid import GridSpec, ModelEntry
from study.registry import Registry
from study.typed import TypedFileError, TypedReader, mapping_keys

PRESET_DIR = Path(__file__).parent / "presets"


class GridFileError(TypedFileError):
    """A grid file error already located: '<source> line N: <key>: <problem>'."""


def grid_reader(source: str) -> TypedReader:
    """The typed reader of a grid file: `- DiT-B/4` in models.include is short for `- name: DiT-B/4`."""
    return TypedReader(source, shorthands={ModelEntry: "name"})


def parse_grid(text: str, source: str = "<grid>") -> GridSpec:
    """A GridSpec from YAML text; `source` names it in errors ('grid.yaml line 12: train.lr: ...')."""
    reader = grid_reader(source)
    root = reader.compose(text)
    if root is None:
        raise GridFileError(f"{source}: the grid file is empty; give a grid spec (see `scaling plan --help`)")
    _check_steps_or_budgets(root, reader)
    _check_sweep_lists(root, reader)
    return reader.build(GridSpec, root, "")


def _check_steps_or_budgets(root: yaml.Node, reader: TypedReader):
    """A grid trains to `train.steps` or to its `budgets`, never both: fail at the steps line."""
    train, budgets = mapping_keys(root).get("train"), mapping_keys(root).get("budgets")
    steps = mapping_keys(train[1]).get("steps") if train else None
    if budgets and budgets[1].value not in ([], "", "null", "~") and steps:
        reader.fail(steps[0], "train.steps", "give train.steps or budgets, not both: a grid with budgets trains "
                    "each model to the step that reaches each budget")


def _check_sweep_lists(root: yaml.Node, reader: TypedReader):
    """Every value under `sweep:` is a list (or null): a single value would sweep nothing."""
    sweep = mapping_keys(root).get("sweep")
    for key, (key_node, value) in (mapping_keys(sweep[1]) if sweep else {}).items():
        if not isinstance(value, yaml.SequenceNode) and value.tag != "tag:yaml.org,2002:null":
            reader.fail(key_node, f"sweep.{key}", f"expected a list of values to sweep, got {value.value!r}; "
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
