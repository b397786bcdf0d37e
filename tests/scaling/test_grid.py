"""Grid specs: the presets plan what the paper (and the demo) train; bad files fail naming key and line."""
import dataclasses
import json
import math
import pickle
import textwrap
import typing

import pytest

from dit.config import TrainConfig
from scaling.cli import main
from scaling.grid import EXECUTOR_KINDS, RUN_OPTIONS, ModelEntry, TrainRecipe, plan
from scaling.gridfile import dump_grid, load_grid, load_grid_or_preset, load_preset, parse_grid, preset_names
from tests.scaling.spec_errors import line_of, spec_error

GRID = textwrap.dedent("""\
    name: tiny
    models:
      sizes: [T]
      patch_sizes: [2, 4]
      blocks: [adaln-zero, cross-attn]
      include:
        - DiT-S/8
        - {name: DiT-custom/4, depth: 2, hidden_size: 64, num_heads: 2, block: in-context}
    data: {dataset: mnist32, codec: identity, resolution: 16, channels: 1, num_classes: 10}
    train:
      batch_size: 32
      lr: 1e-3
      steps: 250
    eval: {every: 100, features: mnist, num_samples: 50, sampler: ddim, sampling_steps: 10, cfg_scales: [1, 4]}
    """)


def test_plan_expands_sizes_patches_blocks_then_listed_models():
    runs = plan(parse_grid(GRID))
    assert [r.name for r in runs] == [
        "DiT-T/2", "DiT-T/2-cross-attn", "DiT-T/4", "DiT-T/4-cross-attn",
        "DiT-S/8", "DiT-S/8-cross-attn", "DiT-custom/4-d2-w64-h2-in-context",
    ]
    assert runs[1].dir_name == "DiT-T-2-cross-attn" and runs[1].block == "cross-attn"
    custom = runs[-1].dit_config()
    assert (custom.depth, custom.hidden_size, custom.num_heads, custom.patch_size) == (2, 64, 2, 4)
    assert (custom.input_size, custom.in_channels, custom.num_classes) == (16, 1, 10)


def test_values_are_typed_and_defaults_filled():
    spec = parse_grid(GRID)
    assert spec.train.lr == 1e-3 and isinstance(spec.train.lr, float)  # YAML 1.1 reads 1e-3 as text
    assert spec.eval.sampling_steps == (10,) and spec.eval.cfg_scales == (1.0, 4.0)
    assert spec.eval.points(spec.train.steps) == (100, 200, 250)
    assert spec.train.ema_decay == TrainConfig().ema_decay and spec.executor.kind == "local"


def test_run_turns_into_its_train_config():
    run = plan(parse_grid(GRID))[1]
    config = run.train_config()
    assert isinstance(config, TrainConfig)
    assert (config.model, config.block, config.data, config.resolution, config.codec) == (
        "DiT-T/2",
        "cross-attn",
        "mnist32",
        16,
        "identity",
    )
    assert (config.batch_size, config.lr, config.steps) == (32, 1e-3, 250)
    assert dict(run.train)["batch_size"] == 32  # the recipe is a mapping of TrainConfig arguments


def test_dump_parse_round_trip_and_pickle():
    spec = parse_grid(GRID)
    assert parse_grid(dump_grid(spec)) == spec
    run = plan(spec)[0]
    assert pickle.loads(pickle.dumps(run)) == run


@pytest.mark.parametrize("old,new,key", [
    ("  steps: 250", "  stpes: 250", "'train.stpes'"),  # unknown key
    ("  lr: 1e-3", "  lr: fast", "train.lr"),  # wrong type
    ("  lr: 1e-3", "  lr: 3.0", "train.lr"),  # rejected by TrainConfig's own checks
    ("  batch_size: 32", "  batch_size: true", "train.batch_size"),
    ("  sizes: [T]", "  sizes: [T, Q]", "models.sizes"),
    ("  blocks: [adaln-zero, cross-attn]", "  blocks: [adaln-zero, crossattn]", "models.blocks"),
    ("num_samples: 50", "num_samples: [50]", "eval.num_samples"),
    ("sampler: ddim", "sampler: euler", "eval.sampler"),
    ("features: mnist", "features: clip", "eval.features"),
    ("    - DiT-S/8", "    - DiT-Q/8", "models.include[0].name"),
    ("depth: 2, ", "", "models.include[1].name"),
])
def test_bad_values_name_key_and_line(old, new, key):
    text = GRID.replace(old, new)
    assert text != GRID
    message = spec_error(text)
    assert message.startswith(f"grid.yaml line {line_of(text, new or 'DiT-custom/4')}: ")
    assert key in message


def test_model_that_does_not_fit_the_data_fails_clearly():
    text = GRID.replace("resolution: 16", "resolution: 12").replace("patch_sizes: [2, 4]", "patch_sizes: [2, 8]")
    message = spec_error(text)
    assert message.startswith(f"grid.yaml line {line_of(text, 'models:')}: models: DiT-T/8 does not fit the data")
    assert "12x12x1" in message and "patch size 8 does not divide input size 12" in message


@pytest.mark.parametrize("text,line,words", [
    ("name: x\nmodels: {sizes: [S]\n", 3, "malformed YAML"),
    ("", None, "empty"),
    ("- a\n- b\n", 1, "must be a mapping"),
    ("name: x\nmodels: {sizes: [S]}\n", 1, "missing the key 'data'"),
    ("name: x\nname: y\n", 2, "'name' appears twice"),
    (GRID + "executor: {kind: slurm}\n", line_of(GRID, "eval:") + 1, "needs an executor.slurm section"),
    (GRID + "executor: {kind: k8s}\n", line_of(GRID, "eval:") + 1, "executor.kind"),
    (GRID.replace("codec: identity", "codec: sd-vae"), line_of(GRID, "data:"), "SD VAE encodes 3-channel images"),
])
def test_malformed_files_fail_with_one_located_line(text, line, words):
    message = spec_error(text)
    assert words in message
    if line is not None:
        assert message.startswith(f"grid.yaml line {line}:")


def test_duplicate_runs_are_refused():
    text = GRID.replace("    - DiT-S/8", "    - DiT-T/2")
    assert "DiT-T/2 is listed twice" in spec_error(text)


def test_named_sizes_refuse_architecture_overrides():
    with pytest.raises(ValueError, match="DiT-custom"):
        ModelEntry(name="DiT-B/4", depth=3)


def test_presets_registry_names_the_valid_presets(tmp_path):
    assert set(preset_names()) >= {"paper", "blocks", "demo", "demo-long"}
    with pytest.raises(
        ValueError, match="unknown preset 'papr'; choose one of blocks, demo, demo-isoflop, demo-long, demo-mup, paper"
    ):
        load_preset("papr")
    path = tmp_path / "g.yaml"
    path.write_text(GRID)
    assert load_grid_or_preset(str(path)) == load_grid(path) and load_grid_or_preset("demo") == load_preset("demo")


# The paper's scaling grid (Sec. 4): S/B/L/XL x p in {2, 4, 8}, adaLN-Zero, ImageNet 256 through the
# SD VAE (32 x 32 x 4 latents), batch 256, 400K steps, FID-50K every 50K steps, 250 DDPM steps, no guidance.
def test_paper_preset():
    spec = load_preset("paper")
    runs = plan(spec)
    assert sorted(r.name for r in runs) == sorted(f"DiT-{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8))
    assert {r.block for r in runs} == {"adaln-zero"}
    config = runs[0].dit_config()
    assert (config.input_size, config.in_channels, config.num_classes, config.learn_sigma) == (32, 4, 1000, True)
    assert (spec.data.codec, spec.data.resolution) == ("sd-vae", 256)
    assert (spec.train.batch_size, spec.train.steps, spec.train.lr, spec.train.ema_decay) == (
        256,
        400_000,
        1e-4,
        0.9999,
    )
    assert spec.eval.points(spec.train.steps) == tuple(range(50_000, 400_001, 50_000))
    assert (spec.eval.num_samples, spec.eval.features, spec.eval.sampler) == (50_000, "inception", "ddpm")
    assert (spec.eval.sampling_steps, spec.eval.cfg_scales) == ((250,), (1.0,))


def test_blocks_preset_is_xl2_with_each_block():
    runs = plan(load_preset("blocks"))
    assert {r.model for r in runs} == {"DiT-XL/2"}
    assert sorted(r.block for r in runs) == sorted(["in-context", "cross-attn", "adaln", "adaln-zero"])
    assert [r.name for r in runs if r.block == "adaln-zero"] == ["DiT-XL/2"]  # the same run as the paper grid's


@pytest.mark.parametrize("name", ["demo", "demo-long"])
def test_demo_presets_are_tiny_mnist_in_pixel_space(name):
    spec = load_preset(name)
    runs = plan(spec)
    assert sorted(r.name for r in runs) == sorted(f"DiT-{s}/{p}" for s in ("T", "M") for p in (2, 4, 8))
    assert (spec.data.dataset, spec.data.codec, spec.data.in_channels, spec.data.num_classes) == (
        "mnist32",
        "identity",
        1,
        10,
    )
    assert spec.eval.features == "mnist" and spec.executor.gpus_per_run == 0
    assert spec.train.ema_decay < 0.999  # a few hundred steps: the paper's EMA would still hold the initial weights


@pytest.mark.parametrize("name", ["paper", "blocks", "demo", "demo-long"])
def test_plan_command_prints_each_preset_with_training_compute(name, capsys):
    assert main(["plan", "--preset", name, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    runs = plan(load_preset(name))
    assert [row["run"] for row in rows] == [r.name for r in runs]
    for row, run in zip(rows, runs, strict=True):
        assert row["batch_size"] == run.train.batch_size and row["steps"] == run.train.steps
        # the paper's training compute: forward Gflops x batch x steps x 3
        assert row["train_compute_gflops"] == pytest.approx(
            row["gflops"] * row["batch_size"] * row["steps"] * 3, rel=1e-4
        )


def test_plan_command_table_and_errors(tmp_path, capsys):
    assert main(["plan", "demo"]) == 0
    out = capsys.readouterr().out
    assert "grid demo" in out and "DiT-M/2" in out and "6 runs" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GRID.replace("  steps: 250", "  stpes: 250"))
    assert main(["plan", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"scaling plan: error: {bad} line {line_of(GRID, '  steps: 250')}: unknown key 'train.stpes'"
    )
    assert "\n" not in err
    assert main(["plan", "--preset", "nope"]) == 2 and "choose one of" in capsys.readouterr().err


def test_gflops_command_csv(capsys):
    assert main(["gflops", "DiT-T/8", "--input-size", "16", "--in-channels", "1", "--num-classes", "10",
                 "--block", "adaln-zero", "cross-attn", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "model,block,input_size,tokens,params,gflops" and len(lines) == 3
    assert main(["gflops", "DiT-Q/2"]) == 2


ISOFLOP = textwrap.dedent("""\
    name: iso
    models: {sizes: [T], patch_sizes: [8, 4]}
    data: {dataset: mnist32, codec: identity, resolution: 16, channels: 1, num_classes: 10}
    train: {batch_size: 32, lr: 1e-3}
    eval: {features: mnist, num_samples: 50, sampler: ddim, sampling_steps: 10}
    budgets: [1000, 300, 3000]
    """)


def test_budgets_set_each_models_steps_and_evaluation_points():
    from scaling.flops import gflops

    spec = parse_grid(ISOFLOP)
    assert spec.budgets == (1000.0, 300.0, 3000.0)
    for run in plan(spec):
        per_step = gflops(run.dit_config()) * 32 * 3  # training compute of one step: Gflops x batch x 3
        steps = [math.ceil(b / per_step) for b in (300, 1000, 3000)]
        assert steps[0] < steps[1] < steps[2]
        assert run.eval_points() == tuple(steps) and run.train.steps == steps[-1]
        assert [run.budget_at(s) for s in steps] == [300.0, 1000.0, 3000.0] and run.budget_at(steps[0] + 1) is None
        assert (steps[0] - 1) * per_step < 300 <= steps[0] * per_step  # the first step whose compute reaches it
    assert parse_grid(dump_grid(spec)) == spec  # the resolved spec leaves train.steps out


def test_seeds_make_one_run_directory_each_with_the_same_name():
    runs = plan(parse_grid(GRID + "seeds: [0, 2]\n"))
    assert [(r.name, r.seed, r.train.seed, r.dir_name) for r in runs[:2]] == [
        ("DiT-T/2", 0, 0, "DiT-T-2-seed0"), ("DiT-T/2", 2, 2, "DiT-T-2-seed2")]
    assert len(runs) == 2 * len(plan(parse_grid(GRID)))
    assert plan(parse_grid(GRID))[0].seed is None and plan(parse_grid(GRID))[0].dir_name == "DiT-T-2"  # layout kept


@pytest.mark.parametrize("text,fragment,words", [
    (ISOFLOP.replace("lr: 1e-3}", "lr: 1e-3, steps: 100}"), "train:", "train.steps: give train.steps or budgets, not "
        "both"),
    (ISOFLOP.replace("[1000, 300, 3000]", "[0.1, 300, 3000]"), "budgets:", "budget 0.1 Gflops is less than one "
        "training step "
     "of the smallest model DiT-T/8"),
    (ISOFLOP.replace("[1000, 300, 3000]", "[300, 300]"), "budgets:", "repeat a budget"),
    (ISOFLOP.replace("[1000, 300, 3000]", "[-3]"), "budgets:", "must be positive"),
    (GRID + "seeds: [0, 1, 0]\n", "seeds:", "seeds [0, 1, 0] repeat a seed; list distinct integers"),
    (GRID + "seeds: [0, 1.5]\n", "seeds:", "seeds[1]: expected an integer, got 1.5"),
    (GRID + "seeds: [-1]\n", "seeds:", "must be integers of at least 0"),
])
def test_bad_seeds_and_budgets_fail_with_one_located_line(text, fragment, words):
    message = spec_error(text)
    assert message.startswith(f"grid.yaml line {line_of(text, fragment)}: ")
    assert words in message


def test_grid_with_budgets_and_steps_is_refused_when_built_in_code():
    import dataclasses

    spec = parse_grid(ISOFLOP)
    with pytest.raises(ValueError, match="not both"):
        dataclasses.replace(spec, train=dataclasses.replace(spec.train, steps=100))


def test_the_recipe_is_train_configs_options_less_the_run_options_with_their_types_and_defaults():
    recipe = {f.name: f for f in dataclasses.fields(TrainRecipe)}
    config = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert recipe.keys() <= config.keys()
    assert sorted(recipe.keys() | set(RUN_OPTIONS)) == sorted(config)
    assert not recipe.keys() & set(RUN_OPTIONS)
    recipe_hints, config_hints = typing.get_type_hints(TrainRecipe), typing.get_type_hints(TrainConfig)
    for name in recipe:
        assert recipe_hints[name] == config_hints[name], name
        assert getattr(TrainRecipe(), name) == getattr(TrainConfig(), name), name


def test_the_recipe_refuses_run_options_and_pickles_as_scaling_grids():
    assert TrainRecipe.__module__ == "scaling.grid"  # executors pickle specs by reference
    with pytest.raises(TypeError):
        TrainRecipe(model="DiT-S/2")  # a run option is the grid's models section's, not the recipe's


def test_executor_kinds_name_the_registered_executors():
    from scaling.executors import EXECUTORS

    assert EXECUTORS.names() == EXECUTOR_KINDS.names()


@pytest.mark.parametrize("command", ["plan", "run-grid"])
def test_every_preset_command_names_every_shipped_preset_in_its_help(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps help at hyphens otherwise
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"a shipped preset: {', '.join(preset_names())}" in help_text
    assert "demo-isoflop" in preset_names()
