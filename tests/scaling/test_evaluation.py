"""The evaluation settings of a run's points are listed once: the runner evaluates them and the cost prices them."""
import dataclasses

import pytest

from scaling.cost import Rates, run_cost
from scaling.evaluation import point_settings
from scaling.flops import gflops
from scaling.grid import plan
from scaling.gridfile import load_preset
from scaling.run_state import RunState, run_state
from scaling.runs import claim_grid_dir, execute_run

PASSES, FEATURES, TRAIN = 1000.0, 400.0, 500.0  # forward passes/s, mnist features img/s, training img/s


def demo_run():
    """The demo's first run, DiT-T/8: points 250 and 500."""
    return plan(load_preset("demo"))[0]


def cpu_rates(run) -> Rates:
    """A table whose sampling row is 100 images x 10 unguided steps per second: 1,000 forward passes/s."""
    common = dict(device="laptop", device_type="cpu", model=run.model, gflops=gflops(run.dit_config()),
                  precision="fp32", compile=False)
    rows = (
        dict(kind="train", **common, batch_size=64, images_per_sec=TRAIN),
        dict(kind="sample", **common, batch_size=100, sampler="ddim", steps=10, cfg_scale=1.0, images_per_sec=100.0),
        dict(kind="features", device="laptop", device_type="cpu", features="mnist", images_per_sec=FEATURES),
    )
    return Rates(device="laptop", rows=rows, source="a test table")


def by_hand(steps: int, passes_per_step: int) -> float:
    """GPU-seconds of one setting of the demo: 200 samples' forward passes and their features."""
    return 200 * (steps * passes_per_step / PASSES + 1 / FEATURES)


def test_the_demo_is_priced_as_the_sum_of_the_settings_of_each_point():
    run = demo_run()
    assert run.eval_points() == (250, 500)
    # every point: 10 DDIM steps unguided (1 pass per step) and at cfg 4 (2 passes)
    every = by_hand(10, 1) + by_hand(10, 2)
    # the last point adds final_sampling_steps 5 and 20, unguided
    last = every + by_hand(5, 1) + by_hand(20, 1)
    cost = run_cost(run, cpu_rates(run))
    assert cost.sample.value == pytest.approx(PASSES)
    assert cost.eval_gpu_hours * 3600 == pytest.approx(every + last)
    assert cost.train_gpu_hours * 3600 == pytest.approx(500 * 64 / TRAIN)
    # what is left of a run that scored its first point and trained 300 steps at 0.2 s each: the last point
    state = RunState(run.label, "training", 300, 500, 1, 2, None, 0.2)
    left = run_cost(run, cpu_rates(run), state)
    assert left.eval_gpu_hours * 3600 == pytest.approx(last)
    assert left.train_gpu_hours * 3600 == pytest.approx(200 * 0.2)


def test_the_runner_evaluates_exactly_the_listed_settings(tmp_path, monkeypatch):
    run = demo_run()
    run = dataclasses.replace(run, eval=dataclasses.replace(run.eval, ema_sigma_rels=()))  # training is mocked
    sampled, scored = [], []

    def generate(ckpt, out, config, **_):
        sampled.append((int(ckpt.stem.split("_")[-1]), config.sampler, config.steps, config.cfg_scale, config.num))

    def evaluate(samples, reference, features, *, metrics, progress):
        scored.append((features, tuple(metrics)))
        return {"fid": 1.0, "num_samples": 200}

    monkeypatch.setattr("dit.train.train", lambda *args, **kwargs: None)
    monkeypatch.setattr("dit.sample.generate_samples", generate)
    monkeypatch.setattr("eval.evaluate.evaluate_samples", evaluate)
    monkeypatch.setattr("scaling.runs.validate_point", lambda *args: {})
    monkeypatch.setattr("scaling.runs.reference_stats", lambda *args, **kwargs: tmp_path / "ref.npz")
    monkeypatch.setattr("scaling.runs.refresh_results", lambda grid_dir: None)
    claim_grid_dir(tmp_path / "grid", load_preset("demo"))
    execute_run(run, tmp_path / "grid", progress=False)
    assert sampled == [
        (250, "ddim", 10, 1.0, 200), (250, "ddim", 10, 4.0, 200),
        (500, "ddim", 10, 1.0, 200), (500, "ddim", 10, 4.0, 200),
        (500, "ddim", 5, 1.0, 200), (500, "ddim", 20, 1.0, 200),  # final_sampling_steps at the last point
    ]
    listed = [(p, s.sampler, s.sampling_steps, s.cfg_scale, s.num_samples)
              for p in run.eval_points() for s in point_settings(run, p)]
    assert sampled == listed
    assert scored == [("mnist", run.eval.metrics)] * 6
    assert run_state(tmp_path / "grid", run).evaluated == 2  # every listed setting of both points has its record
