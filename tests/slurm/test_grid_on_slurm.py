"""A two-model grid through the slurm executor against a real SLURM: the local executor's numbers, preemption
by `scontrol requeue` and by submitit's signal, a time limit shorter than the run, a two-task job, `scancel`.
Run with `python -m pytest -m slurm` after `tests/slurm/cluster.sh start`."""
import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from scaling.slurm import read_jobs
from study.layout import GridLayout
from tests.slurm.tools import comparable, run_grid, scaling, wait_until, write_grid

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("cluster")]

STEPS, EVERY = 60, 30
TIME_LIMIT_TRAIN_S = 75  # training of the run that times out, over allocations of a minute
RUNS = ("DiT-T/8", "DiT-T/4")


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """The grid through the local executor (two runs at once, one thread each): the numbers to match."""
    folder = tmp_path_factory.mktemp("local")
    start = time.monotonic()
    done = run_grid(write_grid(folder, steps=STEPS, every=EVERY), folder / "grid", "--executor", "local",
                    "--cpu-workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"local executor: the grid in {time.monotonic() - start:.1f} s")
    return folder / "grid"


def logged_steps(grid_dir, run: str) -> list[int]:
    log = GridLayout(grid_dir).run(run).train_log
    return [json.loads(line)["step"] for line in log.read_text().splitlines()]


def last_step(grid_dir, run: str) -> int:
    log = GridLayout(grid_dir).run(run).train_log
    return logged_steps(grid_dir, run)[-1] if log.exists() and log.read_text().strip() else 0


def restarts(job_id: str) -> int:
    """How often SLURM started the job again (scontrol's Restarts=N)."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    return int(shown.split("Restarts=")[1].split()[0])


def detach(path, out) -> dict[str, str]:
    """Submit the grid and return its {run: job id}."""
    submitted = run_grid(path, out, "--detach")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "detached" in submitted.stdout
    return read_jobs(out)


def test_the_grid_through_slurm_gives_the_local_executors_numbers(tmp_path, local_grid):
    start = time.monotonic()
    done = run_grid(write_grid(tmp_path, steps=STEPS, every=EVERY), tmp_path / "grid")
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"slurm executor: the grid in {time.monotonic() - start:.1f} s")
    assert "submitted 2 jobs" in done.stdout
    pd.testing.assert_frame_equal(comparable(tmp_path / "grid"), comparable(local_grid))


def test_preempted_runs_checkpoint_requeue_once_and_resume_to_the_same_numbers(tmp_path, local_grid):
    out = tmp_path / "grid"
    jobs = detach(write_grid(tmp_path, steps=STEPS, every=EVERY), out)
    for run in RUNS:
        wait_until(lambda run=run: last_step(out, run) >= 2, 120, f"{run} to train 2 steps")
    subprocess.run(["scontrol", "requeue", jobs["DiT-T/8"]], check=True, timeout=30)  # a preempting scheduler
    subprocess.run(["scancel", "--signal=USR2", jobs["DiT-T/4"]], check=True, timeout=30)  # submitit's signal
    done = run_grid(write_grid(tmp_path, steps=STEPS, every=EVERY), out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "waiting for 2 jobs submitted before" in done.stdout and "\nsubmitted" not in done.stdout
    assert [restarts(jobs[run]) for run in RUNS] == [1, 1]
    for run, signal in (("DiT-T/8", "SIGTERM"), ("DiT-T/4", "SIGUSR2")):
        assert logged_steps(out, run) == list(range(2, STEPS + 1, 2)), f"{run}: a step repeated or missing"
        log = (out / "slurm" / jobs[run] / f"{jobs[run]}_0_log.err").read_text()
        assert f"caught {signal}: stopping after this step with a checkpoint" in log, log
    pd.testing.assert_frame_equal(comparable(out), comparable(local_grid))


def seconds_per_step(grid_dir, run: str) -> float:
    last = json.loads(GridLayout(grid_dir).run(run).train_log.read_text().splitlines()[-1])
    return last["wall_seconds"] / last["step"]


def test_a_run_longer_than_its_time_limit_finishes_over_several_allocations(tmp_path, local_grid):
    # DiT-T/4 alone gets one minute a job; SLURM warns it up to 30 s before `signal_lead`, so 10 s leaves the job
    # time to start. Its steps: about TIME_LIMIT_TRAIN_S of training at this machine's speed, over one allocation.
    steps = 2 * math.ceil(TIME_LIMIT_TRAIN_S / seconds_per_step(local_grid, "DiT-T/4") / 2)
    slurm = ", overrides: [{models: [DiT-T/4], time: 1, signal_lead: 10}]"
    path = write_grid(tmp_path, name="time-limit", steps=steps, every=steps, slurm=slurm)
    done = run_grid(path, tmp_path / "grid", timeout=480)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = read_jobs(tmp_path / "grid")
    assert restarts(jobs["DiT-T/4"]) >= 1, f"DiT-T/4 trained {steps} steps within one allocation: raise TRAIN_S"
    assert logged_steps(tmp_path / "grid", "DiT-T/4") == list(range(2, steps + 1, 2))


def test_a_two_task_job_gives_the_numbers_of_torchrun(tmp_path, local_grid):
    slurm = ", overrides: [{models: [DiT-T/8], tasks_per_node: 2}]"  # DiT-T/4 as before: one task
    path = write_grid(tmp_path, steps=STEPS, every=EVERY, slurm=slurm)
    done = run_grid(path, tmp_path / "grid")
    assert done.returncode == 0, done.stdout + done.stderr
    torchrun = tmp_path / "torchrun"
    claimed = run_grid(path, torchrun, "--dry-run", timeout=60)  # writes the grid into the directory, runs nothing
    assert claimed.returncode == 0, claimed.stdout + claimed.stderr
    reference = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scaling.cli",
         "run-one", str(torchrun), "DiT-T/8", "--no-report", "--no-progress"],
        capture_output=True, text=True, timeout=240, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert reference.returncode == 0, reference.stdout + reference.stderr
    got = comparable(tmp_path / "grid")
    pd.testing.assert_frame_equal(got[got["run"] == "DiT-T/8"].reset_index(drop=True), comparable(torchrun))
    expect = comparable(local_grid)
    pd.testing.assert_frame_equal(got[got["run"] == "DiT-T/4"].reset_index(drop=True),
                                  expect[expect["run"] == "DiT-T/4"].reset_index(drop=True))


def test_a_cancelled_run_shows_as_cancelled_and_a_rerun_resubmits_only_it(tmp_path):
    out = tmp_path / "grid"
    path = write_grid(tmp_path, steps=STEPS, every=EVERY)
    jobs = detach(path, out)
    wait_until(lambda: last_step(out, "DiT-T/4") >= 4, 120, "DiT-T/4 to train 4 steps")
    subprocess.run(["scancel", jobs["DiT-T/4"]], check=True, timeout=30)
    wait_until(lambda: "cancelled" in scaling("status", out, timeout=60).stdout, 60, "status to say cancelled")
    status = scaling("status", out, timeout=60).stdout
    assert f"cancelled (job {jobs['DiT-T/4']}" in status, status
    done = run_grid(path, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted 1 jobs" in done.stdout, done.stdout
    assert read_jobs(out)["DiT-T/8"] == jobs["DiT-T/8"] and read_jobs(out)["DiT-T/4"] != jobs["DiT-T/4"]
    assert logged_steps(out, "DiT-T/4") == list(range(2, STEPS + 1, 2))
