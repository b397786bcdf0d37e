"""Executors: where the runs of a grid execute. Each takes the planned runs and the grid directory.

- local: on a CPU one run after another in this process, or `cpu_workers` runs at once, each a
  `scaling run-one` process with its share of the cores as threads; on GPUs, one run per free group
  of `gpus_per_run` GPUs in parallel, each a `scaling run-one` process (under torchrun for several).
  Processes start the costliest runs first (training compute), so the last to finish are small ones.
- slurm: one submitit job per run (multi-node DDP from submitit's environment), or with
  dry_run the sbatch scripts only. Scheduling is submitit's and SLURM's, never ours.

`on_results(grid_dir)` is called after each evaluation point that rebuilt the table. A run in this
process or in a SLURM job calls it itself (it must be picklable: a module-level function); a
`scaling run-one` process cannot take a function, so there it means run-one's report (and None
means `--no-report`).

A run that fails does not stop the others; the grid ends with RunsFailed naming the failed runs.

Trust: submitit pickles each job (the run spec) and its result into GRID_DIR/slurm/<job id>/, and
the job and `job.result()` unpickle them: whoever can write to GRID_DIR/slurm can run code as the
user who submits or executes the grid. Keep grid directories writable by their owner only.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from dit.errors import UserError
from scaling.grid import RunSpec, start_order
from scaling.run_state import last_log_record, run_layout, run_state
from scaling.runs import execute_run, reference_stats
from study.layout import GridLayout
from study.registry import Registry


class RunsFailed(UserError):
    """Runs of a grid failed (diverged, crashed or were cancelled); re-running the grid resumes them."""


def run_command(grid_dir, run: RunSpec, gpus: int, *, report: bool = True) -> list[str]:
    """The command that executes one run: `scaling run-one`, under torchrun when it spans several GPUs."""
    base = ["-m", "scaling.cli", "run-one", str(grid_dir), run.key, *([] if report else ["--no-report"])]
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", *base]
    return [sys.executable, *base]


def local(runs: list[RunSpec], grid_dir, *, progress: bool = True, on_done=None, on_results=None, **_):
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

    try:
        execute_run(run, grid_dir, progress=progress, on_results=on_results)
    except TrainingInterrupted:
        raise
    except UserError as exc:
        print(f"{run.label} stopped: {exc}", file=sys.stderr, flush=True)
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


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_slots(workers: int) -> list[dict]:
    """The environment of each of `workers` CPU processes: the cores shared out as threads (at least one).
    One thread per process never waits for another, so small models gain most from several workers."""
    threads = str(max(1, usable_cores() // workers))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(workers)]


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

    def last_line(self, run: RunSpec) -> str:
        """What a run's process said last (its error), and where the rest is."""
        lines = [line for line in self.log_path(run).read_text(errors="replace").splitlines() if line.strip()]
        return f"{lines[-1].strip() if lines else 'no output'} (log: {self.log_path(run)})"

    def start(self, run: RunSpec, bar):
        slot, log_path = self.free.pop(0), self.log_path(run)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "a")  # noqa: SIM115 - outlives this call: closed when the worker is reaped
        command = run_command(self.grid_dir, run, self.gpus_per_run, report=self.report)
        proc = subprocess.Popen(command, env=dict(os.environ, **slot), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # a terminal's Ctrl-C reaches it once, through forward()
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


def _slurm_executor(runs: list[RunSpec], grid_dir, cluster: str | None):
    import submitit

    slurm = runs[0].executor.slurm
    executor = submitit.AutoExecutor(
        folder=str(GridLayout(grid_dir).slurm_dir / "%j"), cluster=cluster
    )  # %j: the job id
    params = dict(nodes=slurm.nodes, gpus_per_node=slurm.gpus_per_node, tasks_per_node=max(1, slurm.gpus_per_node),
                  timeout_min=slurm.time, slurm_array_parallelism=slurm.array_parallelism, name=runs[0].grid)
    if executor.cluster == "slurm":
        params.update(
            {k: v for k, v in dict(slurm_partition=slurm.partition, slurm_account=slurm.account).items() if v}
        )
    else:  # submitit's local and debug executors take no GPU or SLURM options
        params = dict(timeout_min=slurm.time)
    executor.update_parameters(**params)
    return executor


class SlurmJob:
    """A picklable job: sets up torch.distributed from submitit's environment, then executes the run.

    SLURM signals the job `signal_delay_s` (90 s) before its time limit or on preemption (sbatch --signal,
    submitit's USR2); training finishes its step, writes a checkpoint and stops, and the job requeues itself
    through submitit's handler (which calls `checkpoint`), so the next allocation resumes from that step.
    """

    def __init__(self, run: RunSpec, grid_dir, on_results=None):
        self.run, self.grid_dir, self.on_results = run, str(grid_dir), on_results

    def __call__(self):
        import submitit

        from dit.train import TrainingInterrupted

        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            execute_run(self.run, self.grid_dir, progress=False, on_results=self.on_results)
        except TrainingInterrupted:
            requeue_through_submitit()
            raise
        return self.run.label

    def checkpoint(self):
        """On preemption or time-out, requeue the same job: it resumes from the run directory."""
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmJob(self.run, self.grid_dir, self.on_results))


def requeue_through_submitit():
    """Hand a stop that training has checkpointed to submitit's preemption handler: on the main task it calls
    SlurmJob.checkpoint, requeues the job and exits; on the other tasks it returns."""
    import signal

    import submitit

    signum = getattr(signal, f"SIG{submitit.JobEnvironment.USR_SIG}")
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)


def slurm(runs: list[RunSpec], grid_dir, *, dry_run: bool = False, cluster: str | None = None, on_done=None,
          on_results=None, **_):
    """One submitit job per unfinished run; waits for them. dry_run writes the sbatch scripts only."""
    pending = [r for r in runs if run_state(grid_dir, r).state != "done"]
    if not pending:
        return
    if runs[0].executor.slurm is None:
        raise ValueError(
            "the slurm executor needs an executor.slurm section (partition, nodes, gpus_per_node, time, ...) in the "
            "grid file"
        )
    if dry_run:
        write_sbatch_scripts(pending, grid_dir, report=on_results is not None)
        return
    import submitit

    executor = _slurm_executor(pending, grid_dir, cluster)
    pending = [pending[i] for i in start_order(pending)]  # the array's tasks start in this order
    work = [SlurmJob(run, grid_dir, on_results) for run in pending]
    jobs = executor.submit_array(work) if executor.cluster == "slurm" else [executor.submit(job) for job in work]
    print(f"submitted {len(jobs)} jobs: {', '.join(j.job_id for j in jobs)} (logs in {GridLayout(grid_dir).slurm_dir})")
    failed = []
    for run, job in zip(pending, jobs, strict=True):
        try:
            job.result()
        except submitit.core.utils.UncompletedJobError:  # failed, cancelled or timed out without requeue
            failed.append(f"{run.label} (job {job.job_id})")
            continue
        if on_done:
            on_done(run)
    if failed:
        raise RunsFailed(f"runs failed: {', '.join(failed)}; see the job logs in {GridLayout(grid_dir).slurm_dir}, "
                         f"then re-run to resume them")


def write_sbatch_scripts(runs: list[RunSpec], grid_dir, *, report: bool = True) -> list[Path]:
    """The sbatch script of each run, as it would be submitted (one task per GPU, `scaling run-one`)."""
    from submitit.slurm.slurm import _make_sbatch_string

    slurm = runs[0].executor.slurm
    grid = GridLayout(grid_dir)
    grid.sbatch_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in runs:
        command = " ".join(run_command(grid_dir, run, 1, report=report)).replace(sys.executable, "python")
        text = _make_sbatch_string(
            command=f"srun --unbuffered {command}",
            folder=str(grid.sbatch_dir),
            job_name=f"{run.grid}-{run.dir_name}",
            partition=slurm.partition,
            account=slurm.account,
            nodes=slurm.nodes,
            ntasks_per_node=max(1, slurm.gpus_per_node),
            gpus_per_node=slurm.gpus_per_node,
            time=slurm.time,
        )
        path = grid.sbatch_script(run.stem, run.seed)
        path.write_text(text)
        paths.append(path)
    return paths


EXECUTORS = Registry("executor", {"local": local, "slurm": slurm})
get_executor = EXECUTORS.get
