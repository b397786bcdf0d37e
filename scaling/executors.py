"""Executors: where the runs of a grid execute. Each takes the planned runs and the grid directory.

- local: on a CPU one run after another in this process, or `cpu_workers` runs at once, each a
  `scaling run-one` process with its share of the cores as threads; on GPUs, one run per free group
  of `gpus_per_run` GPUs in parallel, each a `scaling run-one` process (under torchrun for several).
  Processes start the costliest runs first (training compute), so the last to finish are small ones.
- slurm (`scaling.slurm`): one submitit job per run (multi-node DDP from submitit's environment), or
  with dry_run the sbatch scripts only. Scheduling is submitit's and SLURM's, never ours.

Each takes its own keyword options and no others: `run_with` refuses an option the executor does not take.

`on_results(grid_dir)` is called after each evaluation point that rebuilt the table. A run in this
process or in a SLURM job calls it itself (it must be picklable: a module-level function); a
`scaling run-one` process cannot take a function, so there it means run-one's report (and None
means `--no-report`).

A run that fails does not stop the others; the grid ends with RunsFailed naming the failed runs.
"""
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dit.distributed import THREADS_FILE_ENV
from dit.errors import UserError
from scaling.grid import RunSpec, start_order
from scaling.launch import RunsFailed, run_command, usable_cores
from scaling.run_state import last_log_record, run_layout, run_state
from scaling.runs import execute_run, reference_stats
from scaling.slurm import slurm
from study.layout import GridLayout
from study.registry import Registry


def local(runs: list[RunSpec], grid_dir, *, progress: bool = True, on_done=None, on_results=None):
    """Run on this machine: on a CPU one after another in this process, or `cpu_workers` processes at
    once; on GPUs one process per free group of `gpus_per_run` GPUs. Processes start in `start_order`."""
    pending = [r for r in runs if run_state(grid_dir, r).state != "done"]
    if not pending:
        return
    executor = pending[0].executor
    if executor.gpus_per_run == 0 and executor.cpu_workers == 1:
        failed = [run.label for run in pending if not _execute_here(run, grid_dir, progress, on_done, on_results)]
        if failed:
            raise RunsFailed(f"runs failed: {', '.join(failed)} (each said why above); fix that, then re-run to resume")
        return
    if executor.gpus_per_run:
        slots = gpu_slots(executor.gpus_per_run)
    else:
        reference_stats(grid_dir, pending[0], progress=progress)  # made once here, not by every worker at once
        slots = cpu_slots(executor.cpu_workers)
    pool = ProcessPool(grid_dir, slots, executor.gpus_per_run, report=on_results is not None)
    pool.run([pending[i] for i in start_order(pending)], on_done, progress=progress)


def _execute_here(run: RunSpec, grid_dir, progress: bool, on_done, on_results) -> bool:
    """Execute one run in this process; False when it stopped with a user's error (a diverged loss). A stop
    signal stops the whole grid (TrainingInterrupted propagates after the run's checkpoint)."""
    from dit.train import TrainingInterrupted
    from scaling.cli import error_line, is_user_error

    try:
        execute_run(run, grid_dir, progress=progress, on_results=on_results)
    except TrainingInterrupted:
        raise
    except Exception as exc:  # a user's error stops this run only, as it would in a worker process
        if not is_user_error(exc):
            raise
        print(f"{run.label} stopped: {error_line(exc)}", file=sys.stderr, flush=True)
        return False
    if on_done:
        on_done(run)
    return True


def _visible_gpus() -> list[str]:
    import torch

    ids = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ids.split(",") if ids else [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus_per_run: int) -> list[dict]:
    """The environment of each process slot: a disjoint group of `gpus_per_run` visible GPUs."""
    ids = _visible_gpus()
    if len(ids) < gpus_per_run:
        raise ValueError(
            f"runs ask for {gpus_per_run} GPUs each but {len(ids)} are visible; lower executor.gpus_per_run"
        )
    groups = range(0, len(ids) - gpus_per_run + 1, gpus_per_run)
    return [{"CUDA_VISIBLE_DEVICES": ",".join(ids[i:i + gpus_per_run])} for i in groups]


def cpu_slots(workers: int) -> list[dict]:
    """The environment of each of `workers` CPU processes: the cores shared out as threads (at least one).
    One thread per process never waits for another, so small models gain most from several workers."""
    threads = str(max(1, usable_cores() // workers))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(workers)]


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def stop_with_parent():
    """In a worker, before it runs: SIGTERM it when run-grid dies, however it dies (even SIGKILL), so it checkpoints
    and stops instead of training on, orphaned, with its run's lock (Linux; elsewhere nothing is done)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class GridInterrupted(UserError):
    """A stop signal reached the grid: every running process wrote a checkpoint and stopped."""

    def __init__(self, signum: int, stopped: list[str]):
        name = signal.Signals(signum).name
        runs = ", ".join(stopped) or "no run was running"
        super().__init__(f"stopped by {name} ({runs}: checkpointed); re-run the same command to resume")
        self.exit_status = 128 + signum


class ProcessPool:
    """Runs as `scaling run-one` processes, one per slot (an environment: its GPUs or its CPU threads) at a
    time, each logging to GRID_DIR/logs/<run>.log. A stop signal to this process is passed once to every
    running one (each finishes its step and checkpoints), and no further run starts."""

    def __init__(self, grid_dir, slots: list[dict], gpus_per_run: int, *, report: bool):
        self.grid_dir, self.free, self.gpus_per_run, self.report = grid_dir, list(slots), gpus_per_run, report
        self.running: dict[subprocess.Popen, tuple] = {}
        self.signum = 0

    def run(self, runs: list[RunSpec], on_done, *, progress: bool):
        from dit.train import STOP_SIGNALS

        queue, failed, stopped = list(runs), [], []
        bar = StepsBar(self.grid_dir, runs, enabled=progress)
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self.forward) for s in STOP_SIGNALS} if in_main_thread else {}
        try:
            while self.running or queue and not self.signum:
                while queue and self.free and not self.signum:
                    self.start(queue.pop(0), bar)
                time.sleep(2)
                bar.refresh_steps()
                for proc in [p for p in self.running if p.poll() is not None]:
                    run = self.finish(proc)
                    self.share_idle_cores(queue)
                    if proc.returncode > 128 and self.signum:
                        stopped.append(run.label)
                    elif proc.returncode:
                        failed.append(run.label)
                        bar.write(f"{run.label} failed (exit {proc.returncode}): {self.last_line(run)}")
                    elif on_done:
                        bar.write_through(on_done, run)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            bar.close()
        if self.signum:
            raise GridInterrupted(self.signum, stopped)
        if failed:
            raise RunsFailed(f"runs failed: {', '.join(failed)}; see {GridLayout(self.grid_dir).logs_dir}/<run>.log, "
                             "then re-run to resume them")

    def log_path(self, run: RunSpec) -> Path:
        return GridLayout(self.grid_dir).run_log(run.stem, run.seed)

    def share_idle_cores(self, queue: list):
        """With no run left to start (`queue` empty), the cores of idle CPU workers go to the runs still going (each
        picks its new thread count up at its next log step or evaluation point): the last long run ends sooner."""
        from dit.io import atomic_write_text

        if queue or self.gpus_per_run:
            return
        threads = max(1, usable_cores() // max(1, len(self.running)))
        for run, _, _ in self.running.values():
            atomic_write_text(GridLayout(self.grid_dir).run_threads(run.name, run.seed), f"{threads}\n")

    def last_line(self, run: RunSpec) -> str:
        """What a run's process said last (its error), and where the rest is."""
        lines = [line for line in self.log_path(run).read_text(errors="replace").splitlines() if line.strip()]
        return f"{lines[-1].strip() if lines else 'no output'} (log: {self.log_path(run)})"

    def start(self, run: RunSpec, bar):
        slot, log_path = self.free.pop(0), self.log_path(run)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a")  # noqa: SIM115 - outlives this call: closed when the worker is reaped
        command = run_command(self.grid_dir, run, self.gpus_per_run, report=self.report,
                              final_report=False)  # run-grid renders the whole report once its workers are done
        hint = GridLayout(self.grid_dir).run_threads(run.name, run.seed)
        hint.unlink(missing_ok=True)  # a run starts with its slot's share of the cores
        threads = {} if self.gpus_per_run else {THREADS_FILE_ENV: str(hint)}
        proc = subprocess.Popen(command, env=dict(os.environ, **slot, **threads), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,  # a terminal's Ctrl-C reaches it once, through forward()
                                preexec_fn=stop_with_parent)
        self.running[proc] = (run, slot, log)
        bar.write(f"{run.label} started (log: {log_path})")

    def finish(self, proc) -> RunSpec:
        run, slot, log = self.running.pop(proc)
        log.close()
        self.free.append(slot)
        return run

    def forward(self, signum, frame):
        if self.signum:  # a second signal: stop the processes at once
            for proc in self.running:
                proc.kill()
            return
        self.signum = signum
        print(f"caught {signal.Signals(signum).name}: each running run stops after its step with a checkpoint "
              f"(send it again to stop them at once)", file=sys.stderr, flush=True)
        for proc in self.running:
            proc.send_signal(signum)


class StepsBar:
    """One bar of the training steps of every run in the pool, read from their train logs, with the ETA."""

    def __init__(self, grid_dir, runs: list[RunSpec], *, enabled: bool):
        from dit.progress import progress_bar

        self.layouts = [run_layout(grid_dir, r) for r in runs]
        self.bar = progress_bar(total=sum(r.train.steps for r in runs), initial=self.steps(), enabled=enabled,
                                desc="grid", unit="step")

    def steps(self) -> int:
        return sum(last_log_record(layout).get("step", 0) for layout in self.layouts)

    def refresh_steps(self):
        self.bar.n = self.steps()
        self.bar.refresh()

    def write(self, line: str):
        self.bar.write(line, file=sys.stdout)

    def write_through(self, callback, *args):
        """Call `callback` (which prints) with the bar cleared, then redraw it."""
        with self.bar.external_write_mode(file=sys.stdout):
            callback(*args)

    def close(self):
        self.bar.close()


EXECUTORS = Registry("executor", {"local": local, "slurm": slurm})


def executor_options(kind: str) -> tuple[str, ...]:
    """The keyword options the executor `kind` takes."""
    parameters = inspect.signature(EXECUTORS.get(kind)).parameters.values()
    return tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)


def check_options(kind: str, options):
    """Refuse (one line) an option the executor `kind` does not take, rather than ignore it: `--detach` asked of
    the local executor must not run the grid in the foreground."""
    accepted = executor_options(kind)
    unknown = [name for name in options if name not in accepted]
    if unknown:
        raise ValueError(f"the {kind} executor takes no option {unknown[0]!r} (it takes: {', '.join(accepted)}); "
                         f"drop it or choose another executor")


def run_with(kind: str, runs: list[RunSpec], grid_dir, **options):
    """Execute `runs` with the executor `kind` and its `options` (each one it takes, or a ValueError)."""
    check_options(kind, options)
    return EXECUTORS.get(kind)(runs, grid_dir, **options)
