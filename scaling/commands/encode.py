"""`scaling encode`: encode a dataset once into a latent cache (VAE posterior of each image and its flip)."""
from scaling.commands.argtypes import image_side, non_negative_int, positive_int

DESCRIPTION = """\
Encode a dataset once into a latent cache that `scaling train --data LATENTS` reads.

For every image and its horizontal flip the cache stores the Stable Diffusion VAE's posterior
mean and std (fp16, one memory-mapped array; labels and meta.json beside it). Training from the
cache draws a fresh flip and a fresh posterior sample 0.18215 * (mean + std * eps) for every item,
the randomness of encoding on the fly (DiT's train.py) at the speed of pre-extracted features.

The cache is written to LATENTS.partial and renamed to LATENTS when complete: a killed encode
never leaves a cache that loads, and re-running the same command resumes it. An existing
LATENTS is never overwritten.

The VAE weights load from a local folder (AutoencoderKL.save_pretrained layout, or a pipeline
folder with a vae/ sub-folder) or from a hub id already in the Hugging Face cache; add --download
to fetch a hub id where there is network.

examples:
  scaling encode --data imagenet/train --vae stabilityai/sd-vae-ft-ema --out latents/imagenet256
  scaling encode --data faces/ --vae ./sd-vae-ft-mse --out latents/faces128 --resolution 128
  scaling encode --data mnist32 --codec identity --out latents/mnist32"""

VAE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # --precision -> torch dtype name


def add_parser(subparsers):
    import argparse

    from dit.latents import CODECS

    p = subparsers.add_parser("encode",
                              help="encode a dataset once into a latent cache (VAE posterior of each image and its "
                                  "flip)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="image folder (class_name/*.JPEG, labels by sorted class name) or 'mnist32'")
    p.add_argument("--vae", metavar="ID_OR_PATH",
                   help="VAE weights: a local folder or a hub id such as stabilityai/sd-vae-ft-ema (needed for "
                       "--codec sd-vae)")
    p.add_argument("--out", required=True, metavar="LATENTS", help="cache folder to create (must not exist)")
    p.add_argument("--codec", default="sd-vae", choices=CODECS.names(),
                   help="sd-vae (default) or identity (pixel space, no VAE)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="store each image's mirror too, so training draws random flips (default: on for image "
                       "folders, off for mnist32, whose digits must not be mirrored)")
    p.add_argument("--resolution", type=image_side, default=None,
                   help="image side after ADM's centre crop (default 256 for image folders; MNIST-32 keeps 32)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="images per VAE call (each is encoded with its flip, so the VAE sees twice as many) (default "
                       "64)")
    p.add_argument("--num-workers", type=non_negative_int, default=None,
                   help="data loader processes decoding images (default: min(8, CPU count))")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when available, else cpu), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", *VAE_DTYPES),
                   help="VAE precision; auto = bf16 on GPU, fp32 on CPU (default auto)")
    p.add_argument("--download", action="store_true",
                   help="download a hub id that is not in the local Hugging Face cache (needs network)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def resolve_device_dtype(device: str, precision: str):
    """'auto' -> cuda when available (bf16) else cpu (fp32)."""
    import torch

    from dit.distributed import pick_device

    device = pick_device(device)
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return device, getattr(torch, VAE_DTYPES[precision])


def run(args):
    import os
    import time
    from pathlib import Path

    from dit import latent_cache, latents
    from dit.data import MNIST_NAME, build_dataset

    out = Path(args.out)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out or delete it (nothing was overwritten)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset = build_dataset(args.data, resolution=args.resolution, train=True, flip=False)
    if isinstance(dataset, latent_cache.LatentCacheDataset):
        raise ValueError(f"{args.data} is already a latent cache; give the image folder it was encoded from")
    device, dtype = resolve_device_dtype(args.device, args.precision)
    codec = latents.get_codec(args.codec, vae=args.vae, device=device, dtype=dtype, download=args.download)
    workers = min(8, os.cpu_count() or 1) if args.num_workers is None else args.num_workers
    start = time.perf_counter()
    latent_cache.encode_dataset(dataset, codec, out, batch_size=args.batch_size, num_workers=workers,
                           progress=args.progress, flip=args.flip if args.flip is not None else args.data != MNIST_NAME,
                           source=str(args.data))
    seconds = time.perf_counter() - start
    meta = latent_cache.read_cache_meta(out)
    size_gb = (out / "moments.npy").stat().st_size / 1e9
    print(f"wrote {out}: {meta['count']} images x {meta['flips']} flips, latents "
        f"{meta['latent_channels']}x{meta['latent_size']}x{meta['latent_size']} "
          f"({meta['codec']}), {len(meta['class_names'])} classes, {size_gb:.2f} GB, {seconds:.0f} s")
