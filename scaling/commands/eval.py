"""`scaling eval`: FID, sFID, Inception Score, Precision and Recall of a samples .npz against a reference."""
import contextlib

from eval.features import EXTRACTORS, PRECISIONS
from study.metrics import METRICS


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
    add_feature_options(p)
    p.add_argument("--json", metavar="PATH", help="also write the metrics as JSON to PATH ('-': print one JSON line instead of the table)")
    p.add_argument("--strict", action="store_true", help="refuse (instead of warning) when there are fewer samples than feature dimensions")
    p.set_defaults(func=run)


def add_feature_options(p):
    """Options shared by eval, ref-stats and fid: which features, on what, how."""
    p.add_argument("--features", default="inception", choices=EXTRACTORS.names(),
                   help="inception: ADM's InceptionV3 (the paper's metrics); mnist: a small digit classifier for the MNIST-32 demo")
    p.add_argument("--inception-weights", metavar="PATH",
                   help="InceptionV3 weights file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth); "
                   "default: $DIT_INCEPTION_WEIGHTS, else the torch hub cache, downloading it when online")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=int, help="images per feature batch (default: 250 on GPU, 50 on CPU)")
    p.add_argument("--precision", choices=PRECISIONS.names(),
                   help="feature network precision: fp32 (exact), tf32 (GPU default, as PyTorch and TF run convolutions "
                   "there; features within about 5e-4) or bf16 (about 4e-3; faster). See benchmarks/bench_eval.py")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args):
    from eval.evaluate import evaluate_samples

    with one_line_warnings("eval"), distributed() as is_main:
        result = evaluate_samples(args.samples, args.ref, args.features, device=args.device, batch_size=args.batch_size,
                                  inception_weights=args.inception_weights, precision=args.precision,
                                  strict=args.strict, progress=not args.no_progress)
        if is_main:
            report(result, args.json)


def report(result: dict, json_path: str | None):
    """Print the metrics as a table (or one JSON line for '-') and write JSON to `json_path`."""
    import json

    from dit.io import atomic_write_text

    if json_path == "-":
        print(json.dumps(result))
        return
    print(format_metrics(result))
    if json_path:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")


def format_metrics(result: dict) -> str:
    # class_accuracy is NaN unless the extractor reads the labels, and validation loss is not a sample metric:
    # what the result lacks is left out
    shown = [m for m in METRICS.values() if m.paper or result.get(m.column, float("nan")) == result.get(m.column)]
    lines = [f"{m.label:<16} {result[m.column]:.4f}" for m in shown]
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
