"""What post-hoc EMA costs: the step-time overhead of the power-function profiles, their snapshot size, and the
time to reconstruct 10 lengths.

Overhead: full training steps (forward, backward, AdamW, classic EMA) of a random-weight model on a fixed batch,
timed in alternating blocks without and with the update of two profiles (sigma_rel 0.05, 0.10), the median of
each. Reconstruction: a run directory of `--snapshots` snapshots of the model's profiles (fp16), and
`dit.posthoc_ema.write_posthoc` of 10 lengths from them.

    OMP_NUM_THREADS=1 python benchmarks/posthoc_ema.py --model DiT-M/4 --batch-size 64 --input-size 16
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dit.ema import DEFAULT_SIGMA_RELS, PowerEMA
from dit.posthoc_ema import write_posthoc, write_snapshot
from scaling.bench import training_setup
from study.layout import RunLayout

LENGTHS = (0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.15, 0.18, 0.22, 0.25)


def step_overhead(args) -> tuple[float, float]:
    """(seconds per step without the profiles, with them): medians over alternating blocks of steps."""
    steps = [training_setup(args.model, path="reference", batch_size=args.batch_size, input_size=args.input_size,
                            in_channels=1, num_classes=10, device="cpu", ema_sigma_rels=lengths)[0]
             for lengths in ((), DEFAULT_SIGMA_RELS)]
    times = [[], []]
    for step in steps * 2:
        step()  # warm-up
    for _ in range(args.blocks):
        for step, measured in zip(steps, times, strict=True):
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            measured.append((time.perf_counter() - start) / args.steps)
    return statistics.median(times[0]), statistics.median(times[1])


def reconstruction_seconds(args, model: torch.nn.Module) -> tuple[float, int]:
    """(seconds to reconstruct LENGTHS from `args.snapshots` snapshots, bytes of one snapshot)."""
    with tempfile.TemporaryDirectory() as folder:
        run = RunLayout(Path(folder))
        run.config.write_text(json.dumps({"train": {"ema_sigma_rels": list(DEFAULT_SIGMA_RELS), "batch_size": 64}}))
        profiles = PowerEMA(model, DEFAULT_SIGMA_RELS)
        for i in range(1, args.snapshots + 1):
            profiles.t = i * 1000
            write_snapshot(run.root, profiles, "fp16")
        start = time.perf_counter()
        write_posthoc(run.root, LENGTHS)
        return time.perf_counter() - start, run.ema_snapshot(1000).stat().st_size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="DiT-M/4")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=8, help="alternating blocks without and with the profiles")
    parser.add_argument("--snapshots", type=int, default=20)
    args = parser.parse_args()
    plain, tracked = step_overhead(args)
    print(f"{args.model} batch {args.batch_size} at {args.input_size} px, {torch.get_num_threads()} thread(s): "
          f"{plain * 1e3:.1f} ms per step, {tracked * 1e3:.1f} ms with two profiles "
          f"({100 * (tracked / plain - 1):+.1f}%)")
    from dit.models import create_dit

    model = create_dit(args.model, input_size=args.input_size, in_channels=1, num_classes=10)
    seconds, size = reconstruction_seconds(args, model)
    print(f"snapshot: {size / 1e6:.1f} MB (2 profiles, fp16); {len(LENGTHS)} lengths from {args.snapshots} "
          f"snapshots in {seconds:.2f} s")


if __name__ == "__main__":
    main()
