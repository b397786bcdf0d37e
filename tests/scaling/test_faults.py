"""Faults a user meets (a damaged checkpoint, a killed parent, a broken run, an earlier export) and how each ends."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from dit.checkpoint import list_checkpoints
from scaling.cli import main
from tests.scaling.test_bad_input import TINY, TINY_GRID, flip_a_bit


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny run trained for two steps, with a checkpoint at each."""
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    assert main(["train", "--run-dir", str(run_dir), "--steps", "2", "--ckpt-every", "1", *TINY]) == 0
    return run_dir


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_saying_so(capsys, tmp_path, tiny_run):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    flip_a_bit(list_checkpoints(run_dir)[-1][1])
    capsys.readouterr()
    assert main(["train", "--run-dir", str(run_dir), *TINY, "--steps", "3", "--ckpt-every", "1"]) == 0
    err = capsys.readouterr().err
    assert "step_0000002.pt; resuming from step 1" in err
    assert [step for step, _ in list_checkpoints(run_dir)] == [2, 3]  # step 2 trained again, whole this time


def test_export_replaces_its_own_output_saying_so_and_a_users_file_only_with_force(capsys, tmp_path, tiny_run):
    ckpt = str(list_checkpoints(tiny_run)[-1][1])
    out = tmp_path / "w.safetensors"
    argv = ["export", "--ckpt", ckpt, "--format", "safetensors", "--out", str(out)]
    assert main(argv) == 0 and main(argv) == 0
    assert f"replacing the earlier export at {out}" in capsys.readouterr().err
    out.write_text("mine")
    assert main(argv) == 2 and out.read_text() == "mine"
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0 and out.read_bytes() != b"mine"


def test_plan_notes_a_missing_data_folder_and_still_plans(capsys, tmp_path):
    (tmp_path / "grid.yaml").write_text(TINY_GRID.replace("dataset: mnist32", f"dataset: {tmp_path / 'images'}"))
    assert main(["plan", str(tmp_path / "grid.yaml")]) == 0
    out, err = capsys.readouterr()
    assert "DiT-T/8" in out and f"note: the data folder {tmp_path / 'images'} does not exist here" in err


def two_run_grid(tmp_path):
    """A claimed grid of two runs (T/8 and T/4), each with one result row; (grid dir, its runs)."""
    from scaling.grid import plan
    from scaling.gridfile import parse_grid
    from scaling.results import write_results
    from scaling.runs import claim_grid_dir
    from study.schema import result_row, to_table

    spec = parse_grid(TINY_GRID.replace("patch_sizes: [8]", "patch_sizes: [8, 4]"))
    claim_grid_dir(tmp_path / "grid", spec)
    runs = plan(spec)
    record = {"step": 2, "sampler": "ddim", "sampling_steps": 2, "cfg_scale": 1.0, "num_samples": 4,
              "features": "mnist", "fid": 12.5}
    rows = [result_row({"run": r.name, "model": r.model, "dataset": "mnist32", "gflops": 0.5, "batch_size": 8}, record)
            for r in runs]
    write_results(to_table(rows), tmp_path / "grid")
    return tmp_path / "grid", runs


def test_results_marks_the_rows_of_a_failed_run(capsys, tmp_path):
    from scaling.run_state import run_layout

    grid, runs = two_run_grid(tmp_path)
    failed = run_layout(grid, runs[0]).failed
    failed.parent.mkdir(parents=True)
    failed.write_text(json.dumps({"step": 2, "cause": "the loss", "message": "diverged"}))
    assert main(["results", str(grid), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert {row["run"]: row["failed"] for row in json.loads(out)} == {runs[0].name: True, runs[1].name: False}
    assert f"failed runs (marked in the column failed): {runs[0].label}" in err


def test_workers_stop_when_their_parent_is_killed(tmp_path):
    """run-grid's worker processes get SIGTERM (checkpoint and stop) when run-grid dies, even by SIGKILL."""
    parent = ("import subprocess, sys, time\n"
              "from scaling.executors import stop_with_parent\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
              "preexec_fn=stop_with_parent)\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and os.path.exists(f"/proc/{child}") and "zombie" not in status_of(child):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or "zombie" in status_of(child), "the worker outlived its parent"


def status_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read().lower()
    except FileNotFoundError:
        return "gone"


def test_a_grid_holds_a_runs_lock_through_its_evaluation(tmp_path, monkeypatch):
    from dit.lock import DirectoryBusy, directory_lock
    from scaling.grid import plan
    from scaling.gridfile import parse_grid
    from scaling.run_state import run_layout
    from scaling.runs import execute_run

    run = plan(parse_grid(TINY_GRID))[0]
    layout = run_layout(tmp_path, run)
    seen = []

    def evaluate(*args, **kwargs):  # stands for training and evaluation: another `scaling train` is refused
        with pytest.raises(DirectoryBusy), directory_lock(layout.lock, "run", "training"):
            pass
        seen.append(True)

    monkeypatch.setattr("scaling.runs.train_and_evaluate", evaluate)
    execute_run(run, tmp_path, progress=False)
    assert seen


def test_one_broken_run_does_not_stop_the_others_with_one_worker(capsys, tmp_path, monkeypatch):
    from scaling.executors import RunsFailed, local
    from scaling.grid import plan
    from scaling.gridfile import parse_grid

    runs = plan(parse_grid(TINY_GRID.replace("patch_sizes: [8]", "patch_sizes: [8, 4]")))
    executed = []

    def execute(run, grid_dir, **kwargs):
        executed.append(run.name)
        if run is runs[0]:
            raise NotADirectoryError(20, "Not a directory", str(grid_dir / "runs" / run.dir_name))

    monkeypatch.setattr("scaling.executors.execute_run", execute)
    with pytest.raises(RunsFailed, match=runs[0].label):
        local(runs, tmp_path, progress=False)
    assert executed == [r.name for r in runs]
    assert f"{runs[0].label} stopped: " in capsys.readouterr().err
