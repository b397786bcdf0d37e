"""Experiment tracking: TensorBoard's event files and W&B's offline run mirror train-log.jsonl, the evaluation
records and the sample grids; bad or missing loggers fail in one line; a failing logger never stops training."""
import io
import json
import math
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from dit.config import TrainConfig
from dit.loggers import log_eval, wandb_mode, wandb_run_id
from dit.train import train
from scaling.cli import main
from scaling.grid import plan
from scaling.gridfile import dump_grid, parse_grid
from study.layout import RunLayout

TINY = {"model": "DiT-T/8", "resolution": 16, "batch_size": 16, "log_every": 1, "sample_steps": 2, "sample_images": 4,
        "num_workers": 0, "device": "cpu"}
TINY_FLAGS = ["--model", "DiT-T/8", "--resolution", "16", "--batch-size", "16", "--steps", "2", "--num-workers", "0",
              "--device", "cpu", "--no-progress"]


def train_log(run_dir) -> list[dict]:
    return [json.loads(line) for line in RunLayout(run_dir).train_log.read_text().splitlines()]


def events(run_dir):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    folder = str(RunLayout(run_dir).tensorboard_dir)
    accumulator = event_accumulator.EventAccumulator(folder, size_guidance={"images": 0})  # 0: keep all
    accumulator.Reload()
    return accumulator


def test_tensorboard_holds_every_train_log_record_the_grid_and_eval_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    train(TrainConfig(**TINY, steps=4, ckpt_every=4, loggers=("tensorboard",)), run_dir, progress=False)
    log_eval(RunLayout(run_dir), 4, "ddpm-2-cfg1-mnist", {"fid": 12.5, "class_accuracy": math.nan, "sampler": "ddpm"})
    tb, records = events(run_dir), train_log(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "mse", "vb", "grad_norm", "lr", "images_per_sec", "peak_mem_gb", "wall_seconds"):
        got = tb.Scalars(f"train/{key}")
        assert [e.step for e in got] == [1, 2, 3, 4], key
        np.testing.assert_allclose([e.value for e in got], [r[key] for r in records], rtol=1e-6, err_msg=key)  # float32
    assert [(e.step, e.value) for e in tb.Scalars("eval/ddpm-2-cfg1-mnist/fid")] == [(4, 12.5)]
    assert not [t for t in tb.Tags()["scalars"] if t.endswith(("class_accuracy", "sampler"))]  # NaN and text left out
    (image,) = tb.Images("samples/ema")
    assert image.step == 4
    with Image.open(io.BytesIO(image.encoded_image_string)) as logged, Image.open(RunLayout(run_dir).preview(4)) as png:
        assert np.array_equal(np.asarray(logged.convert("RGB")), np.asarray(png.convert("RGB")))


def test_a_resumed_run_logs_each_step_once(tmp_path):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path / "run"
    config = TrainConfig(**TINY, steps=4, ckpt_every=2, sample_every=100, loggers=("tensorboard",))
    train(config, run_dir, progress=False)
    RunLayout(run_dir).checkpoint(4).unlink()  # as if killed after logging steps 3 and 4: they are trained again
    train(config, run_dir, progress=False)
    records, logged = train_log(run_dir), events(run_dir).Scalars("train/loss")
    assert [e.step for e in logged] == [r["step"] for r in records] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in logged], [r["loss"] for r in records], rtol=1e-6)


def test_wandb_runs_offline_by_default_and_writes_its_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))  # no `wandb login` entry
    assert wandb_mode() == "offline"
    run_dir = tmp_path / "run"
    train(TrainConfig(**TINY, steps=2, ckpt_every=2, loggers=("wandb",)), run_dir, progress=False)
    (folder,) = RunLayout(run_dir).wandb_dir.glob("offline-run-*")
    assert (folder / f"run-{wandb_run_id(run_dir)}.wandb").stat().st_size > 0
    assert list((folder / "files" / "media" / "images").rglob("*.png"))  # the sample grid
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_an_unknown_logger_is_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "run"), *TINY_FLAGS, "--logger", "tensorbord"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "scaling train: error: unknown logger 'tensorbord'; choose one of tensorboard, wandb"


@pytest.mark.parametrize("logger, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_logger_not_installed_names_its_extra(tmp_path, capsys, monkeypatch, logger, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    assert main(["train", "--run-dir", str(tmp_path / "run"), *TINY_FLAGS, "--logger", logger]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("scaling train: error: logger ")
    assert err.endswith(f'install it with pip install "dit-scaling[{logger}]"')


def test_a_logger_that_fails_mid_training_is_dropped_with_one_warning(tmp_path, capsys, monkeypatch):
    pytest.importorskip("tensorboard")
    from dit.loggers import TensorBoardLogger

    calls = []

    def broken(self, step, values):
        calls.append(step)
        raise RuntimeError("disk full")

    monkeypatch.setattr(TensorBoardLogger, "log_scalars", broken)
    config = TrainConfig(**TINY, steps=3, ckpt_every=3, loggers=("tensorboard",))
    record = train(config, tmp_path / "run", progress=False)
    assert record["step"] == 3 and [r["step"] for r in train_log(tmp_path / "run")] == [1, 2, 3]
    assert calls == [1]  # dropped after its first failure
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [("warning: logger tensorboard failed to log (RuntimeError: disk full); it is off for the "
                         "rest of this run (train-log.jsonl keeps every record)")]


def test_loggers_option_from_flags_files_and_grid_specs(tmp_path, capsys):
    from scaling.cli import build_parser
    from scaling.commands.train import resolve_config

    flags = ["--logger", "wandb", "--logger", "tensorboard", "--logger", "wandb"]
    args = build_parser().parse_args(["train", "--run-dir", str(tmp_path), *flags])
    assert resolve_config(args).loggers == ("wandb", "tensorboard")  # in order, once each
    assert TrainConfig(loggers="tensorboard").loggers == ("tensorboard",)  # one name in a YAML file
    assert TrainConfig(loggers=["wandb"]).loggers == ("wandb",)  # a list from config.json
    grid = textwrap.dedent("""\
        name: tiny
        models: {sizes: [T], patch_sizes: [8]}
        data: {dataset: mnist32, codec: identity, resolution: 16, channels: 1, num_classes: 10}
        train: {steps: 10, loggers: [tensorboard]}
        """)
    spec = parse_grid(grid, source="grid.yaml")
    assert plan(spec)[0].train_config().loggers == ("tensorboard",)
    assert parse_grid(dump_grid(spec), source="grid.yaml") == spec
    with pytest.raises(ValueError, match=r"^grid.yaml line 4: .*unknown logger 'mlflow'; choose one of tensorboard, "):
        parse_grid(grid.replace("[tensorboard]", "[mlflow]"), source="grid.yaml")
