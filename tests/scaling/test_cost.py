import json
import math
from itertools import pairwise

import pytest

from scaling.cli import main
from scaling.cost import grid_cost, grid_rates, run_cost, schedule
from scaling.flops import gflops
from scaling.grid import plan
from scaling.gridfile import parse_grid
from scaling.run_state import RunState
from scaling.runs import claim_grid_dir
from scaling.throughput import load_table, save_rows

# Three tiny models on 2 GPUs each: per-GPU batch 64 / 2 = 32; two sampling settings (cfg 1: one pass, cfg 1.5: two).
GRID = """
name: costed
models:
  include:
    - {name: DiT-custom/8, depth: 1, hidden_size: 32, num_heads: 2}
    - {name: DiT-custom/4, depth: 1, hidden_size: 32, num_heads: 2}
    - {name: DiT-custom/2, depth: 1, hidden_size: 32, num_heads: 2}
data: {dataset: mnist32, codec: identity, resolution: 32, channels: 1, num_classes: 10}
train: {batch_size: 64, steps: 1000, device: cpu}
eval: {every: 500, features: mnist, num_samples: 400, sampler: ddim, sampling_steps: [20], cfg_scales: [1.0, 1.5],
       batch_size: 16}
executor: {kind: local, gpus_per_run: 2}
"""
DEVICE = dict(device="Test GPU 40GB", device_type="cuda")


def runs_of(text=GRID):
    return plan(parse_grid(text))


def train_row(run, batch, images_per_sec):
    return dict(
        kind="train",
        **DEVICE,
        model=run.model,
        gflops=gflops(run.dit_config()),
        batch_size=batch,
        precision="fp32",
        compile=False,
        images_per_sec=images_per_sec,
    )


def sample_row(run, images_per_sec, steps=50, cfg_scale=1.5):
    return dict(
        kind="sample",
        **DEVICE,
        model=run.model,
        gflops=gflops(run.dit_config()),
        batch_size=16,
        precision="fp32",
        compile=False,
        sampler="ddpm",
        steps=steps,
        cfg_scale=cfg_scale,
        images_per_sec=images_per_sec,
    )


def table(tmp_path, rows):
    path = tmp_path / "throughput.json"
    path.write_text(json.dumps({"rows": rows}))
    return path


def rates(tmp_path, rows, spec_text=GRID):
    return grid_rates(parse_grid(spec_text).executor, table(tmp_path, rows))


def test_one_measured_run_costs_steps_x_batch_over_rate_and_samples_x_steps_x_passes_over_rate(tmp_path):
    r8, r4, r2 = runs_of()
    features = dict(kind="features", **DEVICE, features="mnist", images_per_sec=2000.0)
    rows = [train_row(r8, 32, 900.0), train_row(r2, 32, 100.0), sample_row(r8, 3.0), sample_row(r2, 0.5), features]
    cost = run_cost(r8, rates(tmp_path, rows))
    assert (cost.train.basis, cost.sample.basis, cost.gpus) == ("measured", "measured", 2)
    # training: 1000 steps x 64 images at 900 img/s of one GPU
    assert cost.train_gpu_hours == pytest.approx(1000 * 64 / 900.0 / 3600)
    # sampling measured at 3 img/s with 50 guided steps = 3 x 50 x 2 = 300 forward passes/s;
    # 2 points x 400 samples x (20 steps x 1 pass + 20 steps x 2 passes) / 300, plus features of 2 x 400 samples
    assert cost.sample.value == pytest.approx(300.0)
    sampling = 2 * 400 * (20 * 1 + 20 * 2) / 300.0
    assert cost.eval_gpu_hours == pytest.approx((sampling + 2 * 2 * 400 / 2000.0) / 3600)
    assert cost.hours == pytest.approx((cost.train_gpu_hours + cost.eval_gpu_hours) / 2)  # on its 2 GPUs


def test_an_unmeasured_model_lies_on_the_log_log_line_between_its_measured_neighbours(tmp_path):
    r8, r4, r2 = runs_of()
    g8, g4, g2 = (gflops(r.dit_config()) for r in (r8, r4, r2))
    rows = [
        train_row(r8, 32, 900.0),
        train_row(r2, 32, 100.0),
        train_row(r2, 256, 400.0),  # batch 256: not the run's
        sample_row(r8, 3.0),
        sample_row(r2, 0.5),
    ]
    cost = run_cost(r4, rates(tmp_path, rows))
    by_hand = math.exp(
        math.log(900) + (math.log(g4) - math.log(g8)) * (math.log(100) - math.log(900)) / (math.log(g2) - math.log(g8))
    )
    assert cost.train.basis == "interpolated" and 100 < cost.train.value < 900
    assert cost.train.value == pytest.approx(by_hand)
    passes8, passes2 = 3.0 * 50 * 2, 0.5 * 50 * 2
    assert passes2 < cost.sample.value < passes8 and cost.sample.basis == "interpolated"


def test_one_measured_sampling_model_borrows_the_training_slope(tmp_path):
    r8, r4, r2 = runs_of()
    g8, g2 = gflops(r8.dit_config()), gflops(r2.dit_config())
    rows = [train_row(r8, 32, 900.0), train_row(r2, 32, 100.0), sample_row(r2, 0.5)]
    cost = run_cost(r8, rates(tmp_path, rows))
    slope = (math.log(100) - math.log(900)) / (math.log(g2) - math.log(g8))
    assert cost.sample.value == pytest.approx(0.5 * 50 * 2 * (g8 / g2) ** slope)
    assert cost.sample.basis == "extrapolated"


def test_twelve_runs_of_8_gpus_on_64_gpus_follow_the_hand_schedule():
    hours = [float(h) for h in range(1, 13)]
    # 8 groups of 8 GPUs: runs 1-8 start at 0 and end at 1..8; run 9 takes the group free at 1 (ends 10),
    # run 10 the one free at 2 (ends 12), run 11 at 3 (ends 14), run 12 at 4 (ends 16)
    by_hand = [(0, h) for h in range(1, 9)] + [(1, 10), (2, 12), (3, 14), (4, 16)]
    assert schedule(hours, 8, 64) == by_hand
    # SLURM's array parallelism 4: four at once, each run on the first to finish
    assert schedule([4.0, 3.0, 2.0, 1.0, 5.0, 5.0], 8, 64, runs_at_once=4) == [
        (0, 4),
        (0, 3),
        (0, 2),
        (0, 1),
        (1, 6),
        (2, 7),
    ]
    with pytest.raises(ValueError, match="8 GPUs each, more than the 4"):
        schedule(hours, 8, 4)


def test_the_paper_grid_on_64_h100s_from_the_shipped_table(capsys):
    assert main(["plan", "--preset", "paper", "--gpus", "64", "--format", "json"]) == 0
    rows = {row["run"]: row for row in json.loads(capsys.readouterr().out)}
    xl = rows["DiT-XL/2"]
    # fp32 (the preset's precision) at 256 / 8 = 32 images per GPU: the README's 156.2 img/s of one H100
    assert xl["train_basis"] == "measured" and xl["train_gpu_hours"] == pytest.approx(400_000 * 256 / 156.2 / 3600)
    # 250 unguided steps at the measured 1.22 img/s x 250 steps x 2 passes (CFG 1.5), fp32 SD-VAE decoding at
    # 237 img/s and Inception features at 50,000 / 10.8 s, for 8 points of 50,000 samples
    per_sample = 250 * 1 / (1.22 * 250 * 2) + 1 / 237 + 10.8 / 50_000
    assert xl["eval_gpu_hours"] == pytest.approx(8 * 50_000 * per_sample / 3600, rel=1e-4)
    assert rows["DiT-L/4"]["train_basis"] == "interpolated" and rows["DiT-S/8"]["train_basis"] == "extrapolated"
    costliest_first = sorted(rows.values(), key=lambda row: -row["gflops"])  # equal steps and batch: Gflops order
    assert [row["start_hours"] for row in costliest_first[:8]] == [0] * 8
    hours = [row["gpu_hours"] / 8 for row in costliest_first]
    assert max(row["end_hours"] for row in rows.values()) == pytest.approx(
        max(end for _, end in schedule(hours, 8, 64))
    )
    assert main(["plan", "--preset", "paper", "--gpus", "64", "--gpu-hour-price", "2"]) == 0
    out = capsys.readouterr().out
    assert "% of the total" in out and "wall time on 64 GPUs (8 run(s) at once x 8 GPU(s) each)" in out
    assert "extrapolated" in out and "forward passes/s" in out and "cost at 2 per GPU-hour" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gpus", "0"], "--gpus must be a whole number of GPUs, at least 1, not '0'"),
        (["--gpus", "-8"], "--gpus must be a whole number"),
        (["--gpus", "4"], "the grid's runs take 8 GPUs each, more than the 4 given"),
        (["--gpu-hour-price", "0"], "--gpu-hour-price must be a positive number"),
        (["--gpu-hour-price", "cheap"], "--gpu-hour-price must be a positive number"),
        (["--gpu-hour-price", "nan"], "--gpu-hour-price must be a positive number"),
        (["--device", "A100"], "has no usable row for a cuda device named like 'A100'"),
    ],
)
def test_bad_cost_options_fail_in_one_line(argv, message, capsys):
    assert main(["plan", "--preset", "paper", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_throughput_file_without_a_row_for_the_grid_device_fails_in_one_line(tmp_path, capsys):
    cpu_only = table(
        tmp_path, [dict(kind="features", device="laptop", device_type="cpu", features="mnist", images_per_sec=50.0)]
    )
    assert main(["plan", "--preset", "paper", "--throughput", str(cpu_only)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no usable row for a cuda device" in err and "\n" not in err
    (tmp_path / "broken.json").write_text("{not json")
    assert main(["plan", "--preset", "paper", "--throughput", str(tmp_path / "broken.json")]) == 2
    assert "is not a throughput table" in capsys.readouterr().err


def test_saves_merge_into_one_table_and_a_remeasurement_replaces_its_row(tmp_path):
    r8, _, r2 = runs_of()
    path = tmp_path / "t.json"
    save_rows(path, [train_row(r8, 32, 900.0), sample_row(r8, 3.0)])
    save_rows(path, [train_row(r2, 32, 100.0), train_row(r8, 32, 950.0)])
    rows = load_table(path)
    assert [(r["kind"], r["model"], r["gflops"], r["images_per_sec"]) for r in rows] == [
        ("sample", r8.model, gflops(r8.dit_config()), 3.0),
        ("train", r2.model, gflops(r2.dit_config()), 100.0),
        ("train", r8.model, gflops(r8.dit_config()), 950.0),
    ]


def test_status_of_a_gpu_grid_estimates_what_is_left_as_plan_does(tmp_path, capsys):
    spec = parse_grid(GRID)
    runs = plan(spec)
    r8, r4, r2 = runs
    path = table(
        tmp_path, [train_row(r8, 32, 900.0), train_row(r2, 32, 100.0), sample_row(r8, 3.0), sample_row(r2, 0.5)]
    )
    rates = grid_rates(spec.executor, path)
    # the first run trained 400 of 1000 steps at 0.5 s per step on its 2 GPUs and scored 0 of 2 points; the rest pending
    states = [RunState(r8.name, "training", 400, 1000, 0, 2, None, 0.5)] + [
        RunState(r.name, "pending", 0, 1000, 0, 2, None, None) for r in (r4, r2)
    ]
    left = grid_cost(runs, rates, 4, states=states)
    first = run_cost(r8, rates)
    assert left.runs[0].train_gpu_hours == pytest.approx(600 * 0.5 * 2 / 3600)
    assert left.runs[0].eval_gpu_hours == pytest.approx(first.eval_gpu_hours)
    assert left.runs[1].gpu_hours == pytest.approx(run_cost(r4, rates).gpu_hours)
    claim_grid_dir(tmp_path / "grid", spec)
    assert main(["status", str(tmp_path / "grid"), "--throughput", str(path), "--gpus", "4"]) == 0
    whole = grid_cost(runs, rates, 4)
    assert f"left (Test GPU 40GB): {whole.gpu_hours:,.1f} GPU-hours" in capsys.readouterr().out


def test_bench_rows_are_a_table_a_cpu_grid_can_be_planned_from(tmp_path, capsys):
    from scaling.throughput import bench_rows

    r8, _, r2 = runs_of()
    identity = dict(device="laptop", device_type="cpu", torch="x", cuda=None, date="2026-01-01")
    options = dict(precision="fp32", attention="sdpa", compile=False)
    for run, rate in ((r8, 90.0), (r2, 10.0)):
        measured = dict(
            path="fast", train_images_per_sec=rate, peak_mem_gb=float("nan"), sample_images_per_sec=rate / 100
        )
        rows = bench_rows(
            measured,
            model=run.model,
            gflops=gflops(run.dit_config()),
            geometry={},
            batch_size=32,
            options=options,
            sampling=dict(sampler="ddpm", steps=10, cfg_scale=1.0, batch_size=16),
            identity=identity,
        )
        save_rows(tmp_path / "cpu.json", rows)
    cpu_grid = tmp_path / "cpu.yaml"
    cpu_grid.write_text(GRID.replace("gpus_per_run: 2", "gpus_per_run: 0").replace("batch_size: 64", "batch_size: 32"))
    assert main(["plan", str(cpu_grid), "--throughput", str(tmp_path / "cpu.json"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert (
        rows[0]["train_gpu_hours"] == pytest.approx(1000 * 32 / 90.0 / 3600)
        and rows[1]["train_basis"] == "interpolated"
    )
    by_start = sorted(rows, key=lambda row: row["start_hours"])  # the local executor on CPU: one after another
    assert [row["run"] for row in by_start] == [row["run"] for row in rows[::-1]]  # the costliest (p = 2) first
    assert all(b["start_hours"] == pytest.approx(a["end_hours"]) for a, b in pairwise(by_start))
