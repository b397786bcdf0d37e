"""What the `slurm` tests share: the tiny grid, the `scaling` command in a child process, waits with a timeout."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.schema import read_results

GRID_TIMEOUT_S = 240  # one grid command through SLURM, its jobs' waits included

# Two models of the demo preset (DiT-T/8, DiT-T/4, MNIST at 16 px), trained briefly, scored with a tiny evaluation.
GRID = """
name: {name}
description: two tiny models of the demo preset, for the tests against a real SLURM
models: {{sizes: [T], patch_sizes: [8, 4], blocks: [adaln-zero]}}
data: {{dataset: mnist32, codec: identity, resolution: 16, channels: 1, num_classes: 10}}
train: {{batch_size: 16, lr: 2.0e-3, steps: {steps}, ema_decay: 0.9, ckpt_every: 10, log_every: 2, sample_steps: 2,
        sample_images: 4, device: cpu, num_workers: 0}}
eval: {{every: {every}, features: mnist, num_samples: 16, batch_size: 16, sampler: ddim, sampling_steps: [2],
       cfg_scales: [1.0], validation_items: 16, validation_buckets: 2}}
executor:
  kind: slurm
  slurm: {{gpus_per_node: 0, cpus_per_task: 1, time: 10{slurm}}}
"""


def write_grid(folder: Path, name="slurm-tiny", steps=40, every=20, slurm="") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(GRID.format(name=name, steps=steps, every=every, slurm=slurm))
    return path


def scaling(*args, timeout=GRID_TIMEOUT_S) -> subprocess.CompletedProcess:
    """`scaling ARGS` in a child process, its output as text (stdout then stderr)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "scaling.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def run_grid(path, out, *options, timeout=GRID_TIMEOUT_S) -> subprocess.CompletedProcess:
    return scaling("run-grid", path, "--out", out, "--no-report", "--no-progress", *options, timeout=timeout)


def wait_until(predicate, timeout: float, what: str):
    """Poll `predicate` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def comparable(grid_dir):
    """The results table without what differs between two equal runs (wall-clock seconds)."""
    return read_results(grid_dir).drop(columns=["wall_seconds"]).sort_values(["run", "step"]).reset_index(drop=True)
