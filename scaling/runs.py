"""Executing one run of a grid, and the run's state as its directory shows it.

A run trains to each evaluation point (resuming from its last checkpoint), measures the EMA
model's validation loss there (`dit.validate`, once per point), samples and scores that checkpoint
for every sampling setting (each record carries the point's validation loss and, in isoFLOP
grids, its budget), then rebuilds the grid's results table and tells the
caller (`on_results`: the command that runs the grid renders the report there). Nothing is
remembered outside the run directory: a finished evaluation point is one JSON file, a finished
run is one whose last point is evaluated, so re-running skips what is done.
"""
import contextlib
import dataclasses
import json
import warnings
from pathlib import Path

from dit.checkpoint import list_checkpoints
from dit.io import atomic_write_text
from scaling.grid import GridSpec, RunSpec, plan
from scaling.results import read_eval_record, results_records, write_results
from study.layout import GridLayout, RunLayout
from study.schema import to_table


@dataclasses.dataclass(frozen=True)
class SamplingSetting:
    """One way of sampling and scoring a checkpoint (a column group of the results table)."""

    sampler: str
    sampling_steps: int
    cfg_scale: float
    features: str

    @property
    def file_stem(self) -> str:
        return f"{self.sampler}-{self.sampling_steps}-cfg{self.cfg_scale:g}-{self.features}"


def sampling_settings(run: RunSpec, step: int | None = None) -> list[SamplingSetting]:
    """The settings of every evaluation point; at the last point (`step`) also the unguided
    `final_sampling_steps` sweep (the sampling-compute figure, the paper's Fig. 10)."""
    e = run.eval
    settings = [SamplingSetting(e.sampler, steps, cfg, e.features)
                for steps in e.sampling_steps for cfg in e.cfg_scales]
    if step == run.eval_points()[-1]:
        settings += [SamplingSetting(e.sampler, steps, 1.0, e.features) for steps in e.final_sampling_steps]
    return list(dict.fromkeys(settings))


def run_layout(grid_dir, run: RunSpec) -> RunLayout:
    return GridLayout(grid_dir).run(run.stem, run.seed)


def run_train_config(run: RunSpec):
    """The run's TrainConfig, keeping a checkpoint at every evaluation point."""
    return run.train_config().replace(keep_every=run.eval.every)


# ---- state -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunState:
    name: str
    state: str  # pending, training, done, failed
    step: int
    steps: int
    evaluated: int  # evaluation points with every setting scored
    points: int
    latest: dict | None  # the newest evaluation record of the grid's first sampling setting
    seconds_per_step: float | None
    failure: dict | None = None  # failed.json of a run that diverged: step, cause


def run_state(grid_dir, run: RunSpec) -> RunState:
    """The state of a run, read from its directory alone."""
    layout = run_layout(grid_dir, run)
    checkpoints = list_checkpoints(layout.root)
    step = checkpoints[-1][0] if checkpoints else 0
    points = run.eval_points()
    settings = sampling_settings(run)
    done = [p for p in points if all(layout.eval_record(p, s.file_stem).exists() for s in sampling_settings(run, p))]
    scored = [layout.eval_record(p, settings[0].file_stem) for p in points]
    scored = [path for path in scored if path.exists()]
    latest = read_eval_record(scored[-1]) if scored else None
    finished = step >= run.train.steps and len(done) == len(points)
    started = step or done or layout.train_log.exists()
    failure = read_failure(layout)
    state = "done" if finished else "failed" if failure else ("training" if started else "pending")
    return RunState(
        run.label, state, step, run.train.steps, len(done), len(points), latest, seconds_per_step(layout), failure
    )


def read_failure(layout: RunLayout) -> dict | None:
    """Why the run stopped the last time it ran (failed.json), or None."""
    if not layout.failed.exists():
        return None
    try:
        return json.loads(layout.failed.read_text())
    except json.JSONDecodeError:
        return {"step": None, "cause": "unknown (failed.json is damaged)"}


def last_log_record(layout: RunLayout) -> dict:
    """The last record of the run's train log ({} before the first, or when it is cut mid-line)."""
    if not layout.train_log.exists():
        return {}
    lines = layout.train_log.read_text().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {}


def seconds_per_step(layout: RunLayout) -> float | None:
    """Training wall-clock seconds per step, from the last record of the train log."""
    last = last_log_record(layout)
    return last["wall_seconds"] / last["step"] if last.get("step") else None


# ---- execution ---------------------------------------------------------------------------------
def execute_run(run: RunSpec, grid_dir, *, progress: bool = True, on_results=None):
    """Train the run to each evaluation point, evaluate it, rebuild the grid's table, then call
    `on_results(grid_dir)` (on the main process; e.g. to render the report). A diverged run leaves
    failed.json (step, cause) in its directory, which `scaling status` shows."""
    from dit import distributed

    grid_dir = Path(grid_dir)
    layout = run_layout(grid_dir, run)
    config = run_train_config(run)
    with recording_divergence(layout, is_main=distributed.setup(config.device).is_main):
        train_and_evaluate(run, grid_dir, config, progress=progress, on_results=on_results)


@contextlib.contextmanager
def recording_divergence(layout: RunLayout, *, is_main: bool):
    """Clear the run's failed.json as it starts again; write it (step, cause) when its training diverges."""
    from dit.train import TrainingDiverged

    if is_main:
        layout.failed.unlink(missing_ok=True)
    try:
        yield
    except TrainingDiverged as exc:
        if is_main:
            atomic_write_text(
                layout.failed, json.dumps({"step": exc.step, "cause": exc.cause, "message": str(exc)}) + "\n"
            )
        raise


def train_and_evaluate(run: RunSpec, grid_dir: Path, config, *, progress: bool, on_results):
    from dit import distributed
    from dit.train import train

    directory = run_layout(grid_dir, run).root
    for point in run.eval_points():
        train(config, directory, until=point, progress=progress)
        validation = validate_point(run, grid_dir, point)
        evaluated = [evaluate_point(run, grid_dir, point, s, validation, progress=progress)
                     for s in sampling_settings(run, point)]
        if any(evaluated) and distributed.setup(config.device).is_main:
            refresh_results(grid_dir)
            if on_results:
                on_results(grid_dir)
    train(config, directory, progress=progress)  # the steps after the last evaluation point, if any


def validate_point(run: RunSpec, grid_dir: Path, step: int) -> dict:
    """The validation loss of the checkpoint at `step` (dit.validate), computed once and kept in its own
    record; {} when the data has no held-out split or the grid asks for none (and on ranks but the first)."""
    from dit import distributed
    from dit.validate import held_out_items, validate_checkpoint

    layout, e, d = run_layout(grid_dir, run), run.eval, run.data
    dist = distributed.setup(run.train.device)
    if not dist.is_main or e.validation_items == 0:
        return {}
    path = layout.validation_record(step)
    if path.exists():
        return read_eval_record(path)
    items = held_out_items(d.dataset, d.resolution, e.validation_items, d.codec)
    if items is None:
        return {}
    metrics = validate_checkpoint(layout.checkpoint(step), items, timesteps=e.validation_buckets,
                                  batch_size=e.batch_size, device=dist.device)
    atomic_write_text(path, json.dumps(metrics, indent=1) + "\n")
    return metrics


def evaluate_point(run: RunSpec, grid_dir: Path, step: int, setting: SamplingSetting, validation: dict | None = None,
                   *, progress: bool = True) -> bool:
    """Sample and score the checkpoint at `step` with one setting, unless done. True if it ran.
    The record carries the point's `validation` loss and, in an isoFLOP grid, its budget."""
    from dit import distributed
    from dit.loggers import log_eval
    from dit.sample import SampleConfig, generate_samples
    from eval.evaluate import SmallSampleWarning, evaluate_samples

    layout = run_layout(grid_dir, run)
    record_path = layout.eval_record(step, setting.file_stem)
    if record_path.exists():
        return False
    reference = reference_stats(grid_dir, run, progress=progress)
    samples = layout.eval_samples(step, setting.file_stem)
    config = SampleConfig(num=run.eval.num_samples, steps=setting.sampling_steps, sampler=setting.sampler,
                          cfg_scale=setting.cfg_scale, batch_size=run.eval.batch_size, seed=run.train.seed)
    generate_samples(layout.checkpoint(step), samples, config, device=run.train.device, progress=progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)  # said once for the whole grid by sample_count_note
        metrics = evaluate_samples(samples, reference, setting.features, metrics=run.eval.metrics, progress=progress)
    if distributed.setup(run.train.device).is_main:
        budget = {"budget": run.budget_at(step)} if run.budgets else {}
        record = {"step": step, **budget, **dataclasses.asdict(setting), **metrics, **(validation or {}),
                  "wall_seconds": training_seconds(layout, step)}
        atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
        log_eval(layout, step, setting.file_stem, metrics)  # to the run's loggers, if it has any
        if not run.eval.keep_samples:
            samples.unlink(missing_ok=True)
    distributed.barrier()
    return True


def training_seconds(layout: RunLayout, step: int) -> float | None:
    """Wall-clock training seconds up to `step`, from the train log."""
    log = layout.train_log
    for line in reversed(log.read_text().splitlines() if log.exists() else []):
        record = json.loads(line)
        if record["step"] <= step:
            return record["wall_seconds"]
    return None


def reference_stats(grid_dir: Path, run: RunSpec, *, progress: bool = True) -> Path:
    """The grid's reference statistics: the spec's file, or made once from the data and cached."""
    if run.eval.reference:
        return Path(run.eval.reference)
    from dit import distributed
    from eval.reference import make_reference

    d = run.data
    path = GridLayout(grid_dir).reference(d.dataset, d.resolution, run.eval.features)
    if not path.exists() and distributed.setup(run.train.device).is_main:
        make_reference(d.dataset, path, run.eval.features, resolution=d.resolution, progress=progress)
    distributed.barrier()
    return path


def sample_count_note(spec: GridSpec) -> str | None:
    """A note when the grid's evaluations use fewer samples than their features have dimensions."""
    from eval.features import feature_dims

    dims = max(v for k, v in feature_dims(spec.eval.features).items() if k != "logits")
    if spec.eval.num_samples > dims:
        return None
    return (f"note: {spec.eval.num_samples} samples per evaluation point are fewer than the {dims} feature dimensions: "
            f"FID and sFID are biased upwards, comparable within this grid only (the paper's FID-50K uses 50,000)")


# ---- the results table -------------------------------------------------------------------------
def refresh_results(grid_dir):
    """Rebuild the grid's results table (parquet and CSV) from every evaluation record."""
    spec = read_grid(grid_dir)
    write_results(to_table(results_records(grid_dir, plan(spec))), grid_dir)


# ---- the grid directory ------------------------------------------------------------------------
def read_grid(grid_dir) -> GridSpec:
    from scaling.gridfile import load_grid

    path = GridLayout(grid_dir).spec
    if not path.exists():
        raise ValueError(f"{grid_dir} holds no {path.name}; give the directory a `scaling run-grid` wrote")
    return load_grid(path)


def claim_grid_dir(grid_dir, spec: GridSpec):
    """Write the resolved spec into grid_dir, refusing a directory that holds another grid's runs."""
    from scaling.gridfile import dump_grid

    grid = GridLayout(grid_dir)
    if grid.spec.exists():
        existing = read_grid(grid_dir)
        if existing.name != spec.name:
            raise ValueError(
                f"{grid_dir} holds the runs of grid {existing.name!r}, not {spec.name!r}; choose another --out"
            )
    elif grid.runs_dir.exists() and any(grid.runs_dir.iterdir()):
        raise ValueError(f"{grid_dir} holds runs but no {grid.spec.name}; choose another --out")
    atomic_write_text(grid.spec, dump_grid(spec))


def grid_progress(states: list[RunState], runs: list[RunSpec]) -> str:
    """One line: runs done / started (running or interrupted) / not started, and the training time left."""

    def count(state):
        return sum(s.state == state for s in states)

    from scaling.cost import device_type, executor_layout

    eta = eta_seconds(states, runs)
    at_once = executor_layout(runs[0].executor)[1] if runs and device_type(runs[0].executor) == "cpu" else 1
    workers = min(at_once, max(1, len(states) - count("done")))  # on GPUs how many are free is not known here
    eta_text = f"; about {eta / 60 / workers:.0f} min of training left" if eta else ""
    eta_text += f" ({workers} runs at once)" if eta and workers > 1 else ""
    failed = f", {count('failed')} failed" if count("failed") else ""
    return (f"{count('done')} done, {count('training')} started{failed}, {count('pending')} not started of "
            f"{len(states)} runs{eta_text}")


def eta_seconds(states: list[RunState], runs: list[RunSpec]) -> float | None:
    """Remaining training time: each run's measured seconds per step; for a run not started yet, a
    line seconds = overhead + rate x Gflops fitted to the measured runs. None until runs of two
    sizes are timed when some run has not started (one size cannot tell overhead from rate)."""
    import numpy as np

    from scaling.flops import gflops

    flops = {r.label: gflops(r.dit_config()) for r in runs}
    measured = [(flops[s.name], s.seconds_per_step) for s in states if s.seconds_per_step]
    left = [s for s in states if s.state != "done"]
    unstarted = [s for s in left if not s.seconds_per_step]
    if not measured or unstarted and len({x for x, _ in measured}) < 2:
        return None
    timed = sum((s.steps - s.step) * s.seconds_per_step for s in left if s.seconds_per_step)
    if not unstarted:
        return timed
    rate, overhead = (max(float(c), 0.0) for c in np.polyfit(*np.array(measured).T, 1))
    return timed + sum((s.steps - s.step) * (overhead + rate * flops[s.name]) for s in unstarted)
