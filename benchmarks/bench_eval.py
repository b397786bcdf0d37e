"""Evaluation speed and precision: this project's evaluator beside torch-fidelity, in the same run.

The issue's reference point (one H100, 50,000 samples against 10,000 reference images at 256 px):
torch-fidelity 0.4.0 at batch 256 takes 22.5 s for FID and 41.4 s for FID + IS + precision/recall,
with no sFID; the target is all five metrics, sFID included, in at most 20 s from the npz files.

    python benchmarks/bench_eval.py                       # GPU: 50,000 vs 10,000 at 256 px
    python benchmarks/bench_eval.py --device cpu --num-samples 200 --num-ref 100 --resolution 64

Images are random low-frequency patterns written to uncompressed npz files first (not timed).
Without --inception-weights the network has random weights: the timings hold, the metric values
mean nothing. `--precisions fp32 tf32 bf16` also measures how far tf32/bf16 move the features
from fp32 (largest relative L2 error per image); on a CPU tf32 is emulated.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_images(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 (n, size, size, 3): 8 x 8 random colour blocks, upsampled (cheap to make, not white noise)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    cell = size // 8
    for i in range(0, n, 1000):
        blocks = rng.integers(0, 256, size=(min(1000, n - i), 8, 8, 3), dtype=np.uint8)
        out[i : i + len(blocks)] = blocks.repeat(cell, axis=1).repeat(cell, axis=2)
    return out


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def ours(samples: Path, ref: Path, weights: Path, device: str, batch_size: int, precision: str) -> dict:
    """The full `scaling eval` path, npz files to the five numbers, with a split of where the time goes."""
    from eval.evaluate import compute_metrics, evaluate_samples
    from eval.extract import extract_features
    from eval.features import get_extractor
    from eval.images import NpzImages
    from eval.reference import read_reference, stats_from_features

    metrics, total = timed(lambda: evaluate_samples(samples, ref, "inception", device=device, batch_size=batch_size,
                                                     inception_weights=weights, precision=precision, progress=False))
    extractor = get_extractor("inception", device, weights=weights, precision=precision)
    feats, t_samples = timed(
        lambda: extract_features(NpzImages(samples), extractor, batch_size=batch_size, progress=False)
    )
    ref_feats, t_ref = timed(
        lambda: extract_features(read_reference(ref).images, extractor, batch_size=batch_size, progress=False)
    )
    _, t_metrics = timed(lambda: compute_metrics(feats, stats_from_features(ref_feats), ref_feats))
    return {
        "total_s": total,
        "sample_features_s": t_samples,
        "ref_features_s": t_ref,
        "metrics_s": t_metrics,
        **metrics,
    }


def torch_fidelity(samples: Path, ref: Path, weights: Path, device: str, batch_size: int, metrics: dict) -> float:
    """torch-fidelity's calculate_metrics on the same arrays (loaded whole first, as its inputs must be datasets)."""
    import torch_fidelity as tf

    class Images(torch.utils.data.Dataset):
        def __init__(self, path):
            with np.load(path) as f:
                self.images = torch.from_numpy(f["arr_0"])  # (N, H, W, 3) uint8

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i].permute(2, 0, 1)

    def run():
        return tf.calculate_metrics(
            input1=Images(samples),
            input2=Images(ref),
            cuda=device == "cuda",
            batch_size=batch_size,
            feature_extractor="inception-v3-compat",
            feature_layer_prc="2048",
            feature_extractor_weights_path=str(weights),
            cache=False,
            verbose=False,
            **metrics,
        )

    return timed(run)[1]


def precision_effect(samples: Path, weights: Path, device: str, batch_size: int, precision: str, n: int = 256) -> dict:
    """Largest relative L2 error per image of each feature in `precision` against fp32.

    On a CPU, tf32 is emulated: convolution inputs and weights rounded to TF32's 10 mantissa bits,
    products accumulated in fp32, as tensor cores do.
    """
    from eval.features import get_extractor
    from eval.images import NpzImages

    images = torch.from_numpy(NpzImages(samples).head(n)).permute(0, 3, 1, 2).to(device)  # (n, 3, H, W)
    base = get_extractor("inception", device, weights=weights, precision="fp32")
    emulate = precision == "tf32" and torch.device(device).type == "cpu"
    other = get_extractor("inception", device, weights=weights, precision="fp32" if emulate else precision)
    if emulate:
        round_convs_to_tf32(other)
    errors = {name: 0.0 for name in ("pool", "spatial", "logits")}
    for chunk in images.split(batch_size):
        reference, changed = base(chunk), other(chunk)
        for name in errors:
            a, b = getattr(changed, name), getattr(reference, name)
            errors[name] = max(errors[name], ((a - b).norm(dim=1) / b.norm(dim=1)).max().item())
    return errors


def round_convs_to_tf32(module: torch.nn.Module):
    """Round every convolution's weights and inputs to TF32 (1 sign, 8 exponent, 10 mantissa bits)."""
    def to_tf32(t: torch.Tensor) -> torch.Tensor:
        bits = t.float().contiguous().view(torch.int32)
        return ((bits + (1 << 12)) & ~((1 << 13) - 1)).view(torch.float32)  # round half up at bit 13

    for conv in (m for m in module.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.weight.data = to_tf32(conv.weight.data)
        conv.register_forward_pre_hook(lambda m, inputs: (to_tf32(inputs[0]),))


def parse_args() -> argparse.Namespace:
    """The benchmark's options; defaults are the paper's scale on a GPU and a quick check on a CPU."""
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument("--num-samples", type=int, default=50_000 if cuda else 200)
    p.add_argument("--num-ref", type=int, default=10_000 if cuda else 100)
    p.add_argument("--resolution", type=int, default=256 if cuda else 64)
    p.add_argument(
        "--batch-size", type=int, default=256 if cuda else 50, help="for both evaluators (torch-fidelity's figure: 256)"
    )
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "tf32", "bf16"])
    p.add_argument("--inception-weights", help="real weights; default: random weights of the same network")
    p.add_argument("--skip-torch-fidelity", action="store_true")
    p.add_argument("--workdir", help="where the npz files go (default: a temporary folder)")
    p.add_argument("--json", help="write the results here too")
    return p.parse_args()


def ours_line(precision: str, r: dict) -> str:
    """One line of our evaluator's timings and metrics at one precision."""
    line = (f"ours [{precision}]: all five metrics {r['total_s']:.1f} s (sample features "
            f"{r['sample_features_s']:.1f} s, reference features {r['ref_features_s']:.1f} s, "
            f"metrics {r['metrics_s']:.1f} s); "
            + ", ".join(f"{k} {r[k]:.4g}" for k in ("fid", "sfid", "inception_score", "precision", "recall")))
    if precision != "fp32":
        line += "; max relative feature error vs fp32: " + ", ".join(
            f"{k} {v:.1e}" for k, v in r["max_rel_feature_error_vs_fp32"].items())
    return line


def main():
    args = parse_args()
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        samples, ref = tmp / "samples.npz", tmp / "ref.npz"
        np.savez(samples, arr_0=synthetic_images(args.num_samples, args.resolution, seed=1))
        np.savez(ref, arr_0=synthetic_images(args.num_ref, args.resolution, seed=2))
        if args.inception_weights:
            weights = Path(args.inception_weights)
        else:
            from eval.features.inception import random_inception_weights

            weights = random_inception_weights(tmp / "inception-random.pth")
        print(f"{args.num_samples} samples vs {args.num_ref} reference images at {args.resolution} px on {args.device}"
              f"{' (' + torch.cuda.get_device_name() + ')' if args.device == 'cuda' else ''}, batch {args.batch_size}")
        results = {"setup": vars(args), "ours": {}, "torch_fidelity": {}}
        for precision in args.precisions:
            r = ours(samples, ref, weights, args.device, args.batch_size, precision)
            if precision != "fp32":
                r["max_rel_feature_error_vs_fp32"] = precision_effect(
                    samples, weights, args.device, args.batch_size, precision
                )
            results["ours"][precision] = r
            print(ours_line(precision, r))
        if not args.skip_torch_fidelity:
            for name, metrics in (("fid", {"fid": True}), ("fid+isc+prc", {"fid": True, "isc": True, "prc": True})):
                seconds = torch_fidelity(samples, ref, weights, args.device, args.batch_size, metrics)
                results["torch_fidelity"][name] = seconds
                print(f"torch-fidelity {name}: {seconds:.1f} s (no sFID)")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
