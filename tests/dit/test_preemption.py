"""Stopping and restarting training: signals, the run directory's lock, non-finite states and unreadable checkpoints."""
import json
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

from dit.checkpoint import list_checkpoints
from dit.config import TrainConfig
from dit.lock import DirectoryBusy, directory_lock
from dit.train import TrainingDiverged, train
from study.layout import RunLayout
from tests.dit.test_train import TINY, scaling

SMALL = TrainConfig(model="DiT-custom/8", depth=1, hidden_size=16, num_heads=2, resolution=16, batch_size=8, steps=4,
                    log_every=1, ckpt_every=2, num_workers=0, sample_steps=2, sample_images=4, device="cpu")


def log_records(run_dir) -> list[dict]:
    return [json.loads(line) for line in RunLayout(run_dir).train_log.read_text().splitlines()]


def test_sigterm_at_a_random_step_checkpoints_there_and_the_resumed_log_equals_an_uninterrupted_one(tmp_path):
    steps = ["--steps", "30", "--ckpt-every", "10", "--log-every", "3", "--no-progress"]
    whole = scaling("train", "--run-dir", str(tmp_path / "whole"), *TINY, *steps)
    stopped_dir = tmp_path / "stopped"
    stopped = scaling("train", "--run-dir", str(stopped_dir), *TINY, *steps)
    lines = random.Random().randint(1, 8)  # a random point: after this many log lines (3 steps each)
    log = RunLayout(stopped_dir).train_log
    deadline = time.time() + 120
    while (
        stopped.poll() is None
        and time.time() < deadline
        and (not log.exists() or len(log.read_text().splitlines()) < lines)
    ):
        time.sleep(0.005)
    stopped.send_signal(signal.SIGTERM)
    out = stopped.communicate(timeout=120)[0]
    assert stopped.returncode == 128 + signal.SIGTERM, out
    at = list_checkpoints(stopped_dir)[-1][0]
    assert 0 < at < 30 and f"stopped by SIGTERM at step {at}" in out.splitlines()[-1]
    resumed = scaling("train", "--run-dir", str(stopped_dir), *TINY, *steps)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert whole.wait(timeout=300) == 0, whole.stdout.read()
    expect, got = log_records(tmp_path / "whole"), log_records(stopped_dir)
    assert [r["step"] for r in got] == [r["step"] for r in expect] == sorted({*range(3, 31, 3), 10, 20, 30})
    for key in ("loss", "mse", "vb", "grad_norm"):
        np.testing.assert_allclose([r[key] for r in got], [r[key] for r in expect], rtol=1e-6, atol=0, err_msg=key)


def test_a_second_process_on_a_locked_run_directory_is_refused_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    run = RunLayout(tmp_path)
    with (directory_lock(run.lock, "run directory", "a test"),
          pytest.raises(DirectoryBusy, match=f"in use by process {os.getpid()} on ")):
        train(SMALL, tmp_path, progress=False)
    assert list_checkpoints(tmp_path) == []
    run.lock.write_text(json.dumps({"pid": 999999, "host": "gone", "command": "scaling train"}))  # its process died
    train(SMALL, tmp_path, progress=False)
    assert "took over the lock of run directory" in capsys.readouterr().err
    assert run.lock.read_text() == ""  # released on exit


class InfiniteGradient(torch.autograd.Function):
    """Identity forward; its backward makes every gradient infinite (the loss itself stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def poison_second_step(monkeypatch):
    """The second training step of this process (a grid's first run, step 2) gets an infinite gradient; its
    loss stays finite, so only the gradient-norm check can catch it."""
    from dit import diffusion as diffusion_module

    real, calls = diffusion_module.GaussianDiffusion.training_losses, []

    def poisoned(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            terms["loss"] = InfiniteGradient.apply(terms["loss"])
        return terms

    monkeypatch.setattr(diffusion_module.GaussianDiffusion, "training_losses", poisoned)


def test_an_infinite_gradient_at_step_2_writes_no_checkpoint_and_names_the_step_and_cause(tmp_path, monkeypatch):
    poison_second_step(monkeypatch)
    with pytest.raises(TrainingDiverged, match="the gradient norm became NaN or infinite at step 2") as caught:
        train(SMALL.replace(sample_every=1), tmp_path, progress=False)
    assert (caught.value.step, caught.value.cause) == (2, "the gradient norm became NaN or infinite")
    assert list_checkpoints(tmp_path) == []
    assert [s for s, _ in RunLayout(tmp_path).previews()] == [1]  # none drawn from the state after step 2
    assert [r["step"] for r in log_records(tmp_path)] == [1]


def cut(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_latest_checkpoint_falls_back_with_a_warning_and_is_never_kept(tmp_path, capsys):
    train(SMALL, tmp_path, progress=False)  # checkpoints 2, 4
    cut(RunLayout(tmp_path).checkpoint(4))
    train(SMALL.replace(steps=6, keep_last=1), tmp_path, progress=False)
    err = capsys.readouterr().err
    assert "skipped (truncated or damaged): step_0000004.pt; resuming from step 2" in err
    assert [s for s, _ in list_checkpoints(tmp_path)] == [
        6
    ]  # 4 (cut) and 2 deleted, 6 kept: keep_last=1 counts whole files
    assert [r["step"] for r in log_records(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_all_checkpoints_truncated_refuses_to_restart_from_zero_unless_asked(tmp_path, capsys):
    train(SMALL, tmp_path, progress=False)
    for _, path in list_checkpoints(tmp_path):
        cut(path)
    with pytest.raises(ValueError, match="reads back .* re-run with --restart to train from step 0"):
        train(SMALL, tmp_path, progress=False)
    assert "step_0000004.pt, step_0000002.pt; none reads back" in capsys.readouterr().err
    train(SMALL, tmp_path, progress=False, restart=True)
    assert [r["step"] for r in log_records(tmp_path)] == [1, 2, 3, 4]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]


def test_stale_temporaries_are_removed_and_a_missing_preview_is_redrawn_on_the_next_start(tmp_path):
    train(SMALL, tmp_path, progress=False)
    run = RunLayout(tmp_path)
    stale = [run.checkpoints_dir / ".step_0000006.pt.abc123.tmp", run.samples_dir / ".step_0000004.png.x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    run.preview(4).unlink()  # a kill while the preview was written
    train(SMALL.replace(steps=5), tmp_path, progress=False)
    assert not any(p.exists() for p in stale)
    assert run.preview(4).exists()
