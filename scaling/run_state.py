"""A run's state as its directory shows it: pending, training, done or failed, its step, the evaluation
points scored, its newest record and its training pace. Nothing is remembered outside the run directory:
a finished evaluation point is one JSON file per setting, a finished run one whose last point is scored.
"""
import dataclasses
import json

from dit.checkpoint import list_checkpoints
from scaling.evaluation import headline_setting, point_settings
from scaling.grid import RunSpec
from scaling.posthoc import posthoc_done
from scaling.results import read_eval_record
from study.layout import GridLayout, RunLayout


def run_layout(grid_dir, run: RunSpec) -> RunLayout:
    """The paths of the run's directory in the grid directory."""
    return GridLayout(grid_dir).run(run.stem, run.seed)


@dataclasses.dataclass(frozen=True)
class RunState:
    name: str
    state: str  # pending, training, done, failed, damaged (a record of it cannot be read)
    step: int
    steps: int
    evaluated: int  # evaluation points with every setting scored (the runner scores them in order)
    points: int
    latest: dict | None  # the newest evaluation record of the grid's first sampling setting
    seconds_per_step: float | None
    failure: dict | None = None  # failed.json of a run that diverged (step, cause), or what is damaged (cause)

    def seconds_left(self) -> float | None:
        """Training seconds left from the run's own seconds per step (None when not timed yet, or done):
        the one estimate `scaling status`, `scaling.progress.eta_seconds` and `scaling.cost` all read."""
        if not self.seconds_per_step or self.state == "done":
            return None
        return (self.steps - self.step) * self.seconds_per_step


def run_state(grid_dir, run: RunSpec) -> RunState:
    """The state of a run, read from its directory alone."""
    layout = run_layout(grid_dir, run)
    checkpoints = list_checkpoints(layout.root)
    step = checkpoints[-1][0] if checkpoints else 0
    points = run.eval_points()
    done = [p for p in points if all(layout.eval_record(p, s.file_stem).exists() for s in point_settings(run, p))
            and posthoc_done(run, layout, p)]
    headline = headline_setting(run).file_stem
    scored = [layout.eval_record(p, headline) for p in points]
    scored = [path for path in scored if path.exists()]
    finished = step >= run.train.steps and len(done) == len(points)
    started = step or done or layout.train_log.exists()
    failure = read_failure(layout)
    state = "done" if finished else "failed" if failure else ("training" if started else "pending")
    try:
        latest = read_eval_record(scored[-1]) if scored else None
    except ValueError as exc:  # the other runs still show: this one is marked with what to do
        latest, state, failure = None, "damaged", {"step": None, "cause": str(exc)}
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
    lines = layout.train_log.read_text(errors="replace").splitlines()  # a damaged line is skipped like a cut one
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {}


def seconds_per_step(layout: RunLayout) -> float | None:
    """Training wall-clock seconds per step, from the last record of the train log."""
    last = last_log_record(layout)
    return last["wall_seconds"] / last["step"] if last.get("step") else None


def training_seconds(layout: RunLayout, step: int) -> float | None:
    """Wall-clock training seconds up to `step`, from the train log."""
    log = layout.train_log
    for line in reversed(log.read_text().splitlines() if log.exists() else []):
        record = json.loads(line)
        if record["step"] <= step:
            return record["wall_seconds"]
    return None
