"""SD-VAE encode / decode throughput (images/s) and peak memory, fp32 against bf16, through dit.latents.

The speed of a network does not depend on its weights, so without --vae the VAE is randomly
initialised with the Stable Diffusion VAE's architecture (dit.latents.SD_VAE_CONFIG).

    python benchmarks/bench_vae.py                                    # GPU: 256 px, batch 128, fp32 vs bf16
    python benchmarks/bench_vae.py --vae stabilityai/sd-vae-ft-ema --channels-last
    python benchmarks/bench_vae.py --device cpu --resolution 64 --batch-size 2 --iters 2 --warmup 1

`scaling encode` runs the encoder on each image and its mirror, so its dataset rate is about half the
encode rate printed here (plus image decoding on the CPU, which --num-workers spreads).
"""
import argparse
import json
import time

import torch

from dit.io import atomic_write_text
from dit.latents import SD_VAE_CONFIG, SDVAECodec, get_codec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--vae", help="VAE weights (local folder or cached hub id); default: random init, SD-VAE architecture"
    )
    p.add_argument("--resolution", type=int, default=256, help="image side (default 256)")
    p.add_argument("--batch-size", type=int, default=128, help="images per call (default 128)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES), help="default: fp32 bf16")
    p.add_argument("--iters", type=int, default=10, help="timed calls per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--channels-last", action="store_true", help="run the VAE in channels-last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder (GPU; slow to start)")
    p.add_argument("--json", help="also write the rates here")
    p.add_argument("--no-tf32", dest="tf32", action="store_false", help="fp32 without TF32 matmuls/convolutions on GPU")
    return p.parse_args()


def build_codec(args, device, dtype):
    if args.vae:
        codec = get_codec("sd-vae", vae=args.vae, device=device, dtype=dtype)
    else:
        from diffusers import AutoencoderKL

        codec = SDVAECodec(
            AutoencoderKL(**SD_VAE_CONFIG), source="random init (SD-VAE config)", device=device, dtype=dtype
        )
    if args.channels_last:
        codec.model.to(memory_format=torch.channels_last)
    if args.compile:  # the warm-up calls compile; the timed ones replay
        codec.model.encoder = torch.compile(codec.model.encoder)
        codec.model.decoder = torch.compile(codec.model.decoder)
    return codec


def images_per_second(fn, x, args, device) -> tuple[float, float]:
    """(images/s, peak GiB) of fn(x) over args.iters calls after args.warmup."""
    is_cuda = device.type == "cuda"
    for _ in range(args.warmup):
        fn(x)
    if is_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.iters):
        fn(x)
    if is_cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if is_cuda else float("nan")
    return args.iters * len(x) / seconds, peak


def main():
    args = parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"SD-VAE on {name}, {args.resolution} px, batch {args.batch_size}, weights: {args.vae or 'random init'}, "
          f"channels-last: {args.channels_last}, compile: {args.compile}, torch {torch.__version__}")
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    images = (torch.rand(args.batch_size, 3, args.resolution, args.resolution, device=device) * 2 - 1).contiguous(
        memory_format=memory_format
    )
    print(f"{'precision':<10} {'encode img/s':>13} {'peak GiB':>9} {'decode img/s':>13} {'peak GiB':>9}")
    rates, results = {}, {}
    for precision in args.precisions:
        codec = build_codec(args, device, DTYPES[precision])
        latents = (
            codec.sample_latent(*codec.encode_moments(images[:1]))
            .expand(args.batch_size, -1, -1, -1)
            .contiguous(memory_format=memory_format)
        )
        enc, enc_mem = images_per_second(codec.encode_moments, images, args, device)
        dec, dec_mem = images_per_second(codec.decode, latents, args, device)
        rates[precision] = enc, dec
        results[precision] = dict(encode_images_per_sec=enc, encode_peak_gb=enc_mem, decode_images_per_sec=dec,
                                  decode_peak_gb=dec_mem)
        print(f"{precision:<10} {enc:>13.1f} {enc_mem:>9.1f} {dec:>13.1f} {dec_mem:>9.1f}")
        del codec
    if "fp32" in rates:
        for precision, (enc, dec) in rates.items():
            if precision != "fp32":
                print(f"{precision} / fp32: encode x{enc / rates['fp32'][0]:.2f}, decode x{dec / rates['fp32'][1]:.2f}")
    if args.json:
        atomic_write_text(
            args.json, json.dumps({"setup": vars(args), "device": name, "rates": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
