"""`scaling ema`: the EMA of any length, reconstructed after training from a run's power-function snapshots."""

DESCRIPTION = """\
Reconstruct the EMA of each relative length sigma_rel (EDM2's post-hoc EMA) at a step of a run trained
with ema_sigma_rels (by default it keeps profiles of sigma_rel 0.05 and 0.10, snapshotted every
ema_snapshot_every steps): the least-squares combination of the stored snapshots, read one at a time.
Each length is written as a checkpoint, RUN_DIR/posthoc-ema/step_NNNNNNN-ema<sigma_rel>.pt, that
`scaling sample`, `eval`, `fid` and `export` read like any other.

sigma_rel is the standard deviation of the averaging profile relative to the training time: lengths in
(0, 0.2887] (0.2887 is the plain mean of every step). The paper's EMA decay 0.9999 after 400K steps is
about 0.025.

examples:
  scaling ema --run-dir runs/demo/runs/DiT-M-4 --sigma-rel 0.05,0.1,0.15,0.2
  scaling ema --run-dir runs/xl2 --sigma-rel 0.02,0.05,0.1 --step 400000"""


def add_parser(subparsers):
    import argparse

    p = subparsers.add_parser("ema", help="reconstruct the EMA of any length from a run's snapshots (post-hoc EMA)",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="run directory of `scaling train` (with ema-snapshots/)")
    p.add_argument("--sigma-rel", required=True, metavar="S1,S2,...",
                   help="relative EMA lengths, comma-separated, each in (0, 0.2887]")
    p.add_argument("--step", type=int, help="the step to reconstruct at (a snapshot's; default: the last one)")
    p.set_defaults(func=run)


def parse_sigma_rels(text: str) -> list[float]:
    """'0.05,0.1' -> [0.05, 0.1], each checked; one line naming a bad item."""
    from dit.ema import check_sigma_rel

    values = []
    for item in (t.strip() for t in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--sigma-rel item {item!r} is not a number; give lengths like 0.05,0.1") from None
        check_sigma_rel(value)
        values.append(value)
    return list(dict.fromkeys(values))


def run(args):
    import time

    from dit.posthoc_ema import write_posthoc

    sigma_rels = parse_sigma_rels(args.sigma_rel)
    start = time.perf_counter()
    paths = write_posthoc(args.run_dir, sigma_rels, step=args.step)
    for sigma_rel, path in zip(sigma_rels, paths, strict=True):
        print(f"sigma_rel {sigma_rel:g}: {path}")
    print(f"{len(paths)} EMA(s) reconstructed in {time.perf_counter() - start:.1f} s")
