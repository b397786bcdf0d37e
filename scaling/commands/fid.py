"""`scaling fid`: sample a checkpoint (FID-50K by default) and evaluate it, resumably."""
from scaling.commands.eval import add_feature_options, add_metric_options, distributed, one_line_warnings, report
from scaling.commands.output import add_format_argument
from scaling.commands.sample import add_sampling_options


def add_parser(subparsers):
    p = subparsers.add_parser(
        "fid", help="sample a checkpoint and compute FID, sFID, IS, precision and recall (FID-50K by default)",
        description="Sample --num images from a checkpoint (through `scaling sample`'s code) and evaluate them against "
        "--ref. Samples and metrics are written next to the checkpoint (or into --out-dir) as "
        "<ckpt>-<sampler>-<steps>-cfg<scale>-n<num>-seed<seed>.npz and ...-<features>.json. Re-running the same "
        "command resumes "
        "an interrupted sampling job and reuses finished samples and metrics. The paper's FID-50K: --num 50000 "
        "--steps 250 (DDPM), --cfg-scale 1.5 for its guided results.",
    )
    add_sampling_options(p, num_default=50_000)
    p.add_argument("--ref", required=True, help="reference .npz (ADM's or from `scaling ref-stats`)")
    p.add_argument("--sample-batch-size", type=int, default=64, help="images per sampling batch (and resumable shard)")
    p.add_argument("--out-dir", help="where samples and metrics go (default: the checkpoint's folder)")
    p.add_argument("--force", action="store_true", help="evaluate again even when the metrics file exists")
    add_feature_options(p, from_reference=True)
    add_metric_options(p)
    add_format_argument(p)
    p.set_defaults(func=run)


def run(args):
    import json
    from pathlib import Path

    from dit.sample import SampleConfig, generate_samples
    from eval.evaluate import evaluate_samples
    from eval.features import dinov2, inception
    from eval.images import NpzImages
    from eval.metric_groups import metric_columns, parse_metrics
    from eval.reference import features_to_use, read_reference
    from scaling.commands.output import note

    metrics = parse_metrics(args.metrics)
    ckpt = Path(args.ckpt)
    if not ckpt.exists():
        raise ValueError(f"checkpoint {ckpt} does not exist; give a .pt file (RUN_DIR/checkpoints/step_NNNNNNN.pt or "
                         f"an official DiT release), a diffusers DiT folder or a .safetensors file")
    config = SampleConfig(num=args.num, steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale,
                          seed=args.seed, batch_size=args.sample_batch_size)
    name = f"{ckpt.stem}-{config.sampler}-{config.steps}-cfg{config.cfg_scale:g}-n{config.num}-seed{config.seed}"
    stem = Path(args.out_dir or ckpt.parent) / name
    # a bad reference or missing weights fail now, not after hours of sampling
    features = features_to_use(args.features, read_reference(args.ref).stats)
    samples, metrics_path = stem.with_name(stem.name + ".npz"), stem.with_name(f"{stem.name}-{features}.json")
    done = json.loads(metrics_path.read_text()) if metrics_path.exists() and not args.force else {}
    if done and all(c in done for c in metric_columns(metrics)):
        (print if args.format == "table" else note)(f"{metrics_path} exists (--force evaluates again)")
        return report(done, None, args.format)
    if features == "inception":
        inception.resolve_weights(args.inception_weights)
    if "fd-dinov2" in metrics:
        dinov2.resolve_weights(args.dinov2_weights)
    with one_line_warnings("fid"), distributed() as is_main:
        if not (samples.exists() and NpzImages(samples).num == config.num):
            overrides = {"name": args.model} if args.model else {}
            generate_samples(ckpt, samples, config, device=args.device or "auto", progress=not args.no_progress,
                             model_overrides=overrides)
        result = evaluate_samples(samples, args.ref, features, metrics=metrics, device=args.device,
                                  batch_size=args.batch_size, inception_weights=args.inception_weights,
                                  dinov2_weights=args.dinov2_weights, precision=args.precision,
                                  progress=not args.no_progress)
        result = {**done, **result, "ckpt": str(ckpt), "ref": str(args.ref), "sampler": config.sampler,
                  "sampling_steps": config.steps, "cfg_scale": config.cfg_scale, "seed": config.seed}
        if is_main:
            report(result, str(metrics_path), args.format)
