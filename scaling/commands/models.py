"""`scaling models`: the model table (sizes x patch sizes) with depth, width, heads and parameters."""
from scaling.commands.argtypes import image_side, positive_int
from scaling.commands.output import TABLE_FORMATTERS, add_format_argument, format_rows


def add_parser(subparsers):
    p = subparsers.add_parser(
        "models",
        help="list DiT sizes with depth, width, heads and parameter counts",
        description="List the DiT sizes (the paper's S/B/L/XL and tiny T/M for CPU work) with their parameter counts.",
    )
    p.add_argument("--input-size", type=image_side, default=32,
                   help="latent/pixel grid side (32 = 256 px through the SD VAE)")
    p.add_argument("--in-channels", type=positive_int, default=4,
                   help="input channels (4 for SD-VAE latents, 1 for MNIST)")
    p.add_argument("--num-classes", type=positive_int, default=1000, help="number of classes (1000 for ImageNet)")
    p.add_argument("--patch-sizes", type=positive_int, nargs="+", default=[2, 4, 8], help="patch sizes to list")
    add_format_argument(p)
    p.set_defaults(func=run)


def run(args):
    import torch

    from dit.models import MODEL_SIZES, count_params, create_dit

    rows = []
    for size, (depth, width, heads) in MODEL_SIZES.items():
        for patch in args.patch_sizes:
            name = f"DiT-{size}/{patch}"
            with torch.device("meta"):
                model = create_dit(
                    name, input_size=args.input_size, in_channels=args.in_channels, num_classes=args.num_classes
                )
            rows.append(dict(model=name, depth=depth, width=width, heads=heads, tokens=model.config.num_tokens,
                             params=count_params(model)))
    print(format_rows(rows, args.format, TABLE_FORMATTERS))
