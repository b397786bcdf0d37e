"""`scaling eval`: FID, sFID, Inception Score, Precision and Recall of a samples .npz against a reference."""
import contextlib

from eval.features import EXTRACTORS, PRECISIONS
from eval.metric_groups import DEFAULT_METRICS, describe_groups
from scaling.commands.argtypes import positive_int
from scaling.commands.output import add_format_argument
from study.metrics import METRICS

# --features choices: the extractors that give every part of the features (dinov2 serves --metrics fd-dinov2)
FEATURE_CHOICES = tuple(name for name, e in EXTRACTORS.items() if all(e.dims.values()))


def add_parser(subparsers):
    p = subparsers.add_parser(
        "eval", help="FID, sFID, IS, precision and recall of samples.npz against a reference .npz",
        description="Evaluate samples (ADM layout: arr_0 uint8 N x H x W x C) against a reference batch: ADM's "
        "own (e.g. VIRTUAL_imagenet256_labeled.npz) or one from `scaling ref-stats`. The numbers follow ADM's "
        "TensorFlow evaluator, which the DiT paper used, computed in PyTorch. Under `torchrun --nproc_per_node=N "
        "-m scaling.cli eval ...` every GPU extracts a share of the features.",
    )
    p.add_argument("--samples", required=True, help="samples .npz (arr_0: uint8 images N x H x W x C)")
    p.add_argument("--ref", required=True, help="reference .npz (mu, sigma, mu_s, sigma_s and/or arr_0 images)")
    add_feature_options(p, from_reference=True)
    add_metric_options(p)
    p.add_argument(
        "--json",
        metavar="PATH",
        help="also write the metrics as JSON to PATH ('-': print one JSON line instead of the table); an existing "
        "file is refused unless --force",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    add_format_argument(p)
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (instead of warning) when there are fewer samples than feature dimensions",
    )
    p.set_defaults(func=run)


def add_metric_options(p):
    """Options shared by eval and fid: which metrics, and the DINOv2 weights of fd-dinov2."""
    p.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        metavar="LIST",
        help=f"comma-separated metrics out of {describe_groups()} (default: the paper's, {','.join(DEFAULT_METRICS)})",
    )
    p.add_argument("--dinov2-weights", metavar="PATH",
                   help="DINOv2 ViT-L/14 weights for fd-dinov2 (Meta's dinov2_vitl14_pretrain.pth); default: "
                   "$DIT_DINOV2_WEIGHTS, else the torch hub cache, downloading it when online")


def add_feature_options(p, *, from_reference: bool = False):
    """Options shared by eval, ref-stats and fid: which features, on what, how. With `from_reference` the
    features default to those the reference file records."""
    p.add_argument(
        "--features",
        default=None if from_reference else "inception",
        choices=FEATURE_CHOICES,
        help="inception: ADM's InceptionV3 (the paper's metrics); mnist: a small digit classifier for the MNIST-32 "
            "demo" + (" (default: the features the reference records, else inception)" if from_reference else ""),
    )
    p.add_argument("--inception-weights", metavar="PATH",
                   help="InceptionV3 weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth); "
                   "default: $DIT_INCEPTION_WEIGHTS, else the torch hub cache, downloading it when online")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=positive_int, help="images per feature batch (default: 250 on GPU, 50 on CPU)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS.names(),
        help="feature network precision: fp32 (exact), tf32 (GPU default, as PyTorch and TF run convolutions "
        "there; features within about 5e-4) or bf16 (about 4e-3; faster). See benchmarks/bench_eval.py",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    from dit.io import check_file_path, replaces
    from eval.evaluate import evaluate_samples
    from eval.metric_groups import parse_metrics

    metrics = parse_metrics(args.metrics)
    if args.json not in (None, "-"):
        check_file_path(args.json, "--json")
        replaces(args.json, ours=False, force=args.force, option="--json")
    with one_line_warnings("eval"), distributed() as is_main:
        result = evaluate_samples(args.samples, args.ref, args.features, metrics=metrics, device=args.device,
                                  batch_size=args.batch_size, inception_weights=args.inception_weights,
                                  dinov2_weights=args.dinov2_weights, precision=args.precision,
                                  strict=args.strict, progress=not args.no_progress)
        if is_main:
            report(result, args.json, args.format)


def report(result: dict, json_path: str | None, fmt: str = "table"):
    """Print the metrics as a table, CSV or JSON (one JSON line for `--json -`) and write JSON to `json_path`."""
    import json

    from dit.io import atomic_write_text
    from scaling.commands.output import format_rows, json_safe, note

    if json_path == "-":
        print(json.dumps(json_safe(result)))
        return
    if fmt == "table":
        print(format_metrics(result))
    else:
        print(json.dumps(json_safe(result), indent=1) if fmt == "json" else format_rows([result], "csv"))
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        (note if fmt != "table" else print)(f"wrote {json_path}")


def format_metrics(result: dict) -> str:
    # metrics not asked for are left out; so is class_accuracy when NaN (the extractor does not read the labels)
    shown = [m for m in METRICS.values() if m.column in result and (m.paper or result[m.column] == result[m.column])]
    lines = [f"{m.label:<16} {result[m.column]:.4f}" + (f" +- {result['kid_std']:.4f}" if m.column == "kid" else "")
             for m in shown]
    lines.append(f"{'samples':<16} {result['num_samples']} ({result['features']} features)")
    return "\n".join(lines)


@contextlib.contextmanager
def one_line_warnings(command: str):
    """Show warnings as `scaling COMMAND: warning: ...` lines on stderr."""
    import sys
    import warnings

    def show(message, *_, **__):
        print(f"scaling {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def distributed():
    """Join torchrun's process group when launched by it; yields whether this is the main process."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        yield True
        return
    from dit import distributed as dist

    info = dist.setup()
    try:
        yield info.is_main
    finally:
        dist.teardown()
