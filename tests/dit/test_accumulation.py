"""Gradient accumulation and several nodes: the same losses and weights as one process on the whole batch."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from dit.checkpoint import load_model
from dit.config import TrainConfig
from dit.distributed import slurm_rank_env
from dit.train import train
from tests.dit.test_train import TINY, losses, scaling

STEPS = ["--steps", "3", "--ckpt-every", "3", "--device", "cpu", "--no-progress"]


def assert_same_run(a, b, rtol=1e-5):
    np.testing.assert_allclose([v for _, v in losses(b)], [v for _, v in losses(a)], rtol=rtol)
    wa, wb = (load_model(d / "checkpoints" / "step_0000003.pt").state_dict() for d in (a, b))
    for k, v in wa.items():
        torch.testing.assert_close(wb[k], v, rtol=1e-4, atol=1e-6)


def test_micro_batches_of_one_process_give_the_losses_and_weights_of_the_whole_batch(tmp_path):
    config = TrainConfig(
        model="DiT-custom/4",
        depth=2,
        hidden_size=32,
        num_heads=2,
        resolution=16,
        batch_size=8,
        lr=1e-3,
        steps=3,
        log_every=1,
        ckpt_every=3,
        num_workers=0,
        sample_steps=2,
        sample_images=4,
        device="cpu",
    )
    train(config, tmp_path / "whole", progress=False)
    train(config.replace(micro_batch_size=2), tmp_path / "split", progress=False)
    assert_same_run(tmp_path / "whole", tmp_path / "split")
    unsplit = [v for _, v in losses(tmp_path / "whole")]
    assert len(set(unsplit)) == 3  # the steps differ: the comparison is not of constants


def torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "scaling.cli"]


def test_micro_batches_on_two_gloo_processes_give_the_one_process_run(tmp_path):
    one = scaling("train", "--run-dir", str(tmp_path / "one"), *TINY, *STEPS)
    two = subprocess.Popen(
        [
            *torchrun("--standalone", "--nproc_per_node=2"),
            "train",
            "--run-dir",
            str(tmp_path / "two"),
            *TINY,
            *STEPS,
            "--micro-batch-size",
            "2",
        ],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert two.wait(timeout=300) == 0, two.stdout.read()
    assert one.wait(timeout=300) == 0, one.stdout.read()
    assert_same_run(tmp_path / "one", tmp_path / "two")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_one_process_each_give_the_one_process_run(tmp_path):
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                *torchrun(
                    "--nnodes",
                    "2",
                    "--nproc_per_node",
                    "1",
                    "--node_rank",
                    str(rank),
                    "--master_addr",
                    "127.0.0.1",
                    "--master_port",
                    str(port),
                ),
                "train",
                "--run-dir",
                str(tmp_path / "two"),
                *TINY,
                *STEPS,
            ],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    one = scaling("train", "--run-dir", str(tmp_path / "one"), *TINY, *STEPS)
    for node in nodes:
        assert node.wait(timeout=300) == 0, node.stdout.read()
    assert one.wait(timeout=300) == 0, one.stdout.read()
    assert_same_run(tmp_path / "one", tmp_path / "two")


def test_srun_tasks_get_torchruns_ranks_with_the_gpu_of_their_local_rank():
    # task 5 of 8 on two nodes of 4 GPUs: global rank 5, local rank 1 (the official release used cuda:5 here)
    env = dict(SLURM_PROCID="5", SLURM_LOCALID="1", SLURM_NTASKS="8", SLURM_STEP_NUM_TASKS="8", SLURM_STEP_ID="0",
               SLURM_JOB_NODELIST="gpu[003-004]", SLURM_JOB_ID="1234")
    assert slurm_rank_env(env) == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "gpu003",
                                   "MASTER_PORT": "21234"}
    assert slurm_rank_env({**env, "RANK": "5"}) == {}  # torchrun's (or submitit's export) wins
    batch_script = {k: v for k, v in env.items() if not k.startswith("SLURM_STEP")}
    assert slurm_rank_env(batch_script) == {}  # the batch script itself is one process


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused():
    with pytest.raises(ValueError, match="micro_batch_size 3 does not divide batch_size 8"):
        TrainConfig(batch_size=8, micro_batch_size=3)
