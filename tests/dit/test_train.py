import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from dit.checkpoint import list_checkpoints, load_model
from dit.config import TrainConfig
from dit.data import StepBatches, mnist32_split
from dit.distributed import DistInfo
from dit.precision import set_tf32
from dit.train import TrainingDiverged, check_can_start, train
from study.layout import RunLayout

TINY = ["--model", "DiT-custom/4", "--depth", "2", "--hidden-size", "32", "--num-heads", "2", "--resolution", "16",
        "--batch-size", "8", "--lr", "1e-3", "--ema-decay", "0.9", "--log-every", "1", "--sample-steps", "2",
        "--sample-images", "4", "--num-workers", "0"]


def scaling(*args, env_extra=None, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "scaling.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run_dir / "train-log.jsonl").read_text().splitlines())]


def test_resume_after_sigkill_repeats_the_uninterrupted_losses(tmp_path):
    steps = ["--steps", "40", "--ckpt-every", "5"]
    whole = scaling("train", "--run-dir", str(tmp_path / "whole"), *TINY, *steps, "--no-progress")
    killed_dir = tmp_path / "killed"
    killed = scaling("train", "--run-dir", str(killed_dir), *TINY, *steps, "--no-progress")
    deadline = time.time() + 120
    while not list_checkpoints(killed_dir) and time.time() < deadline and killed.poll() is None:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    interrupted_at = list_checkpoints(killed_dir)[-1][0]
    assert interrupted_at < 40
    resumed = scaling("train", "--run-dir", str(killed_dir), *TINY, *steps, "--no-progress")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert whole.wait(timeout=300) == 0, whole.stdout.read()
    expect, got = losses(tmp_path / "whole"), losses(killed_dir)
    assert [s for s, _ in got] == list(range(1, 41))
    np.testing.assert_allclose([v for _, v in got], [v for _, v in expect], rtol=1e-6, atol=0)


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    steps = ["--steps", "4", "--ckpt-every", "4", "--device", "cpu"]
    one = scaling("train", "--run-dir", str(tmp_path / "one"), *TINY, *steps, "--no-progress")
    two = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scaling.cli",
         "train", "--run-dir", str(tmp_path / "two"), *TINY, *steps, "--no-progress"],
        env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert two.wait(timeout=300) == 0, two.stdout.read()
    assert one.wait(timeout=300) == 0, one.stdout.read()
    np.testing.assert_allclose(
        [v for _, v in losses(tmp_path / "two")], [v for _, v in losses(tmp_path / "one")], rtol=1e-5
    )
    a, b = (
        load_model(tmp_path / "one" / "checkpoints" / "step_0000004.pt"),
        load_model(tmp_path / "two" / "checkpoints" / "step_0000004.pt"),
    )
    for k, v in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[k], v, rtol=1e-4, atol=1e-6)


def test_a_nan_loss_stops_with_the_step_and_writes_no_checkpoint(tmp_path, monkeypatch):
    from dit import diffusion as diffusion_module

    real = diffusion_module.GaussianDiffusion.training_losses
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(diffusion_module.GaussianDiffusion, "training_losses", poisoned)
    config = TrainConfig(model="DiT-custom/4", depth=1, hidden_size=16, num_heads=2, resolution=16, batch_size=8,
                         steps=10, log_every=5, ckpt_every=5, num_workers=0, sample_steps=2)
    with pytest.raises(TrainingDiverged, match="at step 3"):
        train(config, tmp_path, progress=False)
    assert list_checkpoints(tmp_path) == []


def test_step_batches_partition_each_epoch_and_split_the_global_batch():
    one = iter(StepBatches(40, 8, rank=0, world_size=1, seed=3, start_step=0))
    epoch = [i for _ in range(5) for i, _ in next(one)]
    assert sorted(epoch) == list(range(40))
    r0, r1 = iter(StepBatches(40, 8, 0, 2, 3, 0)), iter(StepBatches(40, 8, 1, 2, 3, 0))
    first = [i for i, _ in next(iter(StepBatches(40, 8, 0, 1, 3, 0)))]
    assert [i for i, _ in next(r0)] + [i for i, _ in next(r1)] == first
    resumed = iter(StepBatches(40, 8, 0, 1, 3, start_step=7))
    steps = iter(StepBatches(40, 8, 0, 1, 3, 0))
    for _ in range(7):
        next(steps)
    assert next(resumed) == next(steps)
    with pytest.raises(ValueError, match="fewer than the batch size"):
        StepBatches(4, 8, 0, 1, 0, 0)


def test_changing_the_recipe_of_an_existing_run_is_refused(tmp_path):
    config = TrainConfig(model="DiT-custom/8", depth=1, hidden_size=16, num_heads=2, resolution=16, batch_size=8,
                         steps=2, log_every=1, ckpt_every=2, num_workers=0, sample_steps=2)
    train(config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr=0.0001, not 0.001"):
        train(config.replace(lr=1e-3), tmp_path, progress=False)
    train(config.replace(steps=3), tmp_path, progress=False)  # extending a run is allowed
    assert list_checkpoints(tmp_path)[-1][0] == 3


@pytest.fixture(scope="module")
def trained_mnist_run(tmp_path_factory):
    """A tiny DiT trained on MNIST-32 for 300 steps on the CPU (about 20 s)."""
    run_dir = tmp_path_factory.mktemp("mnist")
    config = TrainConfig(model="DiT-T/8", steps=300, batch_size=32, lr=1e-3, ema_decay=0.99, log_every=25,
                         ckpt_every=300, sample_steps=10, num_workers=0)
    train(config, run_dir, progress=False)
    return run_dir


def test_a_tiny_dit_learns_mnist_digits(trained_mnist_run, tmp_path):
    log = [json.loads(line) for line in (trained_mnist_run / "train-log.jsonl").read_text().splitlines()]
    first, last = log[0]["mse"], log[-1]["mse"]
    assert last < 0.5 * first, f"mse went from {first:.3f} to {last:.3f}"
    assert (trained_mnist_run / "samples" / "step_0000300.png").exists()
    assert (trained_mnist_run / "samples" / "progress.gif").exists()

    proc = scaling("sample", "--ckpt", str(trained_mnist_run / "checkpoints" / "step_0000300.pt"), "--num", "40",
                   "--steps", "25", "--batch-size", "16", "--out", str(tmp_path / "samples.npz"), "--cfg-scale", "2",
                   "--grid", str(tmp_path / "grid.png"))
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    with np.load(tmp_path / "samples.npz") as data:
        assert sorted(data.files) == ["arr_0", "arr_1"]
        images, labels = data["arr_0"], data["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (40, 32, 32, 1)
    assert labels.dtype == np.int64 and labels.shape == (40,) and labels.max() < 10
    assert (tmp_path / "grid.png").exists()
    # The pixel histogram of the samples moves toward the digits' (mostly black, some white strokes)
    real = mnist32_split("test")[0][:40].ravel() / 255.0
    noise = np.clip(np.random.default_rng(0).normal(0.5, 0.5, real.size), 0, 1)
    gap_samples = scipy.stats.wasserstein_distance(images.ravel() / 255.0, real)
    gap_noise = scipy.stats.wasserstein_distance(noise, real)
    assert gap_samples < 0.3 * gap_noise, (gap_samples, gap_noise)


def test_sampling_is_resumable_and_independent_of_interruptions(trained_mnist_run, tmp_path):
    from dit.sample import SampleConfig, generate_samples

    ckpt = trained_mnist_run / "checkpoints" / "step_0000300.pt"
    config = SampleConfig(num=10, steps=5, batch_size=4, labels=(3, 7))
    whole = generate_samples(ckpt, tmp_path / "whole.npz", config, progress=False)
    shards = tmp_path / ".part.npz.shards"
    generate_samples(ckpt, tmp_path / "part.npz", config, progress=False)
    # simulate an interruption: the merged file is gone and only shard 1 survived
    (tmp_path / "part.npz").unlink()
    shards.mkdir()
    with np.load(whole) as data:
        np.savez(shards / "000001.npz", arr_0=data["arr_0"][4:8], arr_1=data["arr_1"][4:8])
    generate_samples(ckpt, tmp_path / "part.npz", config, progress=False)
    with np.load(whole) as a, np.load(tmp_path / "part.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"]) and list(a["arr_1"]) == [3, 7] * 5
    assert not shards.exists()


@pytest.fixture
def tf32_flags():
    """TF32 flags set off for the test and restored after it; yields a reader of both."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_set_tf32_switches_cuda_matmuls_and_convolutions_only_for_cuda(tf32_flags):
    set_tf32(torch.device("cpu"), True)
    assert tf32_flags() == (False, False)
    set_tf32("cuda", True)
    assert tf32_flags() == (True, True)
    set_tf32(torch.device("cuda:0"), False)
    assert tf32_flags() == (False, False)


def test_checking_a_run_can_start_leaves_tf32_alone(tmp_path, tf32_flags):
    dist = DistInfo(device=torch.device("cuda"))
    check_can_start(TrainConfig(model="DiT-S/8", batch_size=4, tf32=True), RunLayout(tmp_path / "run"), dist)
    assert tf32_flags() == (False, False)
