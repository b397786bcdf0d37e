"""`scaling coord-check`: μP's coordinate check, a figure and each layer's spread across widths."""


def add_parser(subparsers):
    p = subparsers.add_parser(
        "coord-check", help="μP's coordinate check: mean |activation| per layer against width, SP and μP",
        description="Train a tiny DiT at each width for a few Adam steps on a fixed synthetic batch, under each "
        "parametrization, and draw each layer's mean |activation| against width (coord-check.png, records in "
        "coord-check.json). Flat curves: the learning rate transfers across widths (μP); growing: it does not (SP).")
    p.add_argument("--out", default="coord-check", help="output folder (default: ./coord-check)")
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256], help="widths (default 32 to 256)")
    p.add_argument("--steps", type=int, default=5, help="Adam steps (default 5)")
    p.add_argument("--lr", type=float, default=1e-2, help="learning rate (default 1e-2)")
    p.add_argument("--depth", type=int, default=2, help="blocks (default 2)")
    p.set_defaults(func=run)


def run(args):
    import json
    from pathlib import Path

    from dit.coord_check import CoordCheck, coord_check, spread
    from dit.io import atomic_path, atomic_write_text
    from reports.coord_check import plot_coord_check

    check = CoordCheck(widths=tuple(args.widths), steps=args.steps, lr=args.lr, depth=args.depth)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for coord-check.png and coord-check.json")
    records = coord_check(check)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "coord-check.json", json.dumps(records, indent=1) + "\n")
    with atomic_path(out / "coord-check.png") as tmp:
        plot_coord_check(records).savefig(tmp, format="png", dpi=120)
    print(f"max / min over widths {list(check.widths)} of mean |activation| at step {check.steps - 1}:")
    for param in check.parametrizations:
        cells = ", ".join(f"{layer} {value:.2f}" for layer, value in spread(records, param).items())
        print(f"  {param}: {cells}")
    print(f"wrote {out / 'coord-check.png'} and {out / 'coord-check.json'}")
