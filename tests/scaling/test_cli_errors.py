"""Errors a user can cause end in one line on stderr, exit status 2; bugs still raise; --traceback shows the trace."""
import builtins
import errno
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from dit.checkpoint import list_checkpoints
from scaling.cli import main

TINY = ["--model", "DiT-custom/8", "--depth", "1", "--hidden-size", "32", "--num-heads", "2", "--resolution", "16",
        "--batch-size", "8", "--num-workers", "0", "--sample-steps", "2", "--sample-images", "4", "--device", "cpu",
        "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture(autouse=True)
def no_traceback_variable(monkeypatch):
    """The tests below set SCALING_TRACEBACK themselves where they need it."""
    monkeypatch.delenv("SCALING_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory trained for one step of a 1-block DiT on 16 px digits."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    assert main(["train", "--run-dir", str(run_dir), "--steps", "1", "--ckpt-every", "1", *TINY]) == 0
    return run_dir


def one_error_line(capsys, argv, command=None) -> str:
    """Run the CLI; assert exit 2 and exactly one line on stderr, naming the command; return that line."""
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"scaling {command or argv[0]}: error: ")
    return lines[0]


class Payload:
    """Unpickling calls open(marker, "w"): the file appears if the loader runs pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def crafted_files(tmp_path):
    """The same payload as a raw pickle and inside torch.save's zip layout; and the file it would create."""
    marker = tmp_path / "payload-ran"
    with open(tmp_path / "raw.pth", "wb") as f:
        pickle.dump({"fc.weight": Payload(marker)}, f)
    torch.save({"fc.weight": Payload(marker)}, tmp_path / "zipped.pth")
    return [tmp_path / "raw.pth", tmp_path / "zipped.pth"], marker


@pytest.mark.parametrize("option, value, expected", [
    ("--max-grad-norm", "-1", "max_grad_norm must be above 0"),
    ("--weight-decay", "5", "weight_decay 5.0 is outside [0, 1]"),
    ("--warmup-steps", "-1", "warmup_steps must be at least 0"),
    ("--num-workers", "-1", "num_workers must be at least 0"),
    ("--resolution", "0", "resolution must be at least 1 (got 0); leave it out"),
    ("--sample-every", "0", "sample_every must be at least 1 (got 0); leave it out"),
    ("--keep-every", "0", "keep_every must be at least 1 (got 0); leave it out"),
    ("--lr", "0", "lr 0.0 is outside (0, 1)"),
    ("--device", "gpu7", "unknown device 'gpu7'; choose auto, cpu, cuda or cuda:N"),
])
def test_bad_training_option_is_one_line_with_the_valid_range(capsys, tmp_path, option, value, expected):
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "run", *TINY, option, value])
    assert expected in line
    assert not (tmp_path / "run").exists()


def test_cuda_without_a_gpu_names_the_fix(capsys, tmp_path):
    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "run", *TINY, "--device", device])
    fix = "GPU(s) are visible; choose cuda:0" if torch.cuda.is_available() else "no CUDA GPU here; use --device cpu"
    assert f"device '{device}' asked for" in line and fix in line


@pytest.mark.parametrize("command", ["eval", "ref-stats"])
def test_feature_batch_size_zero_is_refused(capsys, tmp_path, command):
    paths = ["--samples", tmp_path / "s.npz", "--ref", tmp_path / "r.npz"] if command == "eval" else \
        ["--data", "mnist32", "--out", tmp_path / "r.npz"]
    line = one_error_line(capsys, [command, *paths, "--features", "mnist", "--batch-size", "0", "--no-progress"])
    assert "--batch-size: must be at least 1 (got 0)" in line


def test_sampling_options_are_range_checked(capsys, tiny_run, tmp_path):
    ckpt = list_checkpoints(tiny_run)[-1][1]
    base = ["sample", "--ckpt", ckpt, "--out", tmp_path / "s.npz", "--device", "cpu"]
    assert "batch_size must be at least 1 (got 0)" in one_error_line(capsys, [*base, "--batch-size", "0"])
    assert "eta 2.0 is outside [0, 1]" in one_error_line(capsys, [*base, "--sampler", "ddim", "--eta", "2"])
    assert "cfg scale 0.5 is below 1" in one_error_line(capsys, [*base, "--cfg-scale", "0.5"])


def test_binary_file_as_yaml_names_the_file(capsys, tmp_path):
    (tmp_path / "grid.yaml").write_bytes(PNG)
    line = one_error_line(capsys, ["plan", tmp_path / "grid.yaml"])
    assert f"grid file {tmp_path / 'grid.yaml'} is not a text file (byte 0x89 at offset 0)" in line
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "run", "--config", tmp_path / "grid.yaml"])
    assert "config file" in line and "is not a text file" in line and "give a JSON or YAML file" in line


@pytest.mark.parametrize("make, expected, fix", [
    (lambda p: p.write_text("step,loss\n1,0.5\n"), "not a torch file", "give a .pt file"),  # text renamed .pt
    (lambda p: p.write_bytes(b""), "not a whole torch file", "give a .pt file"),
    # a folder may be a diffusers DiT folder (dit.foreign), so the line says what it lacks
    (lambda p: p.mkdir(), "is a folder but not a diffusers DiT", "a .pt or a .safetensors file"),
    (lambda p: None, "does not exist", "give a .pt file"),
])
def test_unreadable_checkpoint_is_one_line_with_the_fix(capsys, tmp_path, make, expected, fix):
    make(tmp_path / "model.pt")
    for command in ("sample", "fid") if expected == "does not exist" else ("sample",):
        argv = [command, "--ckpt", tmp_path / "model.pt", "--device", "cpu", "--num", "2", "--steps", "2"]
        argv += ["--out", tmp_path / "s.npz"] if command == "sample" else ["--ref", tmp_path / "ref.npz"]
        line = one_error_line(capsys, argv)
        assert expected in line and fix in line


def test_pickled_payload_as_checkpoint_runs_nothing(capsys, tmp_path):
    for path in crafted_files(tmp_path)[0]:
        line = one_error_line(capsys, ["sample", "--ckpt", path, "--out", tmp_path / "s.npz", "--device", "cpu"])
        assert "holds pickled Python objects" in line and "weights_only" not in line
    assert not (tmp_path / "payload-ran").exists()


def test_crafted_inception_weights_run_nothing(capsys, tmp_path, monkeypatch):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    np.savez(tmp_path / "samples.npz", arr_0=images)
    np.savez(tmp_path / "ref.npz", arr_0=images)
    paths, marker = crafted_files(tmp_path)
    argv = ["eval", "--samples", tmp_path / "samples.npz", "--ref", tmp_path / "ref.npz", "--device", "cpu",
            "--no-progress"]
    for path in paths:
        line = one_error_line(capsys, [*argv, "--inception-weights", path])
        assert not marker.exists(), "the crafted weights ran code"  # torch-fidelity's own loader creates it
        assert f"cannot read Inception weights {path}: it holds pickled Python objects" in line
        monkeypatch.setenv("DIT_INCEPTION_WEIGHTS", str(path))
        assert "holds pickled Python objects" in one_error_line(capsys, argv)
    assert not marker.exists(), "the crafted weights ran code"


def test_output_path_that_is_a_file_or_a_directory(capsys, tmp_path, tiny_run):
    (tmp_path / "a-file").write_text("")
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "a-file", *TINY, "--steps", "1"])
    assert str(tmp_path / "a-file") in line and "File exists" in line
    (tmp_path / "out.npz").mkdir()
    ckpt = list_checkpoints(tiny_run)[-1][1]
    line = one_error_line(capsys, ["sample", "--ckpt", ckpt, "--out", tmp_path / "out.npz", "--num", "2",
                                   "--steps", "2", "--device", "cpu"])
    assert f"--out {tmp_path / 'out.npz'} is a directory; give the path of a .npz file" in line


def test_full_disk_is_one_line(capsys, tmp_path, monkeypatch):
    """Every write of dit.io lands on /dev/full, as on a full disk: the checkpoint's torch.save fails with ENOSPC."""
    def full_disk(path, mode="r"):
        return builtins.open("/dev/full" if "w" in mode else path, mode)

    monkeypatch.setattr("dit.io.open", full_disk, raising=False)
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "run", *TINY, "--steps", "1"])
    assert "No space left on device; free space on that disk" in line
    assert list_checkpoints(tmp_path / "run") == []


def test_read_only_disk_is_one_line(capsys, tmp_path, monkeypatch):
    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr("dit.io.tempfile.mkstemp", read_only)
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "run", *TINY, "--steps", "1"])
    assert f"{tmp_path / 'run'}: Read-only file system; the file system is read-only" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_folder_without_write_permission_is_one_line(capsys, tmp_path):
    tmp_path.joinpath("locked").mkdir(mode=0o500)
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "locked" / "run", *TINY, "--steps", "1"])
    assert "Permission denied; check its permissions" in line


def test_checkpoint_of_another_size_in_the_run_dir(capsys, tmp_path, tiny_run):
    copy = shutil.copytree(tiny_run, tmp_path / "run")
    (copy / "config.json").unlink()  # with it, the recipe check names the changed option first
    tiny = [*TINY]
    tiny[tiny.index("--hidden-size") + 1] = "64"
    line = one_error_line(capsys, ["train", "--run-dir", copy, *tiny, "--steps", "2"])
    assert f"{copy} holds a checkpoint of DiT-custom/8, which does not fit DiT-custom/8" in line


def test_diverged_training_and_failed_grid_runs_end_in_one_line(capsys, tmp_path, monkeypatch):
    from dit.train import TrainingDiverged

    def diverge(*args, **kwargs):
        raise TrainingDiverged("the loss became NaN or infinite at step 3; lower the learning rate")

    monkeypatch.setattr("dit.train.train", diverge)
    line = one_error_line(capsys, ["train", "--run-dir", tmp_path / "run", *TINY])
    assert line.endswith("at step 3; lower the learning rate")
    monkeypatch.setattr("scaling.executors.execute_run", diverge)
    argv = ["run-grid", "--preset", "demo", "--out", str(tmp_path / "grid"), "--no-progress", "--no-report"]
    assert main([*argv, "--cpu-workers", "1"]) == 2  # in this process, where execute_run is patched
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and err[-1].startswith("scaling run-grid: error: runs failed: DiT-")
    stopped = "stopped: the loss became NaN or infinite at step 3; lower the learning rate"
    assert err[:-1] and all(line.endswith(stopped) for line in err[:-1])


def grid_with_a_record(tmp_path):
    from scaling.evaluation import headline_setting
    from scaling.grid import plan
    from scaling.gridfile import load_preset
    from scaling.run_state import run_layout
    from scaling.runs import claim_grid_dir

    spec = load_preset("demo")
    claim_grid_dir(tmp_path / "grid", spec)
    run = plan(spec)[0]
    record = run_layout(tmp_path / "grid", run).eval_record(run.eval_points()[0], headline_setting(run).file_stem)
    record.parent.mkdir(parents=True)
    return tmp_path / "grid", record


def test_damaged_eval_record_and_results_table_name_the_file_and_the_fix(capsys, tmp_path):
    grid, record = grid_with_a_record(tmp_path)
    record.write_text('{"step": 1000, "fid":')
    line = one_error_line(capsys, ["results", grid, "--refresh"])
    assert f"evaluation record {record} is damaged" in line and "scaling results GRID_DIR --refresh" in line
    assert main(["status", str(grid)]) == 0  # status marks the damaged run and shows the others
    out = capsys.readouterr().out
    assert "DiT-T/8                      damaged" in out and "DiT-T/4                      pending" in out
    assert f"DiT-T/8 is damaged: evaluation record {record} is damaged" in out
    record.unlink()
    (grid / "results.parquet").write_bytes(PNG)
    line = one_error_line(capsys, ["results", grid])
    assert f"cannot read the results table {grid / 'results.parquet'}" in line and "--refresh" in line


def test_traceback_option_and_variable_show_the_trace(capsys, tmp_path, monkeypatch):
    argv = ["train", "--run-dir", tmp_path / "run", *TINY, "--max-grad-norm", "-1"]
    for args in (["--traceback", *argv], [*argv, "--traceback"]):
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and err.strip().splitlines()[-1].startswith("scaling train: error: max_grad")
    monkeypatch.setenv("SCALING_TRACEBACK", "1")
    assert main([str(a) for a in argv]) == 2 and "Traceback" in capsys.readouterr().err


def test_a_bug_still_raises(monkeypatch):
    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr("scaling.commands.models.run", bug)
    with pytest.raises(KeyError, match="a bug"):
        main(["models"])
