"""`scaling plan`: the runs of a grid with their params, Gflops and training compute, before anything runs."""

DESCRIPTION = """\
List the runs a grid spec (a YAML file or a shipped preset) would train: one per model x patch
size x block, with parameters, forward Gflops of one sample (as the paper counts them) and
training compute = Gflops x batch size x steps x 3 (the paper's definition), and the disk its
power-function EMA snapshots take (ema_snapshot_gb: snapshots x profiles x parameters x 2 bytes in fp16,
for `scaling ema`). Nothing runs.

With --gpus, --throughput or --gpu-hour-price it adds what the grid costs: per run and in all,
training and evaluation GPU-hours (from measured images/s of one GPU; models that were not measured
are estimated from those that were, and marked so), the wall time on N GPUs with the executor's
GPUs per run, and the price. Without --throughput it reads the shipped table (our H100 figures).

A malformed grid file, an unknown key or a model that does not fit the data fails with one
line naming the key and its line in the file.

examples:
  scaling plan --preset paper
  scaling plan --preset paper --gpus 64 --gpu-hour-price 2.5
  scaling plan my-grid.yaml --throughput my-gpus.json --gpus 16    (my-gpus.json: scaling bench --save)
  scaling plan demo --format csv"""


def add_parser(subparsers):
    import argparse

    from scaling.commands.output import add_format_argument
    from scaling.commands.presets import add_preset_argument

    p = subparsers.add_parser("plan", help="list a grid's runs with params, Gflops and training compute",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", nargs="?", metavar="GRID_OR_PRESET", help="grid spec YAML file, or the name of a preset")
    add_preset_argument(p)
    add_format_argument(p)
    add_cost_arguments(p)
    p.set_defaults(func=run)


def add_cost_arguments(p):
    p.add_argument("--throughput", metavar="FILE.json",
                   help="measured throughput (`scaling bench --save`); default: the shipped table (H100 rows, and "
                   "CPU rows for the demo's tiny models)")
    p.add_argument("--gpus", metavar="N", help="GPUs the grid has in all (default: what its executor runs at once)")
    p.add_argument("--gpu-hour-price", metavar="P", help="price of one GPU-hour, for the cost of each run and the grid")
    p.add_argument("--device", metavar="NAME", help="device of the throughput file to read, a part of its name (H100)")


def _positive(text: str | None, option: str, integer: bool):
    """A positive number from an option's text, or None when it is absent; one line of error otherwise."""
    import math

    if text is None:
        return None
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        what = "a whole number of GPUs, at least 1" if integer else "a positive number (the price of one GPU-hour)"
        raise ValueError(f"{option} must be {what}, not {text!r}")
    return value


def cost_options(args) -> tuple[int | None, float | None]:
    """--gpus and --gpu-hour-price, checked."""
    gpus = _positive(args.gpus, "--gpus", integer=True)
    return gpus, _positive(args.gpu_hour_price, "--gpu-hour-price", integer=False)


def cost_columns(cost, price: float | None) -> list[dict]:
    """Per run: its GPUs, rates and their basis, GPU-hours, its place in the schedule and its price."""
    rows = []
    for run, (start, end) in zip(cost.runs, cost.spans, strict=True):
        rows.append(dict(
            gpus=run.gpus, train_img_per_s=run.train.value, train_basis=run.train.basis,
            sample_passes_per_s=run.sample.value, sample_basis=run.sample.basis, train_gpu_hours=run.train_gpu_hours,
            eval_gpu_hours=run.eval_gpu_hours, gpu_hours=run.gpu_hours, start_hours=start, end_hours=end,
            **({"cost": run.gpu_hours * price} if price else {}),
        ))
    return rows


def total_lines(cost, price: float | None, what: str = "in all") -> list[str]:
    """GPU-hours in all (or `what`), the evaluation's share, the wall time on the grid's GPUs and the price."""
    unit = cost.unit
    lines = [f"{what}: {cost.gpu_hours:,.1f} {unit}-hours: training {cost.train_gpu_hours:,.1f}, evaluation "
             f"{cost.eval_gpu_hours:,.1f} ({100 * cost.eval_share:.0f}% of the total)",
             f"wall time on {cost.total_gpus} {unit}s ({cost.runs_at_once} run(s) at once x {cost.gpus_per_run} "
             f"{unit}(s) each): " + duration_text(cost.wall_hours)]
    if price:
        lines.append(f"cost at {price:g} per {unit}-hour: {cost.gpu_hours * price:,.0f}")
    return lines


def duration_text(hours: float) -> str:
    """'29.9 h (1.2 days)', or minutes below an hour (a CPU grid)."""
    return f"{hours:,.1f} h ({hours / 24:.1f} days)" if hours >= 1 else f"{hours * 60:.0f} minutes"


def plan_rows(runs) -> list[dict]:
    """One row per run: what it trains and what it costs."""
    from scaling.cost import check_fits_a_gpu
    from scaling.flops import gflops, params
    from study.schema import train_compute_gflops

    rows = []
    for run in runs:
        config = run.dit_config()
        g, p = gflops(config), params(config)
        check_fits_a_gpu(run, p)
        rows.append(dict(
            run=run.label, model=run.model, block=run.block, tokens=config.num_tokens,
            params=p, gflops=g, batch_size=run.train.batch_size,
            steps=run.train.steps, train_compute_gflops=train_compute_gflops(g, run.train.batch_size, run.train.steps),
            ema_snapshot_gb=snapshot_bytes(run, params(config)) / 1e9,
        ))
    return rows


def tuning_share(runs, costs: list[float]) -> float:
    """The share of `costs` (one per run) spent on tuning: every swept value of a tuned field (scaling.grid.TUNED)
    beyond one run per model x seed x parametrization, that run costing its group's mean."""
    from scaling.grid import TUNED

    groups = {}
    for run, cost in zip(runs, costs, strict=True):
        kept = tuple((k, v) for k, v in run.sweep if k not in TUNED)
        groups.setdefault((run.name, run.seed, kept), []).append(cost)
    total = sum(costs)
    return (total - sum(sum(g) / len(g) for g in groups.values())) / total if total else 0.0


def sweep_lines(spec, runs, rows, cost=None) -> list[str]:
    """What a sweep multiplies the grid by, and the share of its training compute (and GPU-hours) that is tuning."""
    from scaling.grid import TUNED

    axes = spec.sweep.axes()
    if not axes:
        return []
    sizes = ", ".join(f"{k} x {len(getattr(spec.sweep, k))}" for k in axes)
    share = tuning_share(runs, [row["train_compute_gflops"] for row in rows])
    hours = f"; of the GPU-hours {100 * tuning_share(runs, [r.gpu_hours for r in cost.runs]):.0f}%" if cost else ""
    return [f"sweep: {sizes}: {len(runs)} runs",
            f"tuning (every swept {', '.join(TUNED)} value but one per model): {100 * share:.0f}% of the training "
            f"compute{hours}"]


def note_missing_data(dataset: str):
    """A note on stderr when the grid's data folder is not here (a plan may be made away from the data)."""
    import sys
    from pathlib import Path

    from dit.data import MNIST_NAME

    if dataset != MNIST_NAME and not Path(dataset).exists():
        print(f"note: the data folder {dataset} does not exist here; make it (an image folder class/*.JPEG, or "
              f"`scaling encode --data IMAGES --out {dataset}`) before `scaling run-grid`", file=sys.stderr)


def snapshot_bytes(run, num_params: int) -> int:
    """Disk of a run's power-function EMA snapshots: snapshots x profiles x parameters x bytes per value."""
    from dit.ema import SNAPSHOT_DTYPES

    itemsize = SNAPSHOT_DTYPES[run.train.ema_snapshot_precision].itemsize
    return run.snapshot_count() * len(run.train.ema_sigma_rels) * num_params * itemsize


def snapshot_line(runs, rows) -> str:
    """One line: the disk the grid's EMA snapshots take, and how many each run keeps."""
    counts = sorted({run.snapshot_count() for run in runs})
    t = runs[0].train
    if not t.ema_sigma_rels:
        return "EMA snapshots: none (train.ema_sigma_rels is empty)"
    return (f"EMA snapshots: {sum(r['ema_snapshot_gb'] for r in rows):,.2f} GB in all ({'/'.join(map(str, counts))} "
            f"per run, every {t.ema_snapshot_every:,} steps, {len(t.ema_sigma_rels)} profiles, "
            f"{t.ema_snapshot_precision})")


def describe(spec) -> str:
    """Two lines on the grid as a whole: data and evaluation."""
    d, e = spec.data, spec.eval
    data = (f"{d.dataset} at {d.resolution} px via {d.codec} -> {d.input_size}x{d.input_size}x{d.in_channels} input, "
            f"{d.num_classes} classes")
    points = (f"the step of each budget ({', '.join(f'{b:.3g}' for b in spec.budgets)} Gflops)" if spec.budgets
              else "steps " + ", ".join(str(s) for s in e.points(spec.train.steps)))
    seeds = f"; seeds {list(spec.seeds)}, one run each" if spec.seeds else ""
    evaluation = (f"{e.num_samples} samples ({e.sampler}, steps {list(e.sampling_steps)}, cfg {list(e.cfg_scales)}) "
                  f"scored with {e.features} features at {points}{seeds}")
    return f"grid {spec.name}: {data}\nevaluation: {evaluation}; executor: {spec.executor.kind}"


def rate_text(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


COST_FORMATTERS = {
    "train_img_per_s": rate_text, "sample_passes_per_s": rate_text, "train_gpu_hours": "{:,.1f}".format,
    "eval_gpu_hours": "{:,.1f}".format, "gpu_hours": "{:,.1f}".format, "start_hours": "{:,.1f}".format,
    "end_hours": "{:,.1f}".format, "cost": "{:,.0f}".format,
}
PLAN_FORMATTERS = {"train_compute_gflops": "{:.3e}".format, "ema_snapshot_gb": "{:,.2f}".format}


def run(args):
    from pathlib import Path

    from scaling.commands.output import TABLE_FORMATTERS, format_rows
    from scaling.cost import basis_lines, grid_cost, grid_rates
    from scaling.grid import plan
    from scaling.gridfile import load_grid_or_preset, load_preset

    if (args.grid is None) == (args.preset is None):
        raise ValueError("give a grid file or preset name, or --preset NAME (one of them)")
    gpus, price = cost_options(args)
    spec = load_preset(args.preset) if args.preset else load_grid_or_preset(args.grid)
    runs = plan(spec)
    rows = plan_rows(runs)
    if args.grid and Path(args.grid).is_file():  # a preset's data folder is where its comments say to put it
        note_missing_data(spec.data.dataset)
    costed = args.throughput or args.device or gpus or price
    if costed:
        rates = grid_rates(spec.executor, args.throughput, args.device)
        cost = grid_cost(runs, rates, gpus)
        cost_rows = [{"run": row["run"], **c} for row, c in zip(rows, cost_columns(cost, price), strict=True)]
    if args.format != "table":
        merged = [{**row, **c} for row, c in zip(rows, cost_rows, strict=True)] if costed else rows
        print(format_rows(merged, args.format))
        return
    print(describe(spec))
    print(format_rows(rows, "table", {**TABLE_FORMATTERS, **PLAN_FORMATTERS}))
    total = sum(row["train_compute_gflops"] for row in rows)
    print(f"{len(rows)} runs, training compute {total:.3e} Gflops in all")
    print(snapshot_line(runs, rows))
    if costed:
        print()
        print("\n".join(basis_lines(runs[0], rates)))
        print(format_rows(cost_rows, "table", COST_FORMATTERS))
        print("\n".join(total_lines(cost, price)))
    for line in sweep_lines(spec, runs, rows, cost if costed else None):
        print(line)
