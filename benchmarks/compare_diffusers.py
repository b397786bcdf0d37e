"""What diffusers' timestep embedding does to a trained DiT: outputs and FID, ours vs diffusers' model.

    python benchmarks/compare_diffusers.py --ckpt RUN/checkpoints/step_0000500.pt --ref mnist-ref.npz --num 300

The checkpoint's EMA weights run twice: in our DiT (the official embedding, frequencies k / 128) and,
exported, in diffusers' DiTTransformer2DModel (k / 127). Both sample with our DDPM sampler from the same
labels and noise; the samples of a pixel-space model are scored with --features (mnist for MNIST-32).
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from dit.checkpoint import load_model, read_checkpoint
from dit.data import build_dataset
from dit.diffusion import create_diffusion
from dit.export import diffusers_transformer
from dit.images import to_uint8
from dit.samplers import sample_ddpm
from eval.evaluate import evaluate_samples

TIMESTEPS = (0, 1, 10, 100, 250, 500, 750, 999)


def relative_rms(diff: torch.Tensor, ref: torch.Tensor) -> float:
    return (diff.pow(2).mean() / ref.pow(2).mean()).sqrt().item()


def output_deviation(ours, theirs, images: torch.Tensor, labels: torch.Tensor):
    """Per t: max |diff| and relative RMS of the outputs on noised data x_t (eps and variance channels)."""
    diffusion = create_diffusion("", "linear", ours.config.learn_sigma)
    gen = torch.Generator().manual_seed(0)
    for t in TIMESTEPS:
        ts = torch.full((len(images),), t)
        x_t = diffusion.q_sample(images, ts, torch.randn(images.shape, generator=gen))
        with torch.no_grad():
            a, b = ours(x_t, ts, labels), theirs(x_t, ts, class_labels=labels).sample
        c = ours.config.in_channels
        print(
            f"t={t:4d}  max|diff| {(a - b).abs().max().item():.2e}  rel. RMS eps "
            f"{relative_rms(a[:, :c] - b[:, :c], a[:, :c]):.2e}"
            f"  var {relative_rms(a[:, c:] - b[:, c:], a[:, c:]):.2e}"
        )


def sample_npz(model_fn, config, num: int, steps: int, out: Path, seed: int = 0) -> Path:
    diffusion = create_diffusion(str(steps), "linear", config.learn_sigma)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, config.num_classes, (num,), generator=gen)
    noise = torch.randn((num, config.in_channels, config.input_size, config.input_size), generator=gen)
    images = []
    for i in range(0, num, 100):
        y = labels[i:i + 100]
        images.append(
            to_uint8(sample_ddpm(diffusion, lambda x, t, y=y: model_fn(x, t, y), noise[i : i + 100], generator=gen))
        )
    np.savez(out, arr_0=np.concatenate(images), arr_1=labels.numpy())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--ref", required=True, help="reference statistics from `scaling ref-stats`")
    parser.add_argument("--features", default="mnist")
    parser.add_argument("--num", type=int, default=300)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    ours = load_model(read_checkpoint(args.ckpt))
    theirs = diffusers_transformer(ours)
    data = build_dataset("mnist32", resolution=ours.config.input_size, train=False)
    images = torch.stack([data[i][0] for i in range(64)])
    labels = torch.tensor([data[i][1] for i in range(64)])
    output_deviation(ours, theirs, images, labels)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"ours (official embedding)": lambda x, t, y: ours(x, t, y),
                "diffusers DiTTransformer2DModel": lambda x, t, y: theirs(x, t, class_labels=y).sample}
        for name, fn in runs.items():
            npz = sample_npz(fn, ours.config, args.num, args.steps, Path(tmp) / "s.npz")
            result = evaluate_samples(npz, args.ref, args.features, progress=False)
            print(
                f"{name}: FID {result['fid']:.2f}, class accuracy {result['class_accuracy']:.3f} ({args.num} samples, "
                f"{args.steps} DDPM steps)"
            )


if __name__ == "__main__":
    main()
