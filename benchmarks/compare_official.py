"""Time the official DiT release's training step beside ours, in one process on one device.

    python benchmarks/compare_official.py --official-src ~/src/DiT --model DiT-XL/2 --batch-size 32

--official-src is a local clone of facebookresearch/DiT (never part of this project); it needs timm
(`pip install timm`). The official step runs as its train.py does: fp32 (TF32 matmuls on GPUs),
timm attention, AdamW lr 1e-4, its per-parameter EMA loop. With --official-fast it is also timed in
bf16 autocast under torch.compile. Ours runs the reference and fast paths of `scaling bench`.
Weights are random and batches synthetic latents: speed does not depend on either.
"""
import argparse
import copy
import sys
import time

import torch

from dit.distributed import pick_device
from scaling.bench import bench_training


def official_modules(src: str):
    sys.path.insert(0, src)
    try:
        import models
        from diffusion import create_diffusion
        from train import update_ema
    except ImportError as exc:
        raise SystemExit(f"cannot import the official release from {src}: {exc} "
                         f"(it needs timm: pip install timm)") from exc
    return models.DiT_models, create_diffusion, update_ema


def time_official(src, name, batch_size, input_size, steps, warmup, device, fast=False) -> dict:
    dit_models, create_diffusion, update_ema = official_modules(src)
    torch.manual_seed(0)
    model = dit_models[name](input_size=input_size, num_classes=1000).to(device).train()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0)
    diffusion = create_diffusion(timestep_respacing="")
    net = torch.compile(model) if fast else model
    x = torch.randn(batch_size, 4, input_size, input_size, device=device)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        t = torch.randint(0, diffusion.num_timesteps, (batch_size,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            loss = diffusion.training_losses(net, x, t, dict(y=y))["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_ema(ema, model)
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {
        "path": "official" + (" + bf16 + compile" if fast else ""),
        "train_images_per_sec": steps * batch_size / seconds,
        "peak_mem_gb": peak,
    }


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-src", required=True, help="local clone of facebookresearch/DiT")
    parser.add_argument("--model", default="DiT-S/4")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--official-fast", action="store_true", help="also time the official step in bf16 under torch.compile"
    )
    args = parser.parse_args()
    device = pick_device(args.device)
    common = dict(batch_size=args.batch_size, input_size=args.input_size, steps=args.steps, warmup=args.warmup)
    rows = [time_official(args.official_src, args.model, device=device, **common)]
    if args.official_fast:
        rows.append(time_official(args.official_src, args.model, device=device, fast=True, **common))
    for path in ("reference", "fast"):
        rows.append(bench_training(args.model, path=path, device=str(device), **common))
    print(f"{args.model}, batch {args.batch_size}, latent {args.input_size}x{args.input_size}x4, {device}")
    print(f"{'path':<28} {'train img/s':>12} {'peak GiB':>9} {'vs official':>12}")
    for row in rows:
        ratio = row["train_images_per_sec"] / rows[0]["train_images_per_sec"]
        print(f"{row['path']:<28} {row['train_images_per_sec']:>12.1f} {row['peak_mem_gb']:>9.1f} {ratio:>11.2f}x")


if __name__ == "__main__":
    main()
