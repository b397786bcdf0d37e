import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from scaling.grid import plan
from scaling.gridfile import parse_grid
from scaling.run_state import run_state
from scaling.runs import claim_grid_dir
from study.schema import read_results

GRID = """
name: {name}
models:
  include:
    - {{name: DiT-custom/8, depth: 1, hidden_size: 32, num_heads: 2}}
    - {{name: DiT-custom/4, depth: 1, hidden_size: 32, num_heads: 2}}
data: {{dataset: mnist32, codec: identity, resolution: 32, channels: 1, num_classes: 10}}
train: {{batch_size: 8, lr: 1.0e-3, steps: {steps}, ckpt_every: 2, log_every: 2, sample_steps: 2, sample_images: 4,
        device: cpu, num_workers: 0, ema_decay: 0.9}}
eval: {{every: {every}, features: mnist, num_samples: 8, sampler: ddim, sampling_steps: [3], batch_size: 8}}
executor: {{kind: {kind}, cpu_workers: {workers}{slurm}}}
"""


def grid_file(tmp_path, name="tiny", steps=8, every=4, kind="local", slurm="", workers=1):
    path = tmp_path / f"{name}.yaml"
    path.write_text(GRID.format(name=name, steps=steps, every=every, kind=kind, slurm=slurm, workers=workers))
    return path


def run_grid(path, out, *options, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", "run-grid", str(path), "--out", str(out), "--no-report", "--no-progress",
         *options],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_seconds"]).sort_values(["run", "step"]).reset_index(drop=True)


def test_a_grid_killed_in_its_second_run_resumes_to_the_same_table(tmp_path):
    path = grid_file(tmp_path, steps=12, every=4)
    whole = run_grid(path, tmp_path / "whole")
    killed = run_grid(path, tmp_path / "killed")
    second = tmp_path / "killed" / "runs" / "DiT-custom-4-d1-w32-h2" / "checkpoints"
    deadline = time.time() + 300
    while killed.poll() is None and time.time() < deadline and not list(second.glob("step_*.pt")):
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the grid finished before it could be killed"
    runs = plan(parse_grid(path.read_text()))
    assert [run_state(tmp_path / "killed", r).state for r in runs] == ["done", "training"]
    resumed = run_grid(path, tmp_path / "killed")
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    assert "took over the lock of grid directory" in resumed.stdout.readline()  # the killed grid's leftover lock file
    assert "1 done, 1 started, 0 not started of 2 runs" in resumed.stdout.readline()  # what it found on disk
    assert whole.wait(timeout=600) == 0, whole.stdout.read()
    expect, got = read_results(tmp_path / "whole"), read_results(tmp_path / "killed")
    assert len(expect) == 6  # 2 runs x evaluation points 4, 8, 12
    pd.testing.assert_frame_equal(comparable(got), comparable(expect))
    assert (got["train_compute_gflops"] == got["gflops"] * 8 * got["step"] * 3).all()


def test_a_directory_of_another_grid_is_refused(tmp_path):
    claim_grid_dir(tmp_path / "out", parse_grid(grid_file(tmp_path, name="first").read_text()))
    with pytest.raises(ValueError, match="holds the runs of grid 'first'"):
        claim_grid_dir(tmp_path / "out", parse_grid(grid_file(tmp_path, name="second").read_text()))


def test_eta_fits_a_line_to_timed_runs_and_waits_for_two_sizes(tmp_path):
    from scaling.flops import gflops
    from scaling.progress import eta_seconds
    from scaling.run_state import RunState

    runs = plan(parse_grid(grid_file(tmp_path, steps=100).read_text()))  # two sizes: p = 8 and p = 4
    f8, f4 = (gflops(r.dit_config()) for r in runs)

    def state(run, kind, step, sps):
        return RunState(run.name, kind, step, 100, 0, 1, None, sps)

    only_one_timed = [state(runs[0], "training", 40, 0.5), state(runs[1], "pending", 0, None)]
    assert eta_seconds(only_one_timed, runs) is None  # cannot split overhead from rate with one size
    both_timed = [state(runs[0], "done", 100, 0.5), state(runs[1], "training", 30, 0.9)]
    assert eta_seconds(both_timed, runs) == pytest.approx(70 * 0.9)
    # a third, unstarted run the size of the first: the line through the two timed sizes at its Gflops
    third = dataclasses.replace(runs[0], name="copy-of-p8")

    def line_at(f):
        return 0.5 + (0.9 - 0.5) * (f - f8) / (f4 - f8)

    states = both_timed + [RunState("copy-of-p8", "pending", 0, 100, 0, 1, None, None)]
    assert eta_seconds(states, runs + [third]) == pytest.approx(70 * 0.9 + 100 * line_at(f8))


def test_the_report_is_refreshed_at_most_every_interval_and_a_failed_render_is_one_warning(
    tmp_path, monkeypatch, capsys
):
    import os

    from scaling.commands.report import refresh_report

    calls = []
    monkeypatch.setattr("reports.render.render_report", lambda grid_dir, formats: calls.append(grid_dir))
    html = tmp_path / "report" / "report.html"
    html.parent.mkdir()
    html.write_text("rendered just now")
    refresh_report(tmp_path, interval=60.0)
    assert calls == []
    os.utime(html, (time.time() - 61, time.time() - 61))
    refresh_report(tmp_path, interval=60.0)
    assert calls == [tmp_path]

    def crash(grid_dir, formats):
        raise RuntimeError("no fonts")

    monkeypatch.setattr("reports.render.render_report", crash)
    refresh_report(tmp_path)
    assert capsys.readouterr().out == "warning: the report was not refreshed: RuntimeError: no fonts\n"


def _tiny_grid(tmp_path, name: str, *, drop: str = "", add: str = ""):
    text = GRID.format(name=name, steps=4, every=4, kind="local", slurm="", workers=1).replace(drop, "") + add
    spec = parse_grid(text)
    claim_grid_dir(tmp_path / name, spec)
    return spec, tmp_path / name


def test_a_grid_with_budgets_trains_each_model_to_each_budget_and_evaluates_it_once(tmp_path):
    import json
    import math

    from scaling.executors import local
    from scaling.flops import gflops
    from scaling.run_state import run_layout

    probe = plan(parse_grid(GRID.format(name="p", steps=4, every=4, kind="local", slurm="", workers=1)))
    per_step8 = gflops(probe[0].dit_config()) * 8 * 3  # Gflops x batch 8 x 3 of DiT-custom/8
    budgets = [2.5 * per_step8, 6.5 * per_step8]  # custom/8 reaches them at steps 3 and 7
    spec, out = _tiny_grid(tmp_path, "iso", drop=" steps: 4,", add=f"budgets: [{budgets[0]!r}, {budgets[1]!r}]\n")
    runs = plan(spec)
    local(runs, out, progress=False)
    df = read_results(out)
    for run, planned in zip(runs, probe, strict=True):
        per_step = gflops(planned.dit_config()) * 8 * 3
        steps = [math.ceil(b / per_step) for b in budgets]
        rows = df[df["run"] == run.name].sort_values("step")
        assert rows["step"].tolist() == steps and rows["budget"].tolist() == budgets  # each budget once, at its step
        assert (rows["train_compute_gflops"] >= rows["budget"]).all()
        assert (rows["train_compute_gflops"] - per_step < rows["budget"]).all()  # one step less would not reach it
        log = [json.loads(line) for line in run_layout(out, run).train_log.read_text().splitlines()]
        assert log[-1]["step"] == steps[-1]  # trained to the largest budget's step, no further
        assert rows["val_loss"].notna().all() and (rows["val_loss"] > rows["val_mse"]).all()
        record = json.loads(run_layout(out, run).validation_record(steps[-1]).read_text())
        assert rows["val_loss"].iloc[-1] == record["val_loss"] and set(record) >= {"val_loss_t0", "val_loss_t3"}
    assert [math.ceil(b / per_step8) for b in budgets] == [3, 7]
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval/*/*.json")}
    local(runs, out, progress=False)  # done: nothing evaluated again
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval/*/*.json")} == before


def test_two_seeds_of_one_model_are_two_runs_with_different_losses(tmp_path):
    import json

    from scaling.executors import local

    spec, out = _tiny_grid(
        tmp_path,
        "seeds",
        drop="    - {name: DiT-custom/4, depth: 1, hidden_size: 32, num_heads: 2}\n",
        add="seeds: [0, 1]\n",
    )
    runs = plan(spec)
    assert [r.dir_name for r in runs] == ["DiT-custom-8-d1-w32-h2-seed0", "DiT-custom-8-d1-w32-h2-seed1"]
    local(runs, out, progress=False)
    df = read_results(out)
    assert df["run"].unique().tolist() == ["DiT-custom/8-d1-w32-h2"] and df["seed"].tolist() == [0, 1]
    assert df["val_loss"].nunique() == 2
    assert df["sampling_seed"].tolist() == [0, 1]  # each run samples with its own seed, recorded in the table
    losses = [
        json.loads((out / "runs" / r.dir_name / "train-log.jsonl").read_text().splitlines()[-1])["loss"] for r in runs
    ]
    assert losses[0] != losses[1]


def test_a_second_run_grid_on_the_same_directory_is_refused_while_the_first_runs(tmp_path):
    path = grid_file(tmp_path, steps=8, every=4)
    first = run_grid(path, tmp_path / "out")
    lock = tmp_path / "out" / "grid.lock"
    deadline = time.time() + 120
    while first.poll() is None and time.time() < deadline and not (lock.exists() and lock.read_text()):
        time.sleep(0.01)
    second = run_grid(path, tmp_path / "out")
    out = second.communicate(timeout=120)[0]
    still_running = first.poll() is None
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert still_running, "the first grid ended before the second started"
    assert second.returncode == 2, out
    assert out.strip().splitlines() == [
        f"scaling run-grid: error: grid directory {tmp_path / 'out'} is in use by process "
        f"{first.pid} on {socket.gethostname()} (scaling run-grid); "
        f"wait for it to end or stop it (this lock: {lock})"
    ]


def test_a_diverged_run_is_marked_failed_evaluates_nothing_and_the_grid_goes_on(tmp_path, monkeypatch, capsys):
    from scaling.cli import build_parser
    from scaling.executors import RunsFailed, local
    from tests.dit.test_preemption import poison_second_step

    poison_second_step(monkeypatch)
    spec = parse_grid(grid_file(tmp_path, steps=4, every=4).read_text())
    runs, out = plan(spec), tmp_path / "out"
    claim_grid_dir(out, spec)
    with pytest.raises(RunsFailed, match=f"runs failed: {runs[0].name}"):
        local(runs, out, progress=False)
    diverged, other = (run_state(out, r) for r in runs)
    assert (diverged.state, diverged.step, diverged.evaluated) == ("failed", 0, 0)
    assert diverged.failure["step"] == 2 and diverged.failure["cause"] == "the gradient norm became NaN or infinite"
    assert other.state == "done"
    assert list(read_results(out)["run"]) == [runs[1].name]  # nothing of the diverged run was evaluated
    capsys.readouterr()
    args = build_parser().parse_args(["status", str(out)])
    args.func(args)
    text = capsys.readouterr().out
    assert f"{runs[0].name} failed at step 2: the gradient norm became NaN or infinite" in text
    assert "1 done, 0 started, 1 failed, 0 not started of 2 runs" in text


def test_a_grid_that_asks_for_kid_has_it_in_its_results_table(tmp_path):
    """`eval: {metrics: [fid, kid]}`: KID is computed at each point and lands in the table; sFID, not asked, is NA."""
    from scaling.executors import local

    text = GRID.format(name="kid", steps=2, every=2, kind="local", slurm="", workers=1)
    text = text.replace("batch_size: 8}\n", "batch_size: 8, metrics: [fid, kid]}\n")  # the eval line's end
    spec = parse_grid(text)
    claim_grid_dir(tmp_path / "kid", spec)
    runs = plan(spec)[:1]
    local(runs, tmp_path / "kid", progress=False)
    df = read_results(tmp_path / "kid")
    assert len(df) == 1 and df["kid"].notna().all() and df["fid"].notna().all()
    assert df["sfid"].isna().all() and df["precision"].isna().all()


def test_cpu_workers_train_runs_at_once_costliest_first_to_the_same_table(tmp_path):
    path = grid_file(tmp_path, steps=8, every=4)
    sequential, parallel = run_grid(path, tmp_path / "one"), run_grid(path, tmp_path / "two", "--cpu-workers", "2")
    assert sequential.wait(timeout=600) == 0, sequential.stdout.read()
    assert parallel.wait(timeout=600) == 0, parallel.stdout.read()
    lines = parallel.stdout.read().splitlines()
    started = [line.split()[0] for line in lines if " started (log: " in line]
    assert started == ["DiT-custom/4-d1-w32-h2", "DiT-custom/8-d1-w32-h2"]  # 4x the Gflops of p = 8 goes first
    logs = tmp_path / "two" / "logs"
    assert sorted(p.name for p in logs.glob("*.log")) == ["DiT-custom-4-d1-w32-h2.log", "DiT-custom-8-d1-w32-h2.log"]
    from scaling.executors import usable_cores

    hints = list(logs.glob("*.threads"))  # the run still going when the other ended was handed every core
    assert len(hints) == 1 and hints[0].read_text().strip() == str(usable_cores())
    one, two = (comparable(read_results(tmp_path / name)) for name in ("one", "two"))
    pd.testing.assert_frame_equal(two, one)


def test_a_stop_signal_reaches_each_cpu_worker_once_and_each_checkpoints_where_it_stopped(tmp_path):
    path = grid_file(tmp_path, steps=4000, every=4000, workers=2)
    grid = run_grid(path, tmp_path / "out")
    logs = [tmp_path / "out" / "runs" / name / "train-log.jsonl" for name in ("DiT-custom-8-d1-w32-h2",
                                                                               "DiT-custom-4-d1-w32-h2")]
    deadline = time.time() + 120
    while grid.poll() is None and time.time() < deadline and not all(log.exists() for log in logs):
        time.sleep(0.05)
    grid.send_signal(signal.SIGINT)
    out = grid.communicate(timeout=120)[0]
    assert grid.returncode == 128 + signal.SIGINT, out
    assert "each running run stops after its step with a checkpoint" in out
    assert "stopped by SIGINT (DiT-custom/" in out.splitlines()[-1]
    runs = plan(parse_grid(path.read_text()))
    states = [run_state(tmp_path / "out", r) for r in runs]
    assert [s.state for s in states] == ["training", "training"] and all(0 < s.step < 4000 for s in states)
    for run, state in zip(runs, states, strict=True):  # each stopped once, at its own step, with a checkpoint there
        log = (tmp_path / "out" / "logs" / f"{run.dir_name}.log").read_text()
        assert log.count("caught SIGINT") == 1 and f"stopped by SIGINT at step {state.step} with a checkpoint" in log


def test_cpu_slots_share_the_cores_and_gpu_slots_are_disjoint_groups(monkeypatch):
    from scaling import executors

    monkeypatch.setattr(executors, "usable_cores", lambda: 8)
    assert executors.cpu_slots(3) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 3
    assert executors.cpu_slots(16)[0]["OMP_NUM_THREADS"] == "1"
    monkeypatch.setattr(executors, "_visible_gpus", lambda: ["4", "5", "6"])
    assert executors.gpu_slots(2) == [{"CUDA_VISIBLE_DEVICES": "4,5"}]
    assert executors.gpu_slots(1) == [{"CUDA_VISIBLE_DEVICES": g} for g in "456"]
    with pytest.raises(ValueError, match="runs ask for 4 GPUs each but 3 are visible"):
        executors.gpu_slots(4)


def test_a_worker_that_fails_is_named_with_its_last_line_and_the_others_finish(tmp_path):
    from dit.lock import directory_lock

    path = grid_file(tmp_path, steps=4, every=4, workers=2)
    claim_grid_dir(tmp_path / "out", parse_grid(path.read_text()))
    busy = tmp_path / "out" / "runs" / "DiT-custom-4-d1-w32-h2"
    with directory_lock(busy / "run.lock", f"run directory {busy}", "a test"):  # another process trains it
        grid = run_grid(path, tmp_path / "out")
        out = grid.communicate(timeout=600)[0]
    assert grid.returncode == 2, out
    lines = out.splitlines()
    failed = [line for line in lines if line.startswith("DiT-custom/4-d1-w32-h2 failed (exit 2): ")]
    assert len(failed) == 1 and f"run directory {busy} is in use by process {os.getpid()}" in failed[0]
    assert lines[-1].startswith("scaling run-grid: error: runs failed: DiT-custom/4-d1-w32-h2;")
    runs = plan(parse_grid(path.read_text()))
    assert [run_state(tmp_path / "out", r).state for r in runs] == ["done", "pending"]
