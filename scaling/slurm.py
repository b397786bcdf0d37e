"""The SLURM executor: one submitit job per unfinished run, and what SLURM says of each job.

Runs that ask for the same resources (`SlurmSpec.resources`: the grid's, or an override for their size
or model) go out as one job array. The job ids are kept in GRID_DIR/slurm/jobs.json, so that a later
`run-grid` (after `--detach`) waits for the jobs still queued or running instead of submitting them
again, and `scaling status` can say what SLURM does with each run. Job states come from `squeue`
(accounting may be off, so never from `sacct`), and for a job SLURM no longer lists, from the line
that slurmstepd writes into its log ("CANCELLED", "DUE TO TIME LIMIT").

Stopping. SLURM warns a job `signal_lead` seconds before its time limit with USR2 (sbatch --signal): the
run checkpoints and the job requeues itself through submitit, so the next allocation resumes it. SIGTERM
means SLURM itself ends or requeues the job (`scontrol requeue`, preemption, `scancel`): the run
checkpoints and the job exits without requeueing it a second time and without a result, so whoever
waits sees SLURM's own outcome (the job back in the queue, or cancelled).

Trust: submitit pickles each job (the run spec) and its result into GRID_DIR/slurm/<job id>/, and the job
and the waiting side unpickle them: whoever can write to GRID_DIR/slurm can run code as the user who
submits or executes the grid. Keep grid directories writable by their owner only.
"""
import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from dit.errors import UserError
from dit.io import atomic_write_text
from scaling.grid import RunSpec, SlurmResources, start_order
from scaling.launch import RunsFailed, run_command, usable_cores
from scaling.run_state import run_state
from scaling.runs import execute_run
from study.layout import GridLayout

CHECKPOINT_WRITE_BYTES_PER_S = 200e6  # a shared file system's write speed, on the low side
CHECKPOINT_COPIES = 4  # weights, EMA, Adam's two moments, fp32
SIGNAL_MARGIN_S = 60  # one step, the processes agreeing to stop, and slack (SLURM may warn up to 30 s early)
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "RESIZING",
                 "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"}
POLL_S = 2.0


class SlurmError(UserError):
    """SLURM refused or lost a job (sbatch's error, squeue missing); the message says the fix."""


def signal_lead(run: RunSpec, resources: SlurmResources) -> int:
    """Seconds before the time limit at which the job is warned: the spec's, or enough to write a checkpoint
    of the run's size (weights, EMA and Adam's moments in fp32) plus SIGNAL_MARGIN_S."""
    if resources.signal_lead is not None:
        return resources.signal_lead
    from scaling.flops import params

    lead = SIGNAL_MARGIN_S + params(run.dit_config()) * 4 * CHECKPOINT_COPIES / CHECKPOINT_WRITE_BYTES_PER_S
    if lead >= resources.time * 60:
        raise ValueError(f"{run.label}: executor.slurm.time {resources.time} min leaves no room for the {lead:.0f} s "
                         "it needs to checkpoint after SLURM's warning; raise time or set signal_lead")
    return int(lead)


def submitit_parameters(run: RunSpec, resources: SlurmResources) -> dict:
    """The AutoExecutor parameters of a run's job (no GPU option on a CPU-only cluster: sbatch refuses it)."""
    slurm = run.executor.slurm
    params = dict(nodes=resources.nodes, tasks_per_node=resources.tasks, cpus_per_task=resources.cpus_per_task,
                  timeout_min=resources.time, slurm_signal_delay_s=signal_lead(run, resources),
                  slurm_array_parallelism=slurm.array_parallelism, name=run.grid,
                  slurm_additional_parameters={"requeue": True})  # requeueable where JobRequeue is 0
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    named = dict(slurm_partition=slurm.partition, slurm_account=slurm.account)
    return params | {key: value for key, value in named.items() if value}


def job_threads() -> int:
    """The CPUs SLURM gave this task: SLURM_CPUS_PER_TASK, else the affinity mask."""
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(given) if given.isdigit() else usable_cores()


class SlurmJob:
    """A picklable job: caps torch's threads to the job's CPUs, sets up torch.distributed from submitit's
    environment, then executes the run (see the module's docstring for how it stops)."""

    def __init__(self, run: RunSpec, grid_dir, on_results=None):
        self.run, self.grid_dir, self.on_results = run, str(grid_dir), on_results

    def __call__(self):
        import submitit
        import torch

        from dit.train import TrainingInterrupted

        torch.set_num_threads(job_threads())
        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            execute_run(self.run, self.grid_dir, progress=False, on_results=self.on_results)
        except TrainingInterrupted as exc:
            if exc.signum == signal.SIGTERM:  # SLURM ends or requeues the job itself: no result, no second requeue
                raise SystemExit(exc.exit_status) from None
            requeue_through_submitit()
            raise
        return self.run.label

    def checkpoint(self):
        """On SLURM's warning (USR2), requeue the same job: it resumes from the run directory."""
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmJob(self.run, self.grid_dir, self.on_results))


def requeue_through_submitit():
    """Hand a stop that training has checkpointed to submitit's handler of its signal: on the main task it calls
    SlurmJob.checkpoint, requeues the job and exits; on the other tasks it returns."""
    import submitit

    signum = getattr(signal, f"SIG{submitit.JobEnvironment.USR_SIG}")
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)


# ---- submission ----------------------------------------------------------------------------------
SBATCH_FIXES = (
    ("invalid partition", "executor.slurm.partition names no partition of this cluster; `sinfo -s` lists them"),
    ("invalid account", "executor.slurm.account is not yours on this cluster; `sacctmgr show assoc user=$USER` "
     "lists your accounts"),
    ("generic resource", "this cluster (or partition) has no GPUs to give: set executor.slurm.gpus_per_node: 0 "
     "for a CPU-only cluster, or choose a GPU partition"),
    ("node configuration is not available", "no node has the CPUs, GPUs or memory asked for: lower "
     "executor.slurm's gpus_per_node, tasks_per_node or cpus_per_task"),
    ("time limit", "executor.slurm.time is over the partition's limit (`sinfo -s`); lower it"),
)


def sbatch_error(text: str) -> SlurmError:
    """sbatch's refusal as one line: its own words, and the fix."""
    said = [line.split("error:", 1)[1].strip() for line in text.splitlines() if "error:" in line]
    cause = said[-1] if said else (text.strip().splitlines() or ["no reason given"])[-1].strip()
    cause = cause.removeprefix("Batch job submission failed: ")
    fix = next((fix for key, fix in SBATCH_FIXES if any(key in s.lower() for s in said or [cause])),
               "check executor.slurm in the grid file")
    return SlurmError(f"sbatch refused the job: {cause}; {fix}")


def resource_groups(runs: list[RunSpec]) -> dict[SlurmResources, list[RunSpec]]:
    """The runs by the resources they ask for, costliest first within each group (the array's order)."""
    ordered = [runs[i] for i in start_order(runs)]
    groups: dict[SlurmResources, list[RunSpec]] = {}
    for run in ordered:
        groups.setdefault(run.executor.slurm.resources(run.model), []).append(run)
    return groups


def submit(runs: list[RunSpec], grid_dir, cluster: str, on_results) -> dict[str, str]:
    """Submit one job array per resource group; {run key: job id}. When sbatch refuses a group, the jobs already
    submitted are cancelled and the files of this submission removed, and the refusal is raised."""
    import shutil

    if cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise SlurmError("sbatch is not installed here: submit from a SLURM login node, or use executor kind local")
    folder = GridLayout(grid_dir).slurm_dir
    folder.mkdir(parents=True, exist_ok=True)
    before, submitted = set(folder.iterdir()), {}
    try:
        for resources, group in resource_groups(runs).items():
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's refusal; it is in the error
                jobs = submit_group(group, resources, grid_dir, cluster, on_results)
            submitted.update({run.key: job.job_id for run, job in zip(group, jobs, strict=True)})
    except (Exception, KeyboardInterrupt) as exc:
        cancel(submitted.values(), cluster)
        remove_new_files(folder, before)
        raise submission_error(exc) from None
    return submitted


def submit_group(group: list[RunSpec], resources: SlurmResources, grid_dir, cluster: str, on_results):
    """Submit the runs of one resource group: a job array on SLURM, one job each on submitit's local executor."""
    import submitit

    work = [SlurmJob(run, grid_dir, on_results) for run in group]
    folder = GridLayout(grid_dir).slurm_dir / "%j"  # %j: the job id
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster,
                                     slurm_max_num_timeout=group[0].executor.slurm.timeouts)
    if executor.cluster == "slurm":
        executor.update_parameters(**submitit_parameters(group[0], resources))
        return executor.submit_array(work)
    executor.update_parameters(timeout_min=resources.time)  # submitit's local executor takes no SLURM option
    return [executor.submit(job) for job in work]


def submission_error(exc: BaseException) -> BaseException:
    """A failed submission as the user's error it is (sbatch's refusal), or as it was."""
    from submitit.core.utils import FailedJobError

    return sbatch_error(str(exc)) if isinstance(exc, FailedJobError) else exc


def cancel(job_ids, cluster: str):
    """scancel the jobs (a failed submission's first arrays), ignoring any that already ended."""
    if job_ids and cluster == "slurm":
        subprocess.run(["scancel", *job_ids], check=False, capture_output=True, timeout=60)


def remove_new_files(folder: Path, before: set[Path]):
    """Remove what a failed submission wrote into GRID_DIR/slurm (its script, pickles and job folders)."""
    import shutil

    for path in set(folder.iterdir()) - before:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# ---- the record of submitted jobs and what SLURM says of them -------------------------------------
def read_jobs(grid_dir) -> dict[str, str]:
    """{run key: its latest job id} from GRID_DIR/slurm/jobs.json ({} before the first submission)."""
    path = GridLayout(grid_dir).slurm_jobs
    return json.loads(path.read_text()) if path.exists() else {}


def record_jobs(grid_dir, submitted: dict[str, str]):
    """Add the jobs just submitted to GRID_DIR/slurm/jobs.json (atomically)."""
    atomic_write_text(GridLayout(grid_dir).slurm_jobs, json.dumps(read_jobs(grid_dir) | submitted, indent=1) + "\n")


def queue_states() -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} of this user's jobs that SLURM still lists (array tasks one by one)."""
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-t", "all", "-o", "%i|%T|%r"], capture_output=True,
                             text=True, timeout=60)
    except FileNotFoundError:
        raise SlurmError("squeue is not installed here: run this on the cluster's login node") from None
    if out.returncode:
        raise SlurmError(f"squeue failed: {out.stderr.strip() or out.returncode}; is the cluster reachable?")
    rows = [line.split("|") for line in out.stdout.splitlines() if line.count("|") == 2]
    return {job: (state, reason) for job, state, reason in rows}


@dataclasses.dataclass(frozen=True)
class JobState:
    """What SLURM says of a run's job: `state` (queued, running, done, cancelled, timeout, failed, ...)."""

    job_id: str
    state: str
    detail: str = ""

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def __str__(self) -> str:
        return f"{self.state} (job {self.job_id}{': ' + self.detail if self.detail else ''})"


def job_paths(grid_dir, job_id: str):
    """submitit's files of a job's first task: its result pickle and its logs."""
    from submitit.core.utils import JobPaths

    return JobPaths(GridLayout(grid_dir).slurm_dir / "%j", job_id=job_id, task_id=0)


def job_state(grid_dir, job_id: str, queue: dict[str, tuple[str, str]]) -> JobState:
    """A job's state from squeue, else (SLURM forgot it) from its result file and its log."""
    state, reason = queue.get(job_id, ("", ""))
    if state in ("PENDING", "REQUEUED", "REQUEUE_FED"):
        return JobState(job_id, "queued", "" if reason == "None" else reason)
    if state in ACTIVE_STATES:
        return JobState(job_id, "running")
    paths = job_paths(grid_dir, job_id)
    if paths.result_pickle.exists():
        return job_result(job_id, paths.result_pickle)
    if state:
        return JobState(job_id, state.lower().replace("_", " "), last_log_line(paths.stderr))
    return JobState(job_id, ended_as(paths.stderr), last_log_line(paths.stderr))


# What slurmstepd's last '*** JOB <id> ON <node> CANCELLED AT <time> [DUE TO <why>] ***' line says, by its why.
ENDED_BECAUSE = {"": "cancelled", "TIME LIMIT": "timeout", "PREEMPTION": "preempted", "NODE FAILURE": "node fail"}


def ended_as(log: Path) -> str:
    """How a job SLURM no longer lists ended, from the last line slurmstepd wrote into its log ('ended': unknown;
    a requeue's line means a later allocation's fate is not known)."""
    said = log.read_text(errors="replace") if log.exists() else ""
    ends = re.findall(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))? \*\*\*", said)
    return ENDED_BECAUSE.get(ends[-1], "ended") if ends else "ended"


def last_log_line(path: Path) -> str:
    """The last line of a job's log that says something (its error), or ''."""
    if not path.exists():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def grid_job_states(grid_dir, runs: list[RunSpec]) -> dict[str, JobState]:
    """{run key: its latest job's state} for the runs of the grid that were submitted."""
    jobs = read_jobs(grid_dir)
    if not jobs:
        return {}
    queue = queue_states()
    return {run.key: job_state(grid_dir, jobs[run.key], queue) for run in runs if run.key in jobs}


# ---- the executor --------------------------------------------------------------------------------
def slurm(runs: list[RunSpec], grid_dir, *, progress: bool = True, dry_run: bool = False, detach: bool = False,
          cluster: str = "slurm", on_done=None, on_results=None):
    """One SLURM job per unfinished run; waits for them (or with `detach` returns once they are queued; a later
    call waits for the jobs still in flight and submits only runs that have none). dry_run writes the sbatch
    scripts only. `cluster` 'local' runs the jobs through submitit's local executor (for tests)."""
    pending = [r for r in runs if run_state(grid_dir, r).state != "done"]
    if not pending:
        return
    if dry_run:
        write_sbatch_scripts(pending, grid_dir, report=on_results is not None)
        return
    states = grid_job_states(grid_dir, pending) if cluster == "slurm" else {}
    in_flight = {key: s.job_id for key, s in states.items() if s.active}
    fresh = [r for r in pending if r.key not in in_flight]
    submitted = submit(fresh, grid_dir, cluster, on_results) if fresh else {}
    record_jobs(grid_dir, submitted)
    folder = GridLayout(grid_dir).slurm_dir
    if submitted:
        print(f"submitted {len(submitted)} jobs: {', '.join(submitted.values())} (logs in {folder})", flush=True)
    if in_flight:
        print(f"waiting for {len(in_flight)} jobs submitted before: {', '.join(in_flight.values())}", flush=True)
    if detach:
        print(f"detached: `scaling status {grid_dir}` shows the jobs; re-run run-grid to wait for them", flush=True)
        return
    failed = wait_for_jobs(pending, grid_dir, in_flight | submitted, cluster, on_done)
    if failed:
        raise RunsFailed(f"runs failed: {'; '.join(failed)}; see the job logs in {folder}, then re-run to resume them")


def wait_for_jobs(runs: list[RunSpec], grid_dir, jobs: dict[str, str], cluster: str, on_done) -> list[str]:
    """Wait until every run's job has ended; call on_done for each run that finished; the failed ones' causes."""
    waiting, failed = list(runs), []
    while waiting:
        queue = queue_states() if cluster == "slurm" else {}
        for run in list(waiting):
            state = job_state(grid_dir, jobs[run.key], queue) if cluster == "slurm" else local_job_state(
                grid_dir, jobs[run.key])
            if state.active:
                continue
            waiting.remove(run)
            if state.state != "done":
                failed.append(f"{run.label} ({state})")
                print(f"{run.label}: {state}", file=sys.stderr, flush=True)
            elif on_done:
                on_done(run)
        if waiting:
            time.sleep(POLL_S)
    return failed


def local_job_state(grid_dir, job_id: str) -> JobState:
    """A job of submitit's local executor: running until it wrote its result."""
    result = job_paths(grid_dir, job_id).result_pickle
    return job_result(job_id, result) if result.exists() else JobState(job_id, "running")


def job_result(job_id: str, result_pickle: Path) -> JobState:
    """A job that wrote its result: done, or failed with the last line of its traceback."""
    from submitit.core.utils import pickle_load

    outcome, result = pickle_load(result_pickle)
    if outcome == "success":
        return JobState(job_id, "done")
    lines = [line.strip() for line in str(result).splitlines() if line.strip()]
    return JobState(job_id, "failed", lines[-1] if lines else "unknown error")


# ---- sbatch scripts without submitting -----------------------------------------------------------
def write_sbatch_scripts(runs: list[RunSpec], grid_dir, *, report: bool = True) -> list[Path]:
    """The sbatch script of each run, as it would be submitted: its resources, SLURM's warning `signal_lead`
    seconds before the time limit, torch's threads from the CPUs per task, `srun scaling run-one`."""
    from submitit.slurm.slurm import _make_sbatch_string

    slurm, grid = runs[0].executor.slurm, GridLayout(grid_dir)
    grid.sbatch_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for run in runs:
        resources = slurm.resources(run.model)
        command = " ".join(run_command(grid_dir, run, 1, report=report)).replace(sys.executable, "python")
        text = _make_sbatch_string(
            command=command, folder=str(grid.sbatch_dir), job_name=f"{run.grid}-{run.dir_name}",
            partition=slurm.partition, account=slurm.account, nodes=resources.nodes,
            ntasks_per_node=resources.tasks, cpus_per_task=resources.cpus_per_task,
            gpus_per_node=resources.gpus_per_node or None, time=resources.time,
            signal_delay_s=signal_lead(run, resources), setup=["export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"],
            additional_parameters={"requeue": True},
        )
        path = grid.sbatch_script(run.stem, run.seed)
        path.write_text(text)
        paths.append(path)
    return paths
