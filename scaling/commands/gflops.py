"""`scaling gflops`: forward Gflops of one sample per model, as the paper counts them (fvcore)."""
from scaling.commands.argtypes import image_side, positive_int
from scaling.commands.output import TABLE_FORMATTERS, add_format_argument, format_rows
from study.blocks import DEFAULT_BLOCK

DESCRIPTION = """\
Print the forward Gflops of one sample of each model, as the DiT paper counts them: fvcore's
FlopCountAnalysis, one fused multiply-add = one flop, attention matmuls included.
Training compute is Gflops x batch size x steps x 3 (see `scaling plan`).

The defaults are the paper's 256 px setting (SD-VAE latents 32 x 32 x 4, 1000 classes);
--input-size 64 is 512 px, and MNIST in pixel space is --input-size 32 --in-channels 1 --num-classes 10.

examples:
  scaling gflops                                    the paper's 12 models at 256 px
  scaling gflops DiT-XL/2 --input-size 64           DiT-XL/2 at 512 px (524.6 Gflops in the paper)
  scaling gflops DiT-XL/2 --block in-context cross-attn adaln adaln-zero
  scaling gflops DiT-T/2 DiT-M/2 --input-size 16 --in-channels 1 --num-classes 10 --format csv"""

def add_parser(subparsers):
    import argparse

    p = subparsers.add_parser("gflops", help="forward Gflops of one sample per model, as the paper counts them",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help="model names such as DiT-XL/2 (default: the paper's 12, S/B/L/XL x p 8/4/2)",
    )
    p.add_argument(
        "--input-size",
        type=image_side,
        default=32,
        help="latent/pixel grid side (32 = 256 px through the SD VAE; 64 = 512 px) (default 32)",
    )
    p.add_argument(
        "--in-channels", type=positive_int, default=4,
        help="input channels (4 for SD-VAE latents, 1 for MNIST) (default 4)"
    )
    p.add_argument("--num-classes", type=positive_int, default=1000, help="number of classes (default 1000, ImageNet)")
    p.add_argument("--block", nargs="+", default=[DEFAULT_BLOCK], metavar="BLOCK",
                   help=f"conditioning block(s): in-context, cross-attn, adaln, adaln-zero (default {DEFAULT_BLOCK})")
    add_format_argument(p)
    p.set_defaults(func=run)


def run(args):
    from dit.models import PAPER_PATCH_SIZES, PAPER_SIZES, dit_config
    from scaling.flops import gflops, params

    names = args.models or [f"DiT-{s}/{p}" for s in PAPER_SIZES for p in sorted(PAPER_PATCH_SIZES, reverse=True)]
    rows = []
    for name in names:
        for block in args.block:
            config = dit_config(
                name,
                input_size=args.input_size,
                in_channels=args.in_channels,
                num_classes=args.num_classes,
                block=block,
            )
            rows.append(dict(model=name, block=block, input_size=args.input_size, tokens=config.num_tokens,
                             params=params(config), gflops=gflops(config)))
    print(format_rows(rows, args.format, TABLE_FORMATTERS))
