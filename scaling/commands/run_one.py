"""`scaling run-one`: execute one run of a grid directory (what the executors launch)."""


def add_parser(subparsers):
    p = subparsers.add_parser(
        "run-one", help="train and evaluate one run of a grid directory (used by the executors)",
        description="Train and evaluate the run RUN of the grid written to GRID_DIR by `scaling run-grid`; "
        "launched by the local executor on GPUs (under torchrun for several GPUs per run) or with CPU workers, "
        "and by SLURM scripts.",
    )
    p.add_argument("grid_dir", help="grid directory written by `scaling run-grid`")
    p.add_argument("run", help="run name, e.g. DiT-B/4, or its directory name in a grid with seeds, e.g. DiT-B-4-seed1")
    p.add_argument("--no-report", action="store_true", help="do not render the grid's report after an evaluation point")
    p.add_argument("--no-final-report", action="store_true",
                   help="refresh the report while other runs go on, but leave the whole report at the grid's end to "
                   "the caller (run-grid's workers: run-grid renders it once they are done)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args):
    import functools

    from scaling.commands.report import refresh_report_while_training
    from scaling.grid import plan
    from scaling.runs import execute_run, read_grid

    runs = plan(read_grid(args.grid_dir))
    chosen = [r for r in runs if args.run in (r.key, r.dir_name)] or [r for r in runs if args.run == r.name]
    if len(chosen) != 1:
        problem = "names several runs (one per seed or swept value)" if chosen else "is no run"
        raise ValueError(f"{args.run!r} {problem} in {args.grid_dir}; give one of: {', '.join(r.key for r in runs)}")
    on_results = None if args.no_report else functools.partial(refresh_report_while_training,
                                                                 final=not args.no_final_report)
    execute_run(chosen[0], args.grid_dir, progress=not args.no_progress, on_results=on_results)
