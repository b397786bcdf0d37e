"""Every path and file name of a grid directory and of a run directory, in one place.

A grid directory (`scaling run-grid --out GRID_DIR`)::

    grid.yaml                       the resolved grid spec
    runs/<run>/                     one run directory per run ('/' in the run's name -> '-'; '<run>-seed<N>'
                                    for each seed of a grid that names seeds)
    reference-<data>-<res>px-<features>.npz   reference statistics made from the data
    results.parquet, results.csv    the results table
    report/report.html, report/report.pdf, report/figures/
    logs/<run>.log                  the output of each run's process (local executor on GPUs)
    slurm/                          submitit's job folders; slurm/jobs.json (run -> job id); slurm/dry-run/<run>.sbatch
    grid.lock                       held by the `scaling run-grid` that works on the directory (pid, host)

A run directory (`scaling train --run-dir RUN_DIR`)::

    config.json                     the exact config the run trained with
    train-log.jsonl                 one JSON record per logged step
    checkpoints/step_NNNNNNN.pt
    samples/step_NNNNNNN.png, samples/progress.gif   EMA previews
    eval/step_NNNNNNN/<setting>.json (and .npz)      one record per evaluation point and setting
    eval/step_NNNNNNN/validation.json                the validation loss at that point (in every record too)
    eval/step_NNNNNNN/<setting>-ema<sigma_rel>.json  the same of a post-hoc EMA (eval.ema_sigma_rels)
    eval/step_NNNNNNN/validation-ema<sigma_rel>.json its validation loss (one results row of its own)
    ema-snapshots/step_NNNNNNN.pt   the power-function EMA profiles at that step (half precision by default)
    posthoc-ema/step_NNNNNNN-ema<sigma_rel>.pt       an EMA reconstructed by `scaling ema` (a checkpoint)
    lr-find.json, lr-find.png       the learning-rate range test, when one ran
    tensorboard/, wandb/            the loggers' files (`--logger tensorboard`, `--logger wandb`)
    run.lock                        held by the process that trains the run (pid, host)
    failed.json                     why a grid's run stopped (a diverged loss: step and cause), until it re-runs
"""
import dataclasses
import re
from pathlib import Path

STEP_PATTERN = re.compile(r"^step_(\d{7,})$")
VALIDATION_RECORD = "validation.json"
VALIDATION_STEM = "validation"
MAX_CLASS_COLUMNS = 16  # a preview with at most this many classes puts one class per column


def preview_columns(num_classes: int, images: int) -> int | None:
    """Columns of a run's sample preview (its i-th image has class i % num_classes): one per class, so column c
    holds class c, when there are at most MAX_CLASS_COLUMNS classes; None (a square-ish grid) otherwise."""
    return min(images, num_classes) if num_classes <= MAX_CLASS_COLUMNS else None


def ema_suffix(sigma_rel: float) -> str:
    """0.05 -> '-ema0.05': what names the files of a post-hoc EMA of that relative length."""
    return f"-ema{sigma_rel:g}"


def step_name(step: int) -> str:
    """12 -> 'step_0000012': file and folder names sort in step order."""
    return f"step_{step:07d}"


def parse_step(path) -> int | None:
    """The step of a file or folder named by `step_name` (any suffix), or None."""
    match = STEP_PATTERN.match(Path(path).name.split(".")[0])
    return int(match.group(1)) if match else None


def dir_name(run: str) -> str:
    """'DiT-B/4-cross-attn' -> 'DiT-B-4-cross-attn' (file names replace '/' by '-')."""
    return run.replace("/", "-")


def run_dir_name(run: str, seed: int | None = None) -> str:
    """The directory of a run: 'DiT-B/4' -> 'DiT-B-4', or 'DiT-B-4-seed1' for seed 1 of a grid that names seeds."""
    return dir_name(run) if seed is None else f"{dir_name(run)}-seed{seed}"


def steps_in(folder, suffix: str) -> list[tuple[int, Path]]:
    """(step, path) of every `step_NNNNNNN<suffix>` file in folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(parse_step(p), p) for p in folder.iterdir() if p.name.endswith(suffix)]
    return sorted((step, p) for step, p in found if step is not None and p.name == f"{step_name(step)}{suffix}")


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The files of one run directory."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def train_log(self) -> Path:
        return self.root / "train-log.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints_dir / f"{step_name(step)}.pt"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    def preview(self, step: int) -> Path:
        return self.samples_dir / f"{step_name(step)}.png"

    def previews(self) -> list[tuple[int, Path]]:
        """(step, path) of every preview the run wrote, oldest first."""
        return steps_in(self.samples_dir, ".png")

    @property
    def progress_gif(self) -> Path:
        return self.samples_dir / "progress.gif"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    @property
    def wandb_dir(self) -> Path:
        """Made by W&B itself inside the folder it is given (the run directory)."""
        return self.root / "wandb"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_record(self, step: int, setting: str) -> Path:
        return self.eval_dir / step_name(step) / f"{setting}.json"

    def eval_samples(self, step: int, setting: str) -> Path:
        """The samples an evaluation scored, beside its record (kept only when the grid asks)."""
        return self.eval_record(step, setting).with_suffix(".npz")

    def eval_records(self) -> list[Path]:
        """Every evaluation record of the run, sorted by path (step, then setting); not the validation records."""
        return sorted(p for p in self.eval_dir.glob("step_*/*.json") if p.name != VALIDATION_RECORD)

    def validation_record(self, step: int) -> Path:
        """The validation loss of the checkpoint at `step` (dit.validate), computed once per point."""
        return self.eval_dir / step_name(step) / VALIDATION_RECORD

    def posthoc_eval_record(self, step: int, setting: str, sigma_rel: float) -> Path:
        """The record of the post-hoc EMA of `sigma_rel` at `step`, scored with one sampling setting."""
        return self.eval_record(step, setting + ema_suffix(sigma_rel))

    def posthoc_validation_record(self, step: int, sigma_rel: float) -> Path:
        """The validation loss of the post-hoc EMA of `sigma_rel` at `step` (a results row of its own)."""
        return self.eval_record(step, VALIDATION_STEM + ema_suffix(sigma_rel))

    @property
    def ema_snapshots_dir(self) -> Path:
        return self.root / "ema-snapshots"

    def ema_snapshot(self, step: int) -> Path:
        return self.ema_snapshots_dir / f"{step_name(step)}.pt"

    def ema_snapshots(self) -> list[tuple[int, Path]]:
        """(step, path) of every EMA snapshot of the run, oldest first."""
        return steps_in(self.ema_snapshots_dir, ".pt")

    @property
    def posthoc_dir(self) -> Path:
        return self.root / "posthoc-ema"

    def posthoc_checkpoint(self, step: int, sigma_rel: float) -> Path:
        """The EMA of relative length `sigma_rel` at `step`, reconstructed from the snapshots (`scaling ema`)."""
        return self.posthoc_dir / f"{step_name(step)}{ema_suffix(sigma_rel)}.pt"

    @property
    def lr_find_json(self) -> Path:
        return self.root / "lr-find.json"

    @property
    def lr_find_png(self) -> Path:
        return self.root / "lr-find.png"

    @property
    def lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def failed(self) -> Path:
        return self.root / "failed.json"


@dataclasses.dataclass(frozen=True)
class GridLayout:
    """The files of one grid directory."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def spec(self) -> Path:
        return self.root / "grid.yaml"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def lock(self) -> Path:
        return self.root / "grid.lock"

    def run(self, name: str, seed: int | None = None) -> RunLayout:
        """The run directory of run `name` (of `seed`, when the grid names seeds)."""
        return RunLayout(self.runs_dir / run_dir_name(name, seed))

    def run_dirs(self) -> dict[str, Path]:
        """Directory name -> path of every run directory present, sorted by name."""
        if not self.runs_dir.is_dir():
            return {}
        return {p.name: p for p in sorted(self.runs_dir.iterdir()) if p.is_dir()}

    def reference(self, dataset: str, resolution: int, features: str) -> Path:
        data = dataset.replace("/", "-").strip("-.")
        return self.root / f"reference-{data}-{resolution}px-{features}.npz"

    @property
    def results_parquet(self) -> Path:
        return self.root / "results.parquet"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def report(self) -> "ReportLayout":
        return ReportLayout(self.report_dir)

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def run_log(self, name: str, seed: int | None = None) -> Path:
        """The output of the `scaling run-one` process of a run (the local executor on GPUs or with CPU workers)."""
        return self.logs_dir / f"{run_dir_name(name, seed)}.log"

    def run_threads(self, name: str, seed: int | None = None) -> Path:
        """The number of CPU threads a CPU worker's run may use now (raised when other workers fall idle)."""
        return self.logs_dir / f"{run_dir_name(name, seed)}.threads"

    @property
    def slurm_dir(self) -> Path:
        return self.root / "slurm"

    @property
    def slurm_jobs(self) -> Path:
        """{run key: its latest SLURM job id}, written at each submission."""
        return self.slurm_dir / "jobs.json"

    @property
    def sbatch_dir(self) -> Path:
        return self.slurm_dir / "dry-run"

    def sbatch_script(self, name: str, seed: int | None = None) -> Path:
        return self.sbatch_dir / f"{run_dir_name(name, seed)}.sbatch"


@dataclasses.dataclass(frozen=True)
class ReportLayout:
    """The files of a report folder (GRID_DIR/report unless another is named)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def html(self) -> Path:
        return self.root / "report.html"

    @property
    def pdf(self) -> Path:
        return self.root / "report.pdf"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"
