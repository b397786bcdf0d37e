"""`scaling plan`: the runs of a grid with their params, Gflops and training compute, before anything runs."""

DESCRIPTION = """\
List the runs a grid spec (a YAML file or a shipped preset) would train: one per model x patch
size x block, with parameters, forward Gflops of one sample (as the paper counts them) and
training compute = Gflops x batch size x steps x 3 (the paper's definition). Nothing runs.

A malformed grid file, an unknown key or a model that does not fit the data fails with one
line naming the key and its line in the file.

examples:
  scaling plan --preset paper
  scaling plan demo --format csv
  scaling plan my-grid.yaml"""


def add_parser(subparsers):
    import argparse

    from scaling.commands.gflops import add_format_argument

    p = subparsers.add_parser("plan", help="list a grid's runs with params, Gflops and training compute",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", nargs="?", metavar="GRID_OR_PRESET", help="grid spec YAML file, or the name of a preset")
    p.add_argument("--preset", metavar="NAME", help="a shipped preset: paper, blocks, demo, demo-long")
    add_format_argument(p)
    p.set_defaults(func=run)


def plan_rows(runs) -> list[dict]:
    """One row per run: what it trains and what it costs."""
    from scaling.flops import gflops, params
    from study.schema import train_compute_gflops

    rows = []
    for run in runs:
        config = run.dit_config()
        g = gflops(config)
        rows.append(dict(
            run=run.name, model=run.model, block=run.block, tokens=config.num_tokens,
            params=params(config), gflops=g, batch_size=run.train.batch_size,
            steps=run.train.steps, train_compute_gflops=train_compute_gflops(g, run.train.batch_size, run.train.steps),
        ))
    return rows


def describe(spec) -> str:
    """Two lines on the grid as a whole: data and evaluation."""
    d, e = spec.data, spec.eval
    data = f"{d.dataset} at {d.resolution} px via {d.codec} -> {d.input_size}x{d.input_size}x{d.in_channels} input, {d.num_classes} classes"
    points = ", ".join(str(s) for s in e.points(spec.train.steps))
    evaluation = (f"{e.num_samples} samples ({e.sampler}, steps {list(e.sampling_steps)}, cfg {list(e.cfg_scales)}) "
                  f"scored with {e.features} features at steps {points}")
    return f"grid {spec.name}: {data}\nevaluation: {evaluation}; executor: {spec.executor.kind}"


def run(args):
    from scaling.commands.gflops import TABLE_FORMATTERS, format_rows
    from scaling.grid import plan
    from scaling.gridfile import load_grid_or_preset, load_preset

    if (args.grid is None) == (args.preset is None):
        raise ValueError("give a grid file or preset name, or --preset NAME (one of them)")
    spec = load_preset(args.preset) if args.preset else load_grid_or_preset(args.grid)
    rows = plan_rows(plan(spec))
    if args.format != "table":
        print(format_rows(rows, args.format))
        return
    print(describe(spec))
    print(format_rows(rows, "table", {**TABLE_FORMATTERS, "train_compute_gflops": "{:.3e}".format}))
    total = sum(row["train_compute_gflops"] for row in rows)
    print(f"{len(rows)} runs, training compute {total:.3e} Gflops in all")
