"""`scaling sample`: sample a checkpoint into the ADM evaluator's .npz layout (and a PNG grid)."""
from scaling.commands.argtypes import finite_float, non_negative_int, positive_int


def add_parser(subparsers):
    from dit.config import PRECISIONS

    p = subparsers.add_parser(
        "sample", help="sample a checkpoint into samples.npz (ADM layout), resumable",
        description="Sample images from a checkpoint of this project (EMA weights by default) or an official DiT "
        "release file (e.g. --model DiT-XL/2 --ckpt DiT-XL-2-256x256.pt). Writes arr_0 (uint8 N x H x W x C) and "
        "arr_1 (labels), as the ADM evaluator reads them. An interrupted job resumes where it stopped; under "
        "`torchrun --nproc_per_node=N -m scaling.cli sample ...` every GPU takes a share.",
    )
    add_sampling_options(p, num_default=64)
    p.add_argument("--out", required=True, help="output .npz (an existing file is refused unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--eta", type=finite_float, default=0.0, help="DDIM eta (0 = deterministic)")
    p.add_argument(
        "--labels",
        nargs="+",
        help="class labels by index or by the data set's class names, repeated cyclically (default: uniform)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (and per resumable shard)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw model weights, not the EMA")
    p.add_argument(
        "--vae",
        help="VAE for latent models: diffusers hub id or local folder (default: the run's own, else "
            "stabilityai/sd-vae-ft-ema)",
    )
    p.add_argument(
        "--guidance-channels",
        type=positive_int,
        help="guide only the first K noise channels (3 reproduces the official release)",
    )
    p.add_argument("--precision", default="fp32", help=" or ".join(PRECISIONS))
    p.add_argument("--compile", action="store_true", help="torch.compile the model (faster long jobs on GPUs)")
    p.add_argument("--compile-mode", default="default",
                   help="with --compile: default, reduce-overhead (CUDA graphs; a CPU falls back) or max-autotune")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--grid", help="also write a PNG grid of the first 64 samples here")
    p.set_defaults(func=run)


def add_sampling_options(p, *, num_default: int):
    """The options `scaling sample` and `scaling fid` share: what to sample, from which checkpoint."""
    p.add_argument(
        "--ckpt",
        required=True,
        help="checkpoint: run_dir/checkpoints/step_NNNNNNN.pt, an official .pt, a diffusers DiT folder or a "
            ".safetensors file",
    )
    p.add_argument("--num", type=positive_int, default=num_default,
                   help="number of samples (the paper's FID-50K: 50000)")
    p.add_argument("--steps", type=positive_int, default=250,
                   help="sampling steps out of the 1000 (the paper: 250 DDPM steps)")
    p.add_argument("--sampler", default="ddpm", help="ddpm (ancestral) or ddim")
    p.add_argument(
        "--cfg-scale", type=finite_float, default=1.0,
        help="classifier-free guidance scale (1 = none; the paper's best: 1.5)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed: the same seed gives the same samples")
    p.add_argument(
        "--model",
        help="expected model name for an official checkpoint, e.g. DiT-XL/2 (checked; needed for a .safetensors file "
            "without our metadata)",
    )


def run(args):
    from pathlib import Path

    from dit.checkpoint import read_checkpoint
    from dit.io import replaces
    from dit.sample import SampleConfig, generate_samples, resolve_labels, run_metadata, save_npz_grid

    if Path(args.out).is_dir():
        raise ValueError(
            f"--out {args.out} is a directory; give the path of a .npz file, e.g. {Path(args.out) / 'samples.npz'}"
        )
    if replaces(args.out, ours=False, force=args.force):
        print(f"replacing {args.out} (--force)")
    labels = None
    if args.labels:
        meta = run_metadata(read_checkpoint(args.ckpt, model_name=args.model))
        names = meta.get("class_names", [])
        labels = resolve_labels(args.labels, names, meta.get("model", {}).get("num_classes", 1000))
    config = SampleConfig(
        num=args.num, steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale, eta=args.eta,
        batch_size=args.batch_size, seed=args.seed, labels=labels, use_ema=not args.raw_weights,
        guidance_channels=args.guidance_channels, vae=args.vae, precision=args.precision, compile=args.compile,
        compile_mode=args.compile_mode,
    )
    overrides = {"name": args.model} if args.model else {}
    out = generate_samples(args.ckpt, args.out, config, device=args.device, model_overrides=overrides)
    print(f"wrote {config.num} samples to {out}")
    if args.grid:
        save_npz_grid(out, args.grid)
        print(f"wrote a grid of the first samples to {args.grid}")
