"""Executors: where the runs of a grid execute. Each takes the planned runs and the grid directory.

- local: one run after another in this process on a CPU; on GPUs, one run per free group of
  `gpus_per_run` GPUs in parallel, each a `scaling run-one` process (under torchrun for several).
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
import subprocess
import sys
import time
from pathlib import Path

from dit.errors import UserError
from scaling.grid import RunSpec
from scaling.runs import execute_run, run_state
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
    """Run on this machine: sequentially in-process on a CPU, or a run per free GPU group in parallel."""
    pending = [r for r in runs if run_state(grid_dir, r).state != "done"]
    gpus = runs[0].executor.gpus_per_run if runs else 0
    if gpus == 0:
        failed = [run.label for run in pending if not _execute_here(run, grid_dir, progress, on_done, on_results)]
        if failed:
            raise RunsFailed(f"runs failed: {', '.join(failed)} (each said why above); fix that, then re-run to resume")
        return
    _run_on_gpus(pending, grid_dir, gpus, on_done, report=on_results is not None)


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


def _run_on_gpus(runs: list[RunSpec], grid_dir, gpus_per_run: int, on_done, *, report: bool):
    free = _visible_gpus()
    if len(free) < gpus_per_run:
        raise ValueError(
            f"runs ask for {gpus_per_run} GPUs each but {len(free)} are visible; lower executor.gpus_per_run"
        )
    queue, running, failed = list(runs), {}, []
    grid = GridLayout(grid_dir)
    grid.logs_dir.mkdir(parents=True, exist_ok=True)
    while queue or running:
        while queue and len(free) >= gpus_per_run:
            run, ids = queue.pop(0), [free.pop(0) for _ in range(gpus_per_run)]
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(ids))
            log = open(grid.run_log(run.name, run.seed), "a")
            command = run_command(grid_dir, run, gpus_per_run, report=report)
            running[subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)] = (run, ids, log)
        time.sleep(2)
        for proc in [p for p in running if p.poll() is not None]:
            run, ids, log = running.pop(proc)
            log.close()
            free += ids
            (failed.append(run.label) if proc.returncode else on_done and on_done(run))
    if failed:
        raise RunsFailed(f"runs failed: {', '.join(failed)}; see {grid.logs_dir}/<run>.log, then re-run to resume them")


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
    work = [SlurmJob(run, grid_dir, on_results) for run in pending]
    jobs = executor.submit_array(work) if executor.cluster == "slurm" else [executor.submit(job) for job in work]
    print(f"submitted {len(jobs)} jobs: {', '.join(j.job_id for j in jobs)} (logs in {GridLayout(grid_dir).slurm_dir})")
    failed = []
    for run, job in zip(pending, jobs):
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
        path = grid.sbatch_script(run.name, run.seed)
        path.write_text(text)
        paths.append(path)
    return paths


EXECUTORS = Registry("executor", {"local": local, "slurm": slurm})
get_executor = EXECUTORS.get
