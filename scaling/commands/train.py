"""`scaling train`: train one DiT (or resume it) in a run directory; torchrun for several GPUs."""
import argparse
import dataclasses
import typing

HELP = {
    "model": "model name, e.g. DiT-XL/2, DiT-B/4, DiT-T/4 (tiny, for CPU), "
             "DiT-custom/4 with --depth/--hidden-size/--num-heads",
    "init": "start model and EMA from these weights at step 0: a checkpoint, an official .pt, "
            "a diffusers DiT folder or a .safetensors file",
    "block": "conditioning block: in-context, cross-attn, adaln, adaln-zero (the paper's default)",
    "data": "'mnist32' (offline digits), an image folder (class_name/*.JPEG) or a latent cache from `scaling encode`",
    "resolution": "image side in pixels (default: the data set's own; 256 for image folders)",
    "codec": "identity (pixels or a latent cache) or sd-vae (encode images through the VAE every step)",
    "vae": "diffusers AutoencoderKL hub id or local folder, for --codec sd-vae",
    "steps": "train until this many optimiser steps (raise it to extend a finished run)",
    "batch_size": "global batch size, split across processes",
    "micro_batch_size": "gradient accumulation: each process's rows in chunks of N (same result, less memory)",
    "lr_schedule": "constant (the paper), cosine or one-cycle",
    "keep_every": "also keep every checkpoint at a multiple of this many steps (evaluation points)",
    "sample_every": "write an EMA sample grid every N steps (default: at each checkpoint)",
    "precision": "fp32 or bf16 (autocast; the schedule math stays in float32/64)",
    "device": "auto, cpu, cuda",
    "checkpoint_blocks": "recompute the activations of only the first K blocks in backward (memory for time; "
    "default: all or none, as --grad-checkpointing)",
    "ema_sigma_rels": "relative length of a power-function EMA profile tracked for `scaling ema` (EDM2), in "
                      "(0, 0.2887]; repeatable (default: 0.05 and 0.10; an empty list in --config for none)",
    "ema_snapshot_every": "snapshot the power-function EMA profiles every N steps (and at the last step)",
    "ema_snapshot_precision": "fp16 or fp32, of the EMA snapshots",
    "loggers": "also log to tensorboard (RUN_DIR/tensorboard/) or wandb (offline unless configured); repeatable",
}


EPILOG = """\
stopping and exit status:
  SIGTERM, SIGUSR1, SIGUSR2 or SIGINT (Ctrl-C) finish the current step, write a checkpoint there and exit
  with 128 + the signal's number (143 SIGTERM, 138 SIGUSR1, 140 SIGUSR2, 130 SIGINT); re-run the same
  command to resume exactly. A second signal stops at once. Under several processes they agree every 10 steps.
  A loss or gradient norm that becomes NaN or infinite stops the run with exit 2, naming the step and cause;
  nothing is written from that state. One process at a time trains a run directory ({lock});
  a second one ends with exit 2, naming the first."""


def add_parser(subparsers):
    from dit.config import TrainConfig
    from study.layout import RunLayout

    layout = RunLayout("RUN_DIR")
    p = subparsers.add_parser(
        "train", help="train a DiT in a run directory (re-run the same command to resume)",
        description="Train a DiT with the paper's recipe by default (AdamW 1e-4, batch 256, EMA 0.9999). "
        f"Options come from the defaults, then {layout.config} when resuming, then --config, then flags. "
        "Re-running the same command resumes from the latest checkpoint; for several GPUs launch it with "
        "`torchrun --nproc_per_node=N -m scaling.cli train ...`.",
        epilog=EPILOG.format(lock=layout.lock), formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument(
        "--run-dir",
        required=True,
        help=f"run directory ({layout.config.name}, {layout.checkpoints_dir.name}/, "
        f"{layout.train_log.name}, {layout.samples_dir.name}/)",
    )
    p.add_argument("--config", help="JSON or YAML file of training options")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--restart", action="store_true", help="train from step 0 when the run directory's checkpoints all "
                   "fail to read (refused without it)")
    for field in dataclasses.fields(TrainConfig):
        add_field_option(p, field, typing.get_type_hints(TrainConfig)[field.name])
    p.set_defaults(func=run)


def add_field_option(parser, field, hint):
    flag = "--" + field.name.replace("_", "-")
    default = f" (default: {field.default})"
    text = HELP.get(field.name, field.name.replace("_", " ")) + default
    if hint is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        return
    if typing.get_origin(hint) is tuple:  # repeatable, one item per flag: --logger a --logger b
        item = field.name.removesuffix("s")
        parser.add_argument(flag.removesuffix("s"), action="append", type=typing.get_args(hint)[0], dest=field.name,
                            metavar=item.upper(), help=text)
        return
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    parser.add_argument(flag, type=base, dest=field.name, help=text)


def resolve_config(args):
    """Defaults < the run directory's stored config < --config < flags given on the command line."""
    import dataclasses as dc

    from dit.config import TrainConfig, config_from_dict, read_options
    from study.layout import RunLayout

    fields = {}
    stored = RunLayout(args.run_dir).config
    if stored.exists():
        fields.update(read_options(stored))
    if getattr(args, "config", None):
        fields.update(read_options(args.config))
    names = {f.name for f in dc.fields(TrainConfig)}
    fields.update({k: v for k, v in vars(args).items() if k in names})
    return config_from_dict(fields)


def run(args):
    from dit.train import train

    config = resolve_config(args)
    record = train(
        config, args.run_dir, progress=not getattr(args, "no_progress", False), restart=getattr(args, "restart", False)
    )  # TrainingDiverged: exit 2; TrainingInterrupted: 128 + signal
    if record:
        print(
            f"trained to step {record['step']}: loss {record['loss']:.4f} in {record['wall_seconds']:.0f} s -> "
            f"{args.run_dir}"
        )
