"""Power-function EMA profiles and their post-hoc reconstruction (EDM2), checked against independent computations."""
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import torch

from dit.checkpoint import list_checkpoints, read_checkpoint
from dit.config import TrainConfig
from dit.ema import (
    SIGMA_REL_MAX,
    PowerEMA,
    exponential_sigma_rel,
    gamma_of,
    power_beta,
    profile_inner_product,
    sigma_rel_of,
)
from dit.posthoc_ema import reconstruct
from dit.train import train
from scaling.cli import main
from study.layout import RunLayout
from tests.dit.test_train import TINY, scaling

THREE = (0.05, 0.07, 0.10)


def profile(tau, t, gamma):
    """EDM2's power-function averaging density on [0, t]."""
    return (gamma + 1) * tau**gamma / t ** (gamma + 1) if tau <= t else 0.0


@pytest.mark.parametrize("t_a,g_a,t_b,g_b", [(100, 6.9, 100, 16.9), (40, 3.0, 100, 16.9), (250, 0.0, 90, 30.5),
                                             (1000, 50.0, 700, 2.5)])
def test_closed_form_inner_products_equal_numerical_integration(t_a, g_a, t_b, g_b):
    low = min(t_a, t_b)
    numeric, _ = scipy.integrate.quad(lambda x: profile(x, t_a, g_a) * profile(x, t_b, g_b), 0, low,
                                      epsabs=0, epsrel=1e-13, limit=200)
    assert profile_inner_product(t_a, g_a, t_b, g_b) == pytest.approx(numeric, rel=1e-9, abs=0)
    assert profile_inner_product(t_b, g_b, t_a, g_a) == pytest.approx(numeric, rel=1e-9, abs=0)


@pytest.mark.parametrize("sigma_rel", [0.01, 0.05, 0.1, 0.2, SIGMA_REL_MAX])
def test_gamma_of_gives_the_profile_whose_relative_std_is_sigma_rel(sigma_rel):
    gamma = gamma_of(sigma_rel)
    mean = scipy.integrate.quad(lambda x: x * profile(x, 1.0, gamma), 0, 1, epsabs=0, epsrel=1e-12)[0]
    var = scipy.integrate.quad(lambda x: (x - mean) ** 2 * profile(x, 1.0, gamma), 0, 1, epsabs=0, epsrel=1e-12)[0]
    assert math.sqrt(var) == pytest.approx(sigma_rel, rel=1e-7)
    by_bisection = scipy.optimize.brentq(lambda g: sigma_rel_of(g) - sigma_rel, 0, 1e4) if sigma_rel < 0.288 else 0
    assert gamma == pytest.approx(by_bisection, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("sigma_rel", [0.0, -0.1, 0.29, float("nan")])
def test_lengths_no_power_profile_reaches_are_refused(sigma_rel):
    with pytest.raises(ValueError, match="outside"):
        gamma_of(sigma_rel)


def test_power_ema_updates_weigh_each_step_as_the_unrolled_profile():
    gamma, steps = gamma_of(0.1), 37
    model = torch.nn.Linear(1, 1, bias=False)
    ema = PowerEMA(model, [0.1])
    for i in range(1, steps + 1):
        model.weight.data.fill_(float(i))
        ema.update(model)
    i = np.arange(1, steps + 1, dtype=np.float64)
    weights = (i ** (gamma + 1) - (i - 1) ** (gamma + 1)) / steps ** (gamma + 1)
    assert ema.profiles[0][0].item() == pytest.approx(float((weights * i).sum()), rel=1e-5)
    assert power_beta(1, gamma) == 0.0


def test_the_classic_emas_sigma_rel_is_its_weights_relative_spread():
    assert exponential_sigma_rel(0.9999, 400_000) == pytest.approx(1e4 / 4e5, rel=0.01)
    steps, decay = 500, 0.99
    weights = np.array([decay**steps] + [(1 - decay) * decay ** (steps - i) for i in range(1, steps + 1)])
    i = np.arange(steps + 1)
    mean = (weights * i).sum()
    assert exponential_sigma_rel(decay, steps) == pytest.approx(np.sqrt((weights * (i - mean) ** 2).sum()) / steps)


def tiny_config(**changes) -> TrainConfig:
    fields = dict(model="DiT-custom/8", depth=1, hidden_size=16, num_heads=2, resolution=16, batch_size=8, steps=100,
                  lr=2e-3, log_every=50, ckpt_every=1000, num_workers=0, sample_steps=2, sample_images=4, device="cpu",
                  ema_sigma_rels=THREE, ema_snapshot_every=10, ema_snapshot_precision="fp32")
    return TrainConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def three_profile_run(tmp_path_factory):
    run_dir, threads = tmp_path_factory.mktemp("ema"), torch.get_num_threads()
    torch.set_num_threads(1)  # two spinning threads crawl on a shared, loaded CPU
    try:
        train(tiny_config(), run_dir, progress=False)
    finally:
        torch.set_num_threads(threads)
    return run_dir


def flat(state: dict) -> torch.Tensor:
    return torch.cat([v.flatten().double() for v in state.values()])


def test_reconstruction_from_two_stored_profiles_comes_10x_closer_to_a_directly_tracked_third(three_profile_run):
    step, (rebuilt,) = reconstruct(three_profile_run, [0.07], use_sigma_rels=(0.05, 0.10))
    last = torch.load(RunLayout(three_profile_run).ema_snapshot(step), weights_only=True)
    assert step == 100 and last["sigma_rels"] == list(THREE)
    direct = flat(last["profiles"][1])
    error = (flat(rebuilt) - direct).norm()
    for stored in (last["profiles"][0], last["profiles"][2]):
        assert error * 10 < (flat(stored) - direct).norm()


@pytest.fixture
def ema_cli(capsys):
    """`scaling ema ARGS` in this process: (exit status, stderr)."""

    def run(*args) -> tuple[int, str]:
        status = main(["ema", *args])
        return status, capsys.readouterr().err

    return run


def assert_refused(result, phrase: str, run_dir):
    status, err = result
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0] and "; " in lines[0], err
    assert not RunLayout(run_dir).posthoc_dir.exists()


@pytest.mark.parametrize("sigma_rel,phrase", [("0.05,0.3", "outside (0, 0.2887]"), ("0", "outside"),
                                              ("0.05,abc", "not a number")])
def test_bad_lengths_are_refused_in_one_line(three_profile_run, tmp_path, ema_cli, sigma_rel, phrase):
    run_dir = shutil.copytree(three_profile_run, tmp_path / "run")
    assert_refused(ema_cli("--run-dir", str(run_dir), "--sigma-rel", sigma_rel), phrase, run_dir)


def test_a_run_without_snapshots_a_step_with_too_few_and_a_corrupt_snapshot_are_refused(three_profile_run, tmp_path,
                                                                                        ema_cli):
    run_dir = shutil.copytree(three_profile_run, tmp_path / "run")
    layout = RunLayout(run_dir)
    assert_refused(ema_cli("--run-dir", str(run_dir), "--sigma-rel", "0.1", "--step", "10"), "at least 2", run_dir)
    assert_refused(ema_cli("--run-dir", str(run_dir), "--sigma-rel", "0.1", "--step", "15"), "no EMA snapshot at step",
                   run_dir)
    path = layout.ema_snapshot(50)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_refused(ema_cli("--run-dir", str(run_dir), "--sigma-rel", "0.1"), "step_0000050.pt", run_dir)
    torch.save({"step": 40, "sigma_rels": [0.1], "gammas": [], "profiles": []}, path)
    assert_refused(ema_cli("--run-dir", str(run_dir), "--sigma-rel", "0.1"), "damaged", run_dir)
    shutil.rmtree(layout.ema_snapshots_dir)
    assert_refused(ema_cli("--run-dir", str(run_dir), "--sigma-rel", "0.1"), "no EMA snapshots", run_dir)


def test_a_reconstructed_ema_is_a_checkpoint_with_the_runs_config(three_profile_run, tmp_path, ema_cli):
    run_dir = shutil.copytree(three_profile_run, tmp_path / "run")
    status, err = ema_cli("--run-dir", str(run_dir), "--sigma-rel", "0.05,0.2", "--step", "60")
    assert status == 0, err
    ckpt = read_checkpoint(RunLayout(run_dir).posthoc_checkpoint(60, 0.2))
    assert ckpt["step"] == 60 and ckpt["config"]["train"]["ema_sigma_rels"] == list(THREE)
    assert ckpt["posthoc_ema"]["sigma_rel"] == 0.2 and ckpt["model"].keys() == ckpt["ema"].keys()


# ---- exact resume ---------------------------------------------------------------------------------
EMA_OPTIONS = ["--steps", "40", "--ckpt-every", "5", "--ema-snapshot-every", "4", "--no-progress", "--device", "cpu"]


def snapshots_and_profiles(run_dir) -> tuple[dict, list]:
    layout = RunLayout(run_dir)
    snaps = {step: torch.load(path, weights_only=True) for step, path in layout.ema_snapshots()}
    return snaps, read_checkpoint(layout.checkpoint(40))["ema_profiles"]["profiles"]


def latest_checkpoint_step(run_dir) -> int:
    """The step of the newest checkpoint (older ones are pruned: keep_last), 0 before the first."""
    found = list_checkpoints(run_dir)
    return found[-1][0] if found else 0


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_kill_at_a_random_step_and_resume_gives_the_uninterrupted_profiles_and_snapshots_to_the_bit(tmp_path):
    whole = scaling("train", "--run-dir", str(tmp_path / "whole"), *TINY, *EMA_OPTIONS)
    killed_dir = tmp_path / "killed"
    killed = scaling("train", "--run-dir", str(killed_dir), *TINY, *EMA_OPTIONS)
    wanted, deadline = 5 * np.random.default_rng().integers(1, 6), time.time() + 120  # a checkpoint's step
    while latest_checkpoint_step(killed_dir) < wanted and time.time() < deadline and killed.poll() is None:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert list_checkpoints(killed_dir)[-1][0] < 40
    resumed = scaling("train", "--run-dir", str(killed_dir), *TINY, *EMA_OPTIONS)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert whole.wait(timeout=300) == 0, whole.stdout.read()
    (expect_snaps, expect_profiles), (got_snaps, got_profiles) = map(snapshots_and_profiles, (tmp_path / "whole",
                                                                                             killed_dir))
    assert sorted(got_snaps) == sorted(expect_snaps) == [*range(4, 41, 4)]
    for step, snap in expect_snaps.items():
        assert got_snaps[step]["step"] == step
        for a, b in zip(snap["profiles"], got_snaps[step]["profiles"], strict=True):
            assert_bitwise_equal(a, b)
    for a, b in zip(expect_profiles, got_profiles, strict=True):
        assert_bitwise_equal(a, b)


def torchrun_train(run_dir, *options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "scaling.cli",
         "train", "--run-dir", str(run_dir), *TINY, *options],
        env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_gloo_processes_keep_the_profiles_and_snapshots_of_one(tmp_path):
    options = ["--steps", "4", "--ckpt-every", "4", "--ema-snapshot-every", "2", "--no-progress", "--device", "cpu"]
    one = scaling("train", "--run-dir", str(tmp_path / "one"), *TINY, *options)
    two = torchrun_train(tmp_path / "two", *options)
    assert two.wait(timeout=300) == 0, two.stdout.read()
    assert one.wait(timeout=300) == 0, one.stdout.read()
    a, b = (RunLayout(tmp_path / name) for name in ("one", "two"))
    assert [s for s, _ in a.ema_snapshots()] == [s for s, _ in b.ema_snapshots()] == [2, 4]
    for (_, pa), (_, pb) in zip(a.ema_snapshots(), b.ema_snapshots(), strict=True):
        for x, y in zip(*(torch.load(p, weights_only=True)["profiles"] for p in (pa, pb)), strict=True):
            for k in x:
                torch.testing.assert_close(y[k].float(), x[k].float(), rtol=1e-3, atol=1e-4)
    pa, pb = (read_checkpoint(r.checkpoint(4))["ema_profiles"] for r in (a, b))
    assert pa["t"] == pb["t"] == 4
    for x, y in zip(pa["profiles"], pb["profiles"], strict=True):
        for k in x:
            torch.testing.assert_close(y[k], x[k], rtol=1e-4, atol=1e-6)


def test_two_gloo_processes_stopped_and_resumed_keep_the_profiles_and_snapshots_to_the_bit(tmp_path):
    options = ["--ckpt-every", "2", "--ema-snapshot-every", "2", "--no-progress", "--device", "cpu"]
    whole = torchrun_train(tmp_path / "whole", "--steps", "4", *options)
    first = torchrun_train(tmp_path / "resumed", "--steps", "2", *options)
    assert first.wait(timeout=300) == 0, first.stdout.read()
    second = torchrun_train(tmp_path / "resumed", "--steps", "4", *options)  # resumes from step 2
    assert second.wait(timeout=300) == 0, second.stdout.read()
    assert whole.wait(timeout=300) == 0, whole.stdout.read()
    a, b = (RunLayout(tmp_path / name) for name in ("whole", "resumed"))
    assert [s for s, _ in a.ema_snapshots()] == [s for s, _ in b.ema_snapshots()] == [2, 4]
    for (_, pa), (_, pb) in zip(a.ema_snapshots(), b.ema_snapshots(), strict=True):
        for x, y in zip(*(torch.load(p, weights_only=True)["profiles"] for p in (pa, pb)), strict=True):
            assert_bitwise_equal(x, y)
    for x, y in zip(*(read_checkpoint(r.checkpoint(4))["ema_profiles"]["profiles"] for r in (a, b)), strict=True):
        assert_bitwise_equal(x, y)
