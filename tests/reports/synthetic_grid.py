"""A synthetic grid directory for the report tests: a results table (through study.schema) and
run directories with config.json, train-log.jsonl and sample PNGs, made in milliseconds.

FID follows a known law so the figures have the paper's shape: bigger models (more Gflops) reach a
lower FID for the same steps, and FID falls with training compute.
"""
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from scaling.results import write_results
from study.schema import sampling_compute_gflops, to_table, train_compute_gflops

# The paper's forward Gflops (Table 4), so the synthetic grid spans the same range.
PAPER_GFLOPS = {"S/8": 0.36, "S/4": 1.41, "S/2": 6.06, "B/8": 1.42, "B/4": 5.56, "B/2": 23.01,
                "L/8": 5.01, "L/4": 19.70, "L/2": 80.71, "XL/8": 7.39, "XL/4": 29.05, "XL/2": 118.64}
PARAMS_M = {"S": 33, "B": 130, "L": 458, "XL": 675}


@dataclasses.dataclass
class SyntheticGrid:
    path: Path
    df: object  # the results DataFrame as written
    runs: list  # run names
    steps: tuple
    sampling_steps: tuple
    configs: dict  # run dir name -> config dict


def fid_law(gflops: float, step: int, sampling_steps: int = 250) -> float:
    """FID of a model with `gflops` after `step` steps: falls with compute and with model Gflops."""
    return (6.0 + 400.0 * (gflops * step * 256 * 3) ** -0.18 + 30.0 / (1 + gflops)) * (1 + 6.0 / sampling_steps)


def _sample_png(path: Path, progress: float, seed: int):
    """A 4x4 grid of 16 px tiles: a bright disc emerging from noise as training progresses."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    disc = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 25).astype(float)
    tiles = [progress * disc + (1 - progress) * rng.random((16, 16)) for _ in range(16)]
    grid = np.block([[tiles[r * 4 + c] for c in range(4)] for r in range(4)])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((grid * 255).astype(np.uint8)).save(path)


def _lr_find_png(path: Path):
    """A 640 x 400 plot-like image: loss against learning rate, falling then blowing up."""
    image = np.full((400, 640), 255, np.uint8)
    x = np.arange(40, 600)
    t = (x - 40) / 560
    y = (300 - 150 * t + 250 * t ** 8).astype(int)
    image[np.clip(y, 0, 399), x] = 0
    image[360, 40:600], image[40:360, 40] = 0, 0
    Image.fromarray(image).save(path)


def _train_log(path: Path, gflops: float, last_step: int, every: int):
    lines = []
    for step in range(every, last_step + 1, every):
        mse = 0.05 + 0.4 * np.exp(-step * gflops ** 0.3 / 3000)
        vb = 0.01 + 0.02 * np.exp(-step / 2000)
        lines.append(json.dumps({"step": step, "loss": mse + vb, "mse": mse, "vb": vb, "grad_norm": 1.0, "lr": 1e-4,
                                 "images_per_sec": 500.0, "peak_mem_gb": 0.5, "wall_seconds": step / 10}))
    path.write_text("\n".join(lines) + "\n")


def _run_dir(root: Path, run: str, config: dict, gflops: float, steps, samples: bool, logs: bool, index: int):
    run_dir = root / "runs" / run.replace("/", "-")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    if logs:
        _train_log(run_dir / "train-log.jsonl", gflops, max(steps), every=max(steps) // 40)
    if samples:
        for step in steps:
            _sample_png(run_dir / "samples" / f"step_{step:07d}.png", step / max(steps), seed=index * 100 + step)


def make_grid(root, *, sizes=("S", "B", "L", "XL"), patches=(8, 4, 2), blocks_for=None,
              steps=(1000, 2000, 4000, 8000), sampling_steps=(250,), samples=True, logs=True, lr_find=False,
              dataset="mnist32", resolution=32, features="mnist", noise=0.0, seed=0, seeds=None) -> SyntheticGrid:
    """Write a grid directory under `root`; `blocks_for` = 'B/4' adds that model with the other three blocks.

    With several `sampling_steps`, every checkpoint's last step is also evaluated at each of them. `seeds`
    (e.g. (0, 1, 2)) repeats every evaluation once per training seed (set `noise` for them to differ).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    specs = [(f"DiT-{s}/{p}", s, p, "adaln-zero") for s in sizes for p in patches]
    if blocks_for:
        size, patch = blocks_for.split("/")
        specs += [(f"DiT-{blocks_for}", size, int(patch), b) for b in ("adaln", "cross-attn", "in-context")]
    records, configs, runs = [], {}, []
    for index, (model, size, patch, block) in enumerate(specs):
        run = model if block == "adaln-zero" else f"{model}-{block}"
        gflops = (
            PAPER_GFLOPS[f"{size}/{patch}"]
            * {"adaln-zero": 1.0, "adaln": 1.0, "cross-attn": 1.16, "in-context": 1.01}[block]
        )
        penalty = {"adaln-zero": 1.0, "adaln": 1.25, "cross-attn": 1.3, "in-context": 1.6}[block]
        config = {"model": model, "block": block, "data": dataset, "resolution": resolution, "batch_size": 256,
                  "lr": 1e-4, "steps": max(steps), "seed": seed}
        configs[run.replace("/", "-")] = config
        runs.append(run)
        _run_dir(root, run, config, gflops, steps, samples, logs, index)
        if lr_find and index == 0:
            _lr_find_png(root / "runs" / run.replace("/", "-") / "lr-find.png")
        for step, train_seed in ((s, t) for s in steps for t in (seeds or (None,))):
            for ss in sampling_steps if step == max(steps) else sampling_steps[-1:]:
                fid = fid_law(gflops, step, ss) * penalty * (1 + noise * rng.standard_normal())
                records.append(dict(
                    run=run, seed=train_seed, model=model, size=size, patch_size=patch, block=block,
                    params=PARAMS_M[size] * 10**6,
                    gflops=gflops, dataset=dataset, resolution=resolution, batch_size=256, step=step,
                    images_seen=step * 256, train_compute_gflops=train_compute_gflops(gflops, 256, step),
                    sampler="ddpm", sampling_steps=ss, cfg_scale=1.0,
                    sampling_compute_gflops=sampling_compute_gflops(gflops, ss, 1.0), num_samples=1000,
                    features=features, fid=fid, sfid=fid * 1.3, inception_score=300.0 / fid, precision=1 - 1 / fid,
                    recall=0.5, wall_seconds=step / 10.0))
    df = to_table(records)
    write_results(df, root)
    (root / "grid.yaml").write_text(  # a spec `scaling results` and `status` read back (the runs are not trained)
        f"name: synthetic\nmodels: {{sizes: {list(sizes)}, patch_sizes: {list(patches)}}}\n"
        f"data: {{dataset: {dataset}, codec: identity, resolution: {resolution}, channels: 1, num_classes: 10}}\n"
        f"train: {{steps: {max(steps)}, device: cpu}}\n"
    )
    return SyntheticGrid(path=root, df=df, runs=runs, steps=tuple(steps), sampling_steps=tuple(sampling_steps),
                         configs=configs)
