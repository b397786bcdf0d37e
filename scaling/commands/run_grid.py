"""`scaling run-grid`: plan, train, evaluate and report a whole grid; re-run to resume."""


def add_parser(subparsers):
    from scaling.commands.presets import add_preset_argument
    from study.layout import GridLayout

    grid = GridLayout("GRID_DIR")
    p = subparsers.add_parser(
        "run-grid", help="run a grid (preset or YAML) end to end: train, evaluate, results table, report",
        description=f"Plan the grid's runs, train each to every evaluation point, sample and score it, and keep "
        f"{grid.results_parquet} (+ .csv) and the report current after every evaluation point. Re-running the "
        "same command skips finished runs and evaluation points and resumes interrupted runs from their last "
        f"checkpoint. One run-grid at a time works on a directory ({grid.lock}). A run whose loss diverges is "
        "marked failed (`scaling status`) and the grid goes on with the others; SIGTERM/SIGUSR1/SIGINT stop the grid "
        "after the current step's checkpoint (exit 128 + the signal's number). With executor.cpu_workers (or "
        "--cpu-workers) or GPUs, runs go to `scaling run-one` processes, costliest first, each logging to "
        f"{grid.logs_dir}/<run>.log. With executor kind slurm, one SLURM job per run ({grid.slurm_dir}/); "
        "--detach submits them and returns. "
        "Example: scaling run-grid --preset demo --out runs/demo",
    )
    p.add_argument("grid", nargs="?", help="grid spec YAML file (or use --preset)")
    add_preset_argument(p)
    p.add_argument("--out", required=True, help=f"grid directory ({grid.runs_dir.name}/, {grid.results_parquet.name}, "
                   f"{grid.report_dir.name}/)")
    p.add_argument("--executor", help="override the grid's executor: local or slurm")
    p.add_argument("--cpu-workers", type=int, metavar="N",
                   help="override executor.cpu_workers: on a CPU, train N runs at once, each a process with "
                   "cores // N threads (the small demo models run fastest with one thread each)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="slurm: write the sbatch scripts without submitting; local: print the plan",
    )
    p.add_argument("--detach", action="store_true",
                   help="slurm: submit the jobs and return; re-run run-grid (or `scaling status`) later to collect "
                   "what finished; each job keeps the results table and report current")
    p.add_argument("--no-report", action="store_true", help="do not render the report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def load_spec(args):
    from scaling.gridfile import load_grid, load_preset

    if bool(args.grid) == bool(args.preset):
        raise ValueError("give either a grid file or --preset NAME (e.g. --preset demo)")
    return load_preset(args.preset) if args.preset else load_grid(args.grid)


def run(args):
    import dataclasses
    from pathlib import Path

    from dit.io import remove_stale_temporaries
    from dit.lock import directory_lock
    from scaling.grid import plan
    from scaling.runs import check_grid_dir
    from study.layout import GridLayout

    spec = load_spec(args)
    overrides = {"kind": args.executor, "cpu_workers": args.cpu_workers}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    spec = dataclasses.replace(spec, executor=dataclasses.replace(spec.executor, **overrides))
    runs = plan(spec)
    grid_dir = Path(args.out)
    if args.dry_run and spec.executor.kind == "local":
        for r in runs:
            print(r.label)
        return
    grid = GridLayout(grid_dir)
    check_grid_dir(grid_dir, spec)  # before the lock file is made in a folder that is not ours
    with directory_lock(
        grid.lock, f"grid directory {grid_dir}", "scaling run-grid"
    ):  # a second run-grid here ends in one line, exit 2
        remove_stale_temporaries(grid_dir, grid.report_dir)
        run_locked(args, spec, runs, grid_dir)


def run_locked(args, spec, runs, grid_dir):
    import time

    from scaling.commands.report import refresh_report, refresh_report_while_training
    from scaling.executors import check_options, run_with
    from scaling.progress import grid_progress
    from scaling.run_state import run_state
    from scaling.runs import claim_grid_dir, refresh_results, sample_count_note
    from study.layout import GridLayout

    grid = GridLayout(grid_dir)
    asked = {"dry_run": args.dry_run, "detach": args.detach}  # passed when given: an executor refuses what it lacks
    options = {option: True for option, given in asked.items() if given}
    check_options(spec.executor.kind, options)  # before anything is written
    claim_grid_dir(grid_dir, spec)
    started = time.time()

    def progress():
        return grid_progress([run_state(grid_dir, r) for r in runs], runs)

    def on_done(run):
        print(f"[{time.time() - started:6.0f} s] {run.label} finished: {progress()}", flush=True)

    print(f"grid {spec.name}: {len(runs)} runs -> {grid_dir} ({spec.executor.kind} executor): {progress()}")
    note = sample_count_note(spec)
    if note:
        print(note)
    on_results = None if args.no_report else refresh_report_while_training
    run_with(spec.executor.kind, runs, grid_dir, progress=not args.no_progress, on_done=on_done, on_results=on_results,
             **options)
    if args.dry_run:
        print(f"wrote sbatch scripts to {grid.sbatch_dir}")
        return
    if args.detach:
        return
    refresh_results(grid_dir)
    if not args.no_report:
        refresh_report(grid_dir)
    print(f"results: {grid.results_csv}" + ("" if args.no_report else f"; report: {grid.report.html}"))
