"""`scaling status`: each run's state, step, latest metric and the time left, read from GRID_DIR."""


def add_parser(subparsers):
    from scaling.commands.output import add_format_argument
    from scaling.commands.plan import add_cost_arguments

    p = subparsers.add_parser(
        "status",
        help="show the state of each run of a grid directory",
        description="Show each run's state (pending, training, done, failed: diverged, with its step and cause), its "
            "step, evaluation points "
        "done, its latest FID and the training time left, all read from GRID_DIR; for a grid run through SLURM, "
        "what SLURM says of each unfinished run's job (squeue, and the job's log once SLURM forgot it). For a grid on "
        "GPUs (or with --throughput), also the GPU-hours of training and evaluation left and the "
        "wall time on --gpus, estimated as `scaling plan` does (runs that have trained a while "
        "with their own seconds per step).",
    )
    p.add_argument("grid_dir", help="grid directory written by `scaling run-grid`")
    add_format_argument(p)
    add_cost_arguments(p)
    p.set_defaults(func=run)


def cost_left_lines(spec, runs, states, args) -> list[str]:
    """What is left of a grid on GPUs (or with --throughput): GPU-hours, evaluation share, wall time, price."""
    from scaling.commands.plan import cost_options, total_lines
    from scaling.cost import device_type, grid_cost, grid_rates

    gpus, price = cost_options(args)
    applies = device_type(spec.executor) == "cuda" or args.throughput  # CPU grids: the ETA of grid_progress alone
    if not applies or all(s.state == "done" for s in states):
        return []
    rates = grid_rates(spec.executor, args.throughput, args.device)
    return total_lines(grid_cost(runs, rates, gpus, states=states), price, what=f"left ({rates.device})")


def run(args):
    from scaling.evaluation import headline_setting
    from scaling.grid import plan
    from scaling.progress import grid_progress
    from scaling.run_state import run_state
    from scaling.runs import read_grid

    spec = read_grid(args.grid_dir)
    runs = plan(spec)
    states = [run_state(args.grid_dir, r) for r in runs]
    cost_left = cost_left_lines(spec, runs, states, args)  # before any output: a bad option fails alone
    jobs = job_column(args.grid_dir, runs, states)
    if args.format != "table":
        from scaling.commands.output import format_rows, note

        rows = [state_row(s) | ({"slurm_job": job} if jobs else {})
                for s, job in zip(states, jobs or states, strict=True)]
        print(format_rows(rows, args.format))
        for line in [grid_progress(states, runs), *cost_left]:
            note(line)
        return
    job_head = f" {'slurm job':<24}" if jobs else ""
    print(f"{'run':<28} {'state':<9} {'step':>15} {'evaluated':>9} {'latest fid':>10} {'eta':>8}{job_head}")
    for s, job in zip(states, jobs or [""] * len(states), strict=True):
        fid = f"{s.latest['fid']:.2f}" if s.latest and s.latest.get("fid") is not None else "-"
        left = s.seconds_left()
        eta = f"{left / 60:.1f} min" if left is not None else "-"
        print(f"{s.name:<28} {s.state:<9} {s.step:>7}/{s.steps:<7} {s.evaluated:>4}/{s.points:<4} {fid:>10} {eta:>8}"
              + (f" {job:<24}" if jobs else ""))
    first = headline_setting(runs[0])
    for s in states:
        if s.state == "damaged":
            print(f"{s.name} is damaged: {s.failure['cause']}")
        elif s.failure:
            print(
                f"{s.name} failed at step {s.failure.get('step')}: {s.failure.get('cause')}; fix it, then re-run the "
                "grid"
            )
    print(
        f"latest fid: the newest evaluation point, {first.sampler} {first.sampling_steps} steps, cfg "
        f"{first.cfg_scale:g}"
    )
    print(grid_progress(states, runs))
    for line in cost_left:
        print(line)


def job_column(grid_dir, runs, states) -> list[str]:
    """What SLURM says of each run's latest job (queued, running, cancelled, timeout, ...; '-' for a run done or
    never submitted), from squeue and the job logs; [] for a grid that submitted no SLURM job."""
    from scaling.slurm import SlurmError, grid_job_states, read_jobs

    if not read_jobs(grid_dir):
        return []
    try:
        jobs = grid_job_states(grid_dir, runs)
    except SlurmError as exc:
        return [f"unknown ({exc})" if s.state != "done" else "-" for s in states]
    return [str(jobs[r.key]) if r.key in jobs and s.state != "done" else "-" for r, s in zip(runs, states, strict=True)]


def state_row(s) -> dict:
    """One run's state as a record (csv/json): its latest evaluation point's FID with it."""
    fid = s.latest.get("fid") if s.latest else None
    return dict(run=s.name, state=s.state, step=s.step, steps=s.steps, evaluated=s.evaluated, points=s.points,
                latest_fid=fid, seconds_left=s.seconds_left())
