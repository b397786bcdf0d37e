"""`scaling status`: each run's state, step, latest metric and the time left, read from GRID_DIR."""


def add_parser(subparsers):
    p = subparsers.add_parser("status", help="show the state of each run of a grid directory",
                              description="Show each run's state (pending, training, done), its step, evaluation points "
                              "done, its latest FID and the training time left, all read from GRID_DIR.")
    p.add_argument("grid_dir", help="grid directory written by `scaling run-grid`")
    p.set_defaults(func=run)


def run(args):
    from scaling.grid import plan
    from scaling.runs import grid_progress, read_grid, run_state, sampling_settings

    runs = plan(read_grid(args.grid_dir))
    states = [run_state(args.grid_dir, r) for r in runs]
    print(f"{'run':<28} {'state':<9} {'step':>15} {'evaluated':>9} {'latest fid':>10} {'eta':>8}")
    for s in states:
        fid = f"{s.latest['fid']:.2f}" if s.latest and s.latest.get("fid") is not None else "-"
        left = (s.steps - s.step) * s.seconds_per_step if s.seconds_per_step and s.state != "done" else None
        eta = f"{left / 60:.1f} min" if left is not None else "-"
        print(f"{s.name:<28} {s.state:<9} {s.step:>7}/{s.steps:<7} {s.evaluated:>4}/{s.points:<4} {fid:>10} {eta:>8}")
    first = sampling_settings(runs[0])[0]
    print(f"latest fid: the newest evaluation point, {first.sampler} {first.sampling_steps} steps, cfg {first.cfg_scale:g}")
    print(grid_progress(states, runs))
