"""`scaling ref-stats`: reference statistics (ADM .npz layout) of a data set, for `scaling eval`."""
from scaling.commands.argtypes import image_side, non_negative_int, positive_int
from scaling.commands.eval import add_feature_options, one_line_warnings


def add_parser(subparsers):
    p = subparsers.add_parser(
        "ref-stats", help="write reference statistics (ADM .npz layout) of a data set",
        description="Compute the mean and covariance of the pool and spatial features of every image in --data "
        "('mnist32', an .npz with arr_0, or an image folder centre-cropped to --resolution as ADM does) and keep "
        "--num-images of the images (picked at random) for precision/recall. The file has ADM's keys (mu, sigma, "
        "mu_s, sigma_s, arr_0), so ADM's evaluator reads it too. Runs as one process.",
    )
    p.add_argument("--data", required=True, help="'mnist32', an .npz (arr_0 uint8 N x H x W x C) or a folder of images")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument(
        "--resolution",
        type=image_side,
        help="image side: centre-crop size for folders (default 256); mnist32 digits are resized to it (default 32); "
            "ignored for .npz",
    )
    p.add_argument(
        "--num-images",
        type=positive_int,
        default=10_000,
        help="reference images kept in arr_0 for precision/recall (ADM: 10,000)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random choice of kept images")
    add_feature_options(p)
    p.set_defaults(func=run)


def run(args):
    from eval.reference import make_reference

    if args.num_images < 1:
        raise ValueError(f"--num-images must be at least 1, got {args.num_images}")
    with one_line_warnings("ref-stats"):
        out = make_reference(args.data, args.out, args.features, resolution=args.resolution, num_images=args.num_images,
                             seed=args.seed, device=args.device, batch_size=args.batch_size,
                             inception_weights=args.inception_weights, precision=args.precision,
                             progress=not args.no_progress)
    print(f"wrote {out}")
