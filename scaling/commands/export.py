"""`scaling export`: a checkpoint's EMA weights as a diffusers DiT folder or a safetensors file."""
FORMATS = ("diffusers", "safetensors")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export", help="write a checkpoint's EMA weights as a diffusers DiT folder or a safetensors file",
        description="Export the EMA weights of a checkpoint (this project's, an official .pt, a diffusers folder or a "
        "safetensors file). --format diffusers writes an adaLN-Zero DiT as a DiTTransformer2DModel folder "
        "(save_pretrained layout), or with --vae a DiTPipeline folder; --format safetensors writes the weights in the "
        "official layout with the run config as metadata (any block). Both read back wherever a checkpoint is taken. "
        "diffusers embeds timesteps slightly differently (see the folder's README.md).",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint to export")
    p.add_argument("--format", required=True, choices=FORMATS, help="diffusers (a folder) or safetensors (a file)")
    p.add_argument("--out", required=True, help="output folder (diffusers) or .safetensors file")
    p.add_argument(
        "--vae",
        help="with --format diffusers: also write a DiTPipeline with this VAE (hub id in the cache or local folder)",
    )
    p.add_argument(
        "--model",
        help="expected model name, e.g. DiT-XL/2 (checked; needed for a safetensors file without our metadata)",
    )
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is not an earlier export (an export replaces its own without it)")
    p.set_defaults(func=run)


def run(args):
    from dit.export import export_diffusers, export_safetensors

    if args.format == "safetensors":
        if args.vae:
            raise ValueError("--vae goes with --format diffusers (a safetensors file holds only the DiT)")
        out = export_safetensors(args.ckpt, args.out, model_name=args.model, force=args.force)
    else:
        out = export_diffusers(args.ckpt, args.out, vae=args.vae, model_name=args.model, force=args.force)
    print(f"wrote {args.format} weights to {out}")
