"""`scaling bench`: training and sampling throughput, fast path vs the official release's settings."""
from scaling.commands.argtypes import finite_float, image_side, non_negative_int, positive_int


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench", help="measure training/sampling images/s and memory, fast path vs reference",
        description="Time full training steps (forward, backward, AdamW, EMA) and guided DDPM sampling of one model "
        "with random weights and synthetic batches, for the fast path (bf16, SDPA attention, fused AdamW and EMA, "
        "torch.compile on GPU) and the reference path (fp32 with TF32, explicit attention, Python EMA loop, no "
        "compile, as the official release), in the same run, and print the ratio.",
    )
    p.add_argument("--model", default="DiT-S/4", help="model name (the paper's figures: DiT-XL/2, DiT-B/4)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="training batch size")
    p.add_argument("--input-size", type=image_side, default=32, help="latent side (32 = 256 px through the SD VAE)")
    p.add_argument("--in-channels", type=positive_int, default=4, help="input channels (4 for SD-VAE latents)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="classes")
    p.add_argument("--train-steps", type=positive_int, default=5, help="timed training steps (after --warmup)")
    p.add_argument("--warmup", type=non_negative_int, default=2,
                   help="untimed warm-up steps (compilation, kernel selection)")
    p.add_argument("--sample-images", type=non_negative_int, default=4,
                   help="images sampled in the sampling benchmark (0: skip it)")
    p.add_argument("--sample-steps", type=positive_int, default=10,
                   help="DDPM steps of the sampling benchmark (the paper: 250)")
    p.add_argument("--cfg-scale", type=finite_float, default=1.5, help="guidance scale of the sampling benchmark")
    p.add_argument("--checkpoint-blocks", type=non_negative_int, default=0,
                   help="recompute the first K blocks' activations in backward (memory for time; default 0)")
    p.add_argument("--sample-compile-mode", default="default",
                   help="the fast path's compile mode for sampling: default, reduce-overhead (CUDA graphs) or "
                   "max-autotune")
    p.add_argument("--find-micro-batch", action="store_true",
                   help="also search the largest --micro-batch-size with which a step of --batch-size fits the GPU "
                   "(halving; e.g. the paper's batch 256 for DiT-XL/2 on one GPU)")
    p.add_argument("--paths", nargs="+", default=["reference", "fast"], help="paths to time: reference, fast")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", help="also write the figures to this JSON file (an existing file needs --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("--save", metavar="FILE.json",
                   help="merge the figures into this throughput table (with device, settings and versions) for "
                   "`scaling plan --throughput`; a row measured again replaces the old one")
    p.set_defaults(func=run)


def save_throughput(path, args, rows: list[dict]):
    """Merge the measured rows into the throughput table at `path`."""
    from dit.distributed import pick_device
    from dit.models import dit_config
    from scaling.bench import path_options
    from scaling.flops import gflops
    from scaling.throughput import bench_rows, device_identity, save_rows

    device = pick_device(args.device)
    geometry = dict(input_size=args.input_size, in_channels=args.in_channels, num_classes=args.num_classes)
    g = gflops(dit_config(args.model, **geometry))
    sampling = (dict(sampler="ddpm", steps=args.sample_steps, cfg_scale=args.cfg_scale, batch_size=args.sample_images)
                if args.sample_images else None)
    identity = device_identity(device)
    table = [r for row in rows for r in bench_rows(
        row, model=args.model, gflops=g, geometry=geometry, batch_size=args.batch_size,
        options=path_options(row["path"], device), sampling=sampling, identity=identity)]
    save_rows(path, table)
    print(f"saved {len(table)} rows to {path}")


def run(args):
    import json

    from dit.io import atomic_write_text, replaces
    from scaling.bench import bench_sampling, bench_training, find_micro_batch

    if args.json:
        replaces(args.json, ours=False, force=args.force, option="--json")
    geometry = dict(
        input_size=args.input_size, in_channels=args.in_channels, num_classes=args.num_classes, device=args.device
    )
    rows = []
    for path in args.paths:
        row = bench_training(
            args.model, path=path, batch_size=args.batch_size, steps=args.train_steps, warmup=args.warmup,
            checkpoint_blocks=args.checkpoint_blocks, **geometry
        )
        if args.sample_images:
            row |= bench_sampling(
                args.model,
                path=path,
                num_images=args.sample_images,
                sampling_steps=args.sample_steps,
                cfg_scale=args.cfg_scale,
                compile_mode=args.sample_compile_mode,
                **geometry,
            )
        if args.find_micro_batch:
            row["largest_micro_batch"] = find_micro_batch(args.model, path=path, batch_size=args.batch_size, **geometry)
        rows.append(row)
    print_rows(args, rows)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    if args.save:
        save_throughput(args.save, args, rows)


def print_rows(args, rows: list[dict]):
    """The measured figures as a table, the micro-batch search's answer, and fast / reference ratios."""
    print(f"{args.model}, batch {args.batch_size}, {args.input_size}x{args.input_size}x{args.in_channels}")
    print(f"{'path':<10} {'train img/s':>12} {'peak GiB':>9} {'sample img/s':>13}")
    for row in rows:
        print(
            f"{row['path']:<10} {row['train_images_per_sec']:>12.1f} {row['peak_mem_gb']:>9.1f} "
            f"{row.get('sample_images_per_sec', float('nan')):>13.2f}"
        )
    for row in rows if args.find_micro_batch else []:
        m = row["largest_micro_batch"]
        print(f"{row['path']}: " + ("the micro-batch search needs a GPU (on a CPU memory is not the limit)" if m is None
                                    else f"largest micro-batch that fits for batch {args.batch_size}: {m}"))
    if len(rows) == 2:
        ratio = rows[1]["train_images_per_sec"] / rows[0]["train_images_per_sec"]
        print(f"{rows[1]['path']} / {rows[0]['path']}: training x{ratio:.2f}", end="")
        if args.sample_images:
            print(f", sampling x{rows[1]['sample_images_per_sec'] / rows[0]['sample_images_per_sec']:.2f}", end="")
        print()
