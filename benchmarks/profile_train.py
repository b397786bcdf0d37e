"""Where a training step's time goes: a torch.profiler trace of a few full steps and a summary of it.

The steps are `scaling bench`'s (random weights, a synthetic batch, forward, backward, AdamW, EMA; the
fast or the reference path). The summary ranks kernels by self time (GPU kernels on CUDA, aten ops on
a CPU) and splits the total into matmuls (GEMMs and convolutions), attention and everything else
(LayerNorm, modulate, gates, GELU, residuals, the optimiser and EMA): the share a fused kernel can win.

    python benchmarks/profile_train.py --trace benchmarks/profile-xl2-b128.json.gz --json profile.json
    python benchmarks/profile_train.py --model DiT-T/4 --batch-size 8 --device cpu --steps 1 --warmup 1
"""
import argparse
import gzip
import json
import re
import shutil
import tempfile
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from dit.io import atomic_write_text
from scaling.bench import _sync, training_setup

CATEGORIES = {  # the first pattern a lower-cased kernel name matches names its category
    "attention": re.compile(r"flash|fmha|attention|sdpa|_sdp_"),
    "matmul": re.compile(r"gemm|matmul|addmm|bmm|aten::mm\b|aten::linear|cutlass|xmma|nvjet|cublas|conv"),
}
OTHER = "other"


def category(name: str) -> str:
    """attention, matmul or other, from a kernel's or op's name."""
    lower = name.lower()
    return next((c for c, pattern in CATEGORIES.items() if pattern.search(lower)), OTHER)


def self_times(prof, device: torch.device) -> dict[str, float]:
    """Kernel name -> total self time in microseconds over the profiled steps.

    On CUDA the GPU kernels' own durations (what the device spent); on a CPU every op's self CPU time
    (self times partition the total, so nothing is counted twice).
    """
    times: dict[str, float] = {}
    if device.type == "cuda":
        for event in prof.events():
            if event.device_type == DeviceType.CUDA:
                times[event.name] = times.get(event.name, 0.0) + event.time_range.elapsed_us()
        return times
    for event in prof.key_averages():
        if not event.key.startswith("ProfilerStep") and event.self_cpu_time_total > 0:
            times[event.key] = float(event.self_cpu_time_total)
    return times


def summarise(times: dict[str, float], steps: int, top: int) -> dict:
    """Totals per step, each category's share and the `top` kernels by self time."""
    total = sum(times.values())
    shares = {c: 0.0 for c in (*CATEGORIES, OTHER)}
    for name, us in times.items():
        shares[category(name)] += us / total
    ranked = sorted(times.items(), key=lambda item: item[1], reverse=True)[:top]
    kernels = [{"name": n, "category": category(n), "ms_per_step": us / steps / 1e3, "share": us / total}
               for n, us in ranked]
    return {"ms_per_step": total / steps / 1e3, "shares": shares, "non_matmul_share": 1 - shares["matmul"],
            "top_kernels": kernels}


def write_trace(prof, path: Path):
    """The Chrome trace (chrome://tracing, ui.perfetto.dev), gzipped when the name ends in .gz, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        staged = Path(tmp) / path.name
        if path.suffix == ".gz":
            with raw.open("rb") as src, gzip.open(staged, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            raw.replace(staged)
        staged.replace(path)


def profile_training(args) -> dict:
    step, device = training_setup(args.model, path=args.path, batch_size=args.batch_size, input_size=args.input_size,
                                  in_channels=args.in_channels, num_classes=args.num_classes,
                                  checkpoint_blocks=args.checkpoint_blocks, device=args.device)
    for _ in range(args.warmup):  # compilation and kernel selection stay out of the trace
        step()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        _sync(device)
    if args.trace:
        write_trace(prof, Path(args.trace))
    setup = {k: v for k, v in vars(args).items() if k not in ("json", "trace", "top")}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    summary = summarise(self_times(prof, device), args.steps, args.top)
    return {"setup": setup, "device": name, "torch": torch.__version__, "trace": args.trace, **summary}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="DiT-XL/2")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--path", default="fast", help="fast or reference (scaling bench's paths)")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=4)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--checkpoint-blocks", type=int, default=0)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled steps first (default 3)")
    p.add_argument("--top", type=int, default=25, help="kernels listed in the summary (default 25)")
    p.add_argument("--device", default="auto")
    p.add_argument("--trace", help="write the Chrome trace here (.json or .json.gz)")
    p.add_argument("--json", help="write the summary here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    result = profile_training(args)
    print(f"{args.model} batch {args.batch_size} ({args.path} path) on {result['device']}: "
          f"{result['ms_per_step']:.1f} ms of kernels per step; "
          + ", ".join(f"{c} {s:.1%}" for c, s in result["shares"].items()))
    for k in result["top_kernels"][:10]:
        print(f"  {k['share']:6.1%} {k['ms_per_step']:8.2f} ms  [{k['category']}] {k['name'][:90]}")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
