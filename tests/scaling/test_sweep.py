"""Grid sweeps: recipe values expanded like seeds, in run keys and result columns; bad sweeps fail in one line."""
import textwrap

import pytest

from scaling.cli import main
from scaling.grid import SWEEPABLE, plan
from scaling.gridfile import dump_grid, parse_grid
from study.schema import KEY, RUN_COLUMNS, SWEPT_COLUMNS
from tests.scaling.spec_errors import line_of, spec_error

GRID = textwrap.dedent("""\
    name: sweep
    models:
      include:
        - {name: DiT-custom/4, depth: 2, hidden_size: 32, num_heads: 2}
        - {name: DiT-custom/4, depth: 2, hidden_size: 128, num_heads: 2}
    data: {dataset: mnist32, codec: identity, resolution: 16, channels: 1, num_classes: 10}
    train: {batch_size: 32, lr: 1e-3, steps: 20}
    eval: {every: 10, features: mnist, num_samples: 50, sampler: ddim, sampling_steps: 10}
    sweep:
      lr: [5e-4, 2e-3]
      parametrization: [sp, mup]
    """)


def test_sweep_expands_every_combination_in_keys_dirs_and_recipes():
    runs = plan(parse_grid(GRID + "seeds: [0, 1]\n"))
    assert len(runs) == 2 * 2 * 2 * 2  # models x parametrization x lr x seeds
    first = runs[0]
    assert first.name == "DiT-custom/4-d2-w32-h2"  # the name stays the model's, as with seeds
    assert first.key == "DiT-custom-4-d2-w32-h2-sp-lr0.0005-seed0"
    assert first.label == "DiT-custom/4-d2-w32-h2-sp-lr0.0005 seed 0"
    assert len({r.dir_name for r in runs}) == len(runs)
    assert {(r.train.parametrization, r.train.lr) for r in runs} == {
        (p, lr) for p in ("sp", "mup") for lr in (5e-4, 2e-3)}
    assert all(dict(r.sweep) == {"parametrization": r.train.parametrization, "lr": r.train.lr} for r in runs)


def test_mup_runs_take_the_narrowest_width_as_base_and_sp_runs_none():
    runs = plan(parse_grid(GRID))
    assert {r.train.base_width for r in runs if r.train.parametrization == "mup"} == {32}
    assert {r.train.base_width for r in runs if r.train.parametrization == "sp"} == {None}
    assert [r.train_config().base_width for r in runs if r.train.parametrization == "mup"] == [32] * 4


def test_sweep_round_trips_and_a_grid_without_one_is_unchanged():
    spec = parse_grid(GRID)
    assert parse_grid(dump_grid(spec)) == spec
    plain = parse_grid(GRID.split("sweep:")[0])
    assert [r.key for r in plan(plain)] == ["DiT-custom/4-d2-w32-h2", "DiT-custom/4-d2-w128-h2"]


def test_swept_fields_are_result_columns_and_part_of_the_key():
    assert set(SWEEPABLE) == set(SWEPT_COLUMNS)
    assert {"lr", "batch_size", "parametrization"} <= set(RUN_COLUMNS) & set(KEY)


def test_batch_size_sweep_gives_each_value_its_own_budget_steps():
    text = GRID.replace(", steps: 20}", "}").replace("lr: [5e-4, 2e-3]", "batch_size: [16, 64]") + "budgets: [3000]\n"
    runs = plan(parse_grid(text))
    steps = {r.train.batch_size: r.train.steps for r in runs if r.name.endswith("w32-h2")}
    assert steps[16] > steps[64]


@pytest.mark.parametrize("old,new,words", [
    ("lr: [5e-4, 2e-3]", "lr: []", "sweep.lr: the list is empty; list at least one value"),
    ("lr: [5e-4, 2e-3]", "lr: 1e-3", "sweep.lr: expected a list of values to sweep, got '1e-3'"),
    ("lr: [5e-4, 2e-3]", "lr: [-1e-3, 1e-3]", "sweep.lr: lr -0.001 is outside (0, 1)"),
    ("lr: [5e-4, 2e-3]", "lr: [1e-3, 1e-3]", "repeats a value"),
    ("lr: [5e-4, 2e-3]", "steps: [10, 20]", "unknown key 'sweep.steps'; valid keys in sweep: parametrization, lr"),
    ("parametrization: [sp, mup]", "parametrization: [sp, ntk]", "unknown parametrization 'ntk'"),
])
def test_bad_sweeps_fail_in_one_line_naming_the_key(old, new, words):
    text = GRID.replace(old, new)
    message = spec_error(text)
    line = line_of(text, "  " + new.split(":")[0] + ":")
    assert message.startswith(f"grid.yaml line {line}: ")
    assert words in message


def test_base_width_wider_than_a_model_fails_naming_it():
    text = GRID.replace("steps: 20}", "steps: 20, base_width: 64}")
    message = spec_error(text)
    assert "train.base_width 64 is wider than DiT-custom/4-d2-w32-h2-mup-lr0.0005" in message


def test_plan_prints_the_tuning_share(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sweep: parametrization x 2, lr x 2" in out
    assert "tuning (every swept lr, batch_size, warmup_steps, weight_decay value but one per model): 50%" in out
    path.write_text(GRID.replace("[5e-4, 2e-3]", "[5e-4, 1e-3, 2e-3, 4e-3]"))
    assert main(["plan", str(path)]) == 0
    assert "value but one per model): 75%" in capsys.readouterr().out
    path.write_text(GRID.replace("lr: [5e-4, 2e-3]", "lr: x"))
    assert main(["plan", str(path)]) == 2
    assert "sweep.lr: expected a list" in capsys.readouterr().err


def test_demo_mup_preset_sweeps_lr_over_an_8x_width_range_under_sp_and_mup():
    from scaling.gridfile import load_preset

    spec = load_preset("demo-mup")
    runs = plan(spec)
    widths = sorted({r.dit_config().hidden_size for r in runs})
    assert widths[-1] / widths[0] >= 8 and 4 <= len(spec.sweep.lr) <= 6
    assert set(spec.sweep.parametrization) == {"sp", "mup"} and spec.train.lr in spec.sweep.lr
    assert {r.train.base_width for r in runs if r.train.parametrization == "mup"} == {widths[0]}
    assert spec.eval.validation_items > 0 and spec.data.resolution == 16 and spec.train.device == "cpu"
