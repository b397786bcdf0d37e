"""Executing one run of a grid (its state as its directory shows it is `scaling.run_state`'s).

A run trains to each evaluation point (resuming from its last checkpoint), measures the EMA
model's validation loss there (`dit.validate`, once per point), samples and scores that checkpoint
for every setting `scaling.evaluation.point_settings` lists (each record carries the point's
validation loss and, in isoFLOP grids, its budget), then rebuilds the grid's results table and tells
the caller (`on_results`: the command that runs the grid renders the report there). Nothing is
remembered outside the run directory: a finished evaluation point is one JSON file per setting, a
finished run is one whose last point is evaluated, so re-running skips what is done. The process joins
its process group once (`execute_run`) and hands that down.
"""
import contextlib
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from dit.io import atomic_write_text
from scaling.evaluation import EvalSetting, point_settings
from scaling.grid import GridSpec, RunSpec, plan
from scaling.posthoc import point_checkpoint, posthoc_done
from scaling.results import read_eval_record, results_records, write_results
from scaling.run_state import run_layout, training_seconds
from study.layout import GridLayout, RunLayout
from study.schema import to_table

if TYPE_CHECKING:
    from dit.distributed import DistInfo


def run_train_config(run: RunSpec):
    """The run's TrainConfig, keeping a checkpoint at every evaluation point."""
    return run.train_config().replace(keep_every=run.eval.every)


# ---- execution ---------------------------------------------------------------------------------
def execute_run(run: RunSpec, grid_dir, *, progress: bool = True, on_results=None):
    """Train the run to each evaluation point, evaluate it, rebuild the grid's table, then call
    `on_results(grid_dir)` (on the main process; e.g. to render the report). A diverged run leaves
    failed.json (step, cause) in its directory, which `scaling status` shows."""
    from dit import distributed
    from dit.train import run_lock

    grid_dir = Path(grid_dir)
    config = run_train_config(run)
    dist = distributed.setup(config.device)
    layout = run_layout(grid_dir, run)
    with run_lock(layout, dist), recording_divergence(layout, is_main=dist.is_main):  # no `scaling train` meanwhile
        train_and_evaluate(run, grid_dir, config, dist, progress=progress, on_results=on_results)


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


def train_and_evaluate(run: RunSpec, grid_dir: Path, config, dist: "DistInfo", *, progress: bool, on_results):
    """Train to each evaluation point, validate and evaluate it there, then train the steps after the last."""
    from dit.train import train

    directory = run_layout(grid_dir, run).root
    for point in run.eval_points():
        train(config, directory, until=point, progress=progress, lock_held=True)
        validation = validate_point(run, grid_dir, point, dist)
        evaluated = [evaluate_point(run, grid_dir, point, s, dist, validation, progress=progress)
                     for s in point_settings(run, point)]
        evaluated.append(evaluate_posthoc(run, grid_dir, point, dist, progress=progress))
        if any(evaluated) and dist.is_main:
            refresh_results(grid_dir)
            if on_results:
                on_results(grid_dir)
    train(config, directory, progress=progress, lock_held=True)  # the steps after the last evaluation point, if any


def reconstruct_missing(run: RunSpec, layout: RunLayout, step: int, dist: "DistInfo"):
    """Rank 0 reconstructs the lengths whose checkpoints at `step` are missing; every rank waits for it."""
    from dit import distributed
    from dit.posthoc_ema import write_posthoc

    missing = [s for s in run.eval.ema_sigma_rels if not layout.posthoc_checkpoint(step, s).exists()]
    if missing and dist.is_main:
        write_posthoc(layout.root, missing, step=step)
    distributed.barrier()


def evaluate_posthoc(run: RunSpec, grid_dir: Path, step: int, dist: "DistInfo", *, progress: bool = True) -> bool:
    """Score the post-hoc EMA lengths (scaling.posthoc) at `step` if it is the run's last point and they are not
    done: reconstruct them, validate each, sample and score the asked ones. True if any ran."""
    layout = run_layout(grid_dir, run)
    if posthoc_done(run, layout, step):
        return False
    reconstruct_missing(run, layout, step, dist)
    for sigma_rel in run.eval.ema_sigma_rels:
        validation = validate_point(run, Path(grid_dir), step, dist, sigma_rel)
        if sigma_rel in run.eval.ema_sample_sigma_rels:
            shared = {k: v for k, v in validation.items() if k.startswith("val_")}
            for setting in point_settings(run, step):
                evaluate_point(run, Path(grid_dir), step, setting, dist, shared, progress=progress,
                               sigma_rel=sigma_rel)
    return True


def validate_point(run: RunSpec, grid_dir: Path, step: int, dist: "DistInfo", sigma_rel: float | None = None) -> dict:
    """The validation loss of the checkpoint at `step` (dit.validate; with `sigma_rel`, of the post-hoc EMA of
    that length), computed once and kept in its own record; {} when the data has no held-out split or the grid
    asks for none (and on ranks but the first)."""
    from dit.validate import held_out_items, validate_checkpoint

    layout, e, d = run_layout(grid_dir, run), run.eval, run.data
    if not dist.is_main or e.validation_items == 0:
        return {}
    path = layout.validation_record(step) if sigma_rel is None else layout.posthoc_validation_record(step, sigma_rel)
    if path.exists():
        return read_eval_record(path)
    items = held_out_items(d.dataset, d.resolution, e.validation_items, d.codec)
    if items is None:
        return {}
    metrics = validate_checkpoint(point_checkpoint(layout, step, sigma_rel), items, timesteps=e.validation_buckets,
                                  batch_size=e.batch_size, device=dist.device)
    if sigma_rel is not None:  # a results row of its own: the length's validation loss without sampling
        budget = {"budget": run.budget_at(step)} if run.budgets else {}
        metrics = {"step": step, **budget, "ema_sigma_rel": sigma_rel, **metrics,
                   "wall_seconds": training_seconds(layout, step)}
    atomic_write_text(path, json.dumps(metrics, indent=1) + "\n")
    return metrics


def evaluate_point(run: RunSpec, grid_dir: Path, step: int, setting: EvalSetting, dist: "DistInfo",
                   validation: dict | None = None, *, progress: bool = True, sigma_rel: float | None = None) -> bool:
    """Sample and score the checkpoint at `step` (with `sigma_rel`: the post-hoc EMA of that length) with one
    setting, unless done. True if it ran. The record carries the point's `validation` loss and, in an isoFLOP
    grid, its budget."""
    from dit import distributed
    from dit.loggers import log_eval
    from dit.sample import SampleConfig, generate_samples
    from eval.evaluate import SmallSampleWarning, evaluate_samples

    layout = run_layout(grid_dir, run)
    record_path = (layout.eval_record(step, setting.file_stem) if sigma_rel is None
                   else layout.posthoc_eval_record(step, setting.file_stem, sigma_rel))
    if record_path.exists():
        return False
    reference = reference_stats(grid_dir, run, is_main=dist.is_main, progress=progress)
    samples = layout.eval_samples(step, record_path.stem)
    config = SampleConfig(num=setting.num_samples, steps=setting.sampling_steps, sampler=setting.sampler,
                          cfg_scale=setting.cfg_scale, batch_size=run.eval.batch_size, seed=run.train.seed)
    generate_samples(point_checkpoint(layout, step, sigma_rel), samples, config, device=run.train.device,
                     progress=progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)  # said once for the whole grid by sample_count_note
        metrics = evaluate_samples(samples, reference, setting.features, metrics=setting.metrics, progress=progress)
    if dist.is_main:
        budget = {"budget": run.budget_at(step)} if run.budgets else {}
        length = {} if sigma_rel is None else {"ema_sigma_rel": sigma_rel}
        record = {"step": step, **budget, **length, **setting.key(), **metrics, **(validation or {}),
                  "wall_seconds": training_seconds(layout, step)}
        atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
        log_eval(layout, step, setting.file_stem, metrics)  # to the run's loggers, if it has any
        if not run.eval.keep_samples:
            samples.unlink(missing_ok=True)
    distributed.barrier()
    return True


def reference_stats(grid_dir: Path, run: RunSpec, *, is_main: bool = True, progress: bool = True) -> Path:
    """The grid's reference statistics: the spec's file, or made once from the data (by the main process,
    `is_main`) and cached."""
    if run.eval.reference:
        return Path(run.eval.reference)
    from dit import distributed
    from eval.reference import make_reference

    d = run.data
    path = GridLayout(grid_dir).reference(d.dataset, d.resolution, run.eval.features)
    if not path.exists() and is_main:
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
    if not Path(grid_dir).is_dir():
        problem = "is a file" if Path(grid_dir).exists() else "does not exist"
        raise ValueError(f"{grid_dir} {problem}, not a grid directory; give the --out folder of `scaling run-grid`")
    if not path.is_file():
        raise ValueError(f"{grid_dir} holds no {path.name}, so it is not a grid directory; give the --out folder of "
                         f"`scaling run-grid`")
    return load_grid(path)


def claim_grid_dir(grid_dir, spec: GridSpec):
    """Write the resolved spec into grid_dir, refusing a directory that holds another grid's runs."""
    from scaling.gridfile import dump_grid

    check_grid_dir(grid_dir, spec)
    atomic_write_text(GridLayout(grid_dir).spec, dump_grid(spec))


def check_grid_dir(grid_dir, spec: GridSpec):
    """ValueError unless grid_dir can hold `spec`'s grid: new, empty (but for its lock), or this grid's already."""
    grid = GridLayout(grid_dir)
    if Path(grid_dir).exists() and not Path(grid_dir).is_dir():
        raise ValueError(f"--out {grid_dir} is a file; give a new or empty folder, or this grid's folder")
    if grid.spec.exists():
        existing = read_grid(grid_dir)
        if existing.name != spec.name:
            raise ValueError(
                f"{grid_dir} holds the runs of grid {existing.name!r}, not {spec.name!r}; choose another --out"
            )
    elif grid.runs_dir.exists() and any(grid.runs_dir.iterdir()):
        raise ValueError(f"{grid_dir} holds runs but no {grid.spec.name}; choose another --out")
    elif Path(grid_dir).is_dir() and any(p != grid.lock for p in Path(grid_dir).iterdir()):
        raise ValueError(f"{grid_dir} is a folder with files of its own and no {grid.spec.name}; give a new or empty "
                         f"folder as --out")
