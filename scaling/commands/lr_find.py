"""`scaling lr-find`: the learning-rate range test, as a plot and a suggested maximum rate."""
import argparse

from scaling.commands.argtypes import bounded_int, positive_float

LR_FIND_MIN_STEPS = 5  # fewer rates than this show no curve to read a maximum from


def add_parser(subparsers):
    import dataclasses
    import typing

    from dit.config import TrainConfig
    from scaling.commands.train import add_field_option
    from study.layout import RunLayout

    layout = RunLayout(".")
    p = subparsers.add_parser(
        "lr-find", help="learning-rate range test: plot loss against an exponentially rising rate",
        description="Train a fresh model for a few hundred steps while the learning rate rises exponentially from "
        f"--min-lr to --max-lr, stop when the loss diverges, and write {layout.lr_find_png.name} and "
        f"{layout.lr_find_json.name}. Takes the same model and data options as `scaling train` (e.g. --model DiT-T/4 "
        "--data mnist32 --batch-size 64).",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--out", default="lr-find", help="output folder, e.g. a run directory (default: ./lr-find)")
    p.add_argument("--min-lr", type=positive_float, default=1e-6, help="first learning rate")
    p.add_argument("--max-lr", type=positive_float, default=1e-2, help="last learning rate")
    p.add_argument("--num-steps", type=bounded_int(LR_FIND_MIN_STEPS), default=200, help="steps of the test")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name not in ("lr", "steps", "lr_schedule", "warmup_steps"):
            add_field_option(p, field, hints[field.name])
    p.set_defaults(func=run)


def run(args):
    import dataclasses
    import json

    from dit.config import TrainConfig, config_from_dict
    from dit.io import atomic_path, atomic_write_text
    from dit.lr_find import lr_range_test
    from reports.lr_find import plot_lr_range_test
    from study.layout import RunLayout

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    config = config_from_dict({k: v for k, v in vars(args).items() if k in names})
    result = lr_range_test(config, min_lr=args.min_lr, max_lr=args.max_lr, num_steps=args.num_steps,
                           progress=not getattr(args, "no_progress", False))
    out = RunLayout(args.out)
    atomic_write_text(out.lr_find_json, json.dumps({"config": config.to_dict(), **result}, indent=1) + "\n")
    fig = plot_lr_range_test(result, title=f"Learning-rate range test: {config.model}, batch {config.batch_size}")
    with atomic_path(out.lr_find_png) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    diverged = f"; the loss diverged at {result['diverged_lr']:.1e}" if result["diverged_lr"] else ""
    print(f"lowest loss at lr {result['min_loss_lr']:.1e}{diverged}; suggested maximum lr {result['suggested_lr']:.1e}")
    print(f"wrote {out.lr_find_png} and {out.lr_find_json}")
