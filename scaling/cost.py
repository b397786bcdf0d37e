"""What a grid costs before it runs, and what is left of a running one: GPU-hours of training and of
evaluation, wall time on N GPUs and money, read from a throughput table (`scaling.throughput`).

- Training: steps x batch / images/s of one GPU at the run's per-GPU batch (data-parallel runs are
  taken to scale linearly over their GPUs). A model the table does not hold is estimated from the
  measured models of the same device and precision: a line log(images/s) = a + b log(Gflops) fitted
  on them, one point per model (its row nearest the run's batch); with one measured model,
  images/s x Gflops is held constant (compute-bound).
- Evaluation, per point and for each setting the runner evaluates there (`scaling.evaluation.point_settings`,
  the last point's `final_sampling_steps` and the post-hoc EMA lengths sampled there included, through
  `scaling.posthoc.posthoc_settings`): samples x steps x passes / (forward passes per second), 2 passes per
  guided step and 1 without, plus VAE decoding and feature extraction of the samples.
  Forward passes/s against Gflops are fitted the same way; one measured model borrows the training slope.
- A run of `scaling status` that has trained for a while uses its own seconds per step instead
  (`RunState.seconds_left`, the estimate `scaling status` shows per run).
- Wall time: runs in `scaling.grid.start_order` (training compute, largest first, as the local
  executor starts them), each on its GPUs as soon as enough are free (greedy list scheduling), at
  most `runs_at_once` together (SLURM's array; `cpu_workers` on a CPU).
"""

import dataclasses
import heapq
import math
from typing import TYPE_CHECKING

import numpy as np

from scaling.evaluation import EvalSetting, point_settings
from scaling.grid import ExecutorSpec, RunSpec, start_order
from scaling.posthoc import posthoc_settings
from scaling.throughput import guidance_passes, passes_per_sec

if TYPE_CHECKING:
    from scaling.run_state import RunState

COMPUTE_BOUND_SLOPE = -1.0  # rate ~ 1 / Gflops: the slope when one measured model cannot show another
SECONDS_PER_HOUR = 3600.0
MEASURE_HINT = "measure it with `scaling bench --save FILE.json` on that device and give --throughput FILE.json"


@dataclasses.dataclass(frozen=True)
class RateLine:
    """rate = exp(intercept) x Gflops ** slope, through measured (Gflops, rate) points spanning [low, high]."""

    slope: float
    intercept: float
    low: float
    high: float

    def at(self, gflops: float) -> float:
        return math.exp(self.intercept + self.slope * math.log(gflops))

    def basis(self, gflops: float) -> str:
        return "interpolated" if self.low * (1 - 1e-9) <= gflops <= self.high * (1 + 1e-9) else "extrapolated"


def fit_rate_line(points: list[tuple[float, float]], fallback_slope: float = COMPUTE_BOUND_SLOPE) -> RateLine:
    """Least squares in log-log on (Gflops, rate) points; `fallback_slope` through their mean when
    they hold fewer than two distinct Gflops."""
    x, y = np.log([g for g, _ in points]), np.log([r for _, r in points])
    if len(set(x.round(9))) >= 2:
        slope, intercept = np.polyfit(x, y, 1)
    else:
        slope, intercept = fallback_slope, float(np.mean(y - fallback_slope * x))
    return RateLine(float(slope), float(intercept), float(np.exp(x.min())), float(np.exp(x.max())))


@dataclasses.dataclass(frozen=True)
class Rate:
    """A rate of one GPU and where it comes from: measured, measured at batch B, interpolated, extrapolated."""

    value: float
    basis: str


def model_points(rows: list[dict], batch: int) -> list[dict]:
    """One row per measured model (name and Gflops): the one whose batch is nearest `batch` (in ratio)."""
    best = {}
    for row in rows:
        key = (row["model"], round(row["gflops"], 3))
        distance = abs(math.log(row["batch_size"] / batch))
        if key not in best or distance < abs(math.log(best[key]["batch_size"] / batch)):
            best[key] = row
    return list(best.values())


def rate_of(
    points: list[dict], value, model: str, gflops: float, batch: int, fallback_slope: float = COMPUTE_BOUND_SLOPE
) -> tuple[Rate, RateLine]:
    """The rate of `model` (`value(row)` of its measured row, else the fitted line at its Gflops) and the line."""
    line = fit_rate_line([(p["gflops"], value(p)) for p in points], fallback_slope)
    for p in points:
        if p["model"] == model and math.isclose(p["gflops"], gflops, rel_tol=1e-3):
            basis = "measured" if p["batch_size"] == batch else f"measured at batch {p['batch_size']}"
            return Rate(value(p), basis), line
    return Rate(line.at(gflops), line.basis(gflops)), line


# ---- the rows a grid reads -----------------------------------------------------------------------
def device_type(executor: ExecutorSpec) -> str:
    if executor.kind == "slurm":
        return "cuda" if executor.slurm.gpus_per_node else "cpu"  # gpus_per_node 0: a CPU-only cluster
    return "cuda" if executor.gpus_per_run > 0 else "cpu"


def executor_layout(executor: ExecutorSpec) -> tuple[int, int | None]:
    """GPUs per run and how many runs execute at once (None: as many as the GPUs hold)."""
    if executor.kind == "slurm":
        return max(1, executor.slurm.nodes * executor.slurm.gpus_per_node), executor.slurm.array_parallelism
    if executor.gpus_per_run == 0:
        return 1, executor.cpu_workers  # the local executor on CPU: cpu_workers runs at once
    return executor.gpus_per_run, None


def sampling_precision() -> str:
    """The precision a grid's evaluation samples in: SampleConfig's default (evaluate_point sets no other)."""
    from dit.sample import SampleConfig

    return next(f.default for f in dataclasses.fields(SampleConfig) if f.name == "precision")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rates:
    """The rows of one device of a throughput table, and the file they came from."""

    device: str
    rows: tuple[dict, ...]
    source: str

    def required(self, kind: str, precision: str, compile: bool) -> list[dict]:
        """Rows of `kind` at `precision`, those with the same `compile` setting when there are any; one needed."""
        rows = [r for r in self.rows if r["kind"] == kind and r.get("precision") == precision]
        rows = [r for r in rows if r.get("compile") == compile] or rows
        if not rows:
            raise ValueError(f"{self.source} has no {kind} row at {precision} for {self.device}; {MEASURE_HINT}")
        return rows

    def single(self, kind: str, key: str, value: str, precision: str | None = None) -> float | None:
        """images/s of the first row of `kind` whose `key` is `value` (preferring `precision`), None if none."""
        rows = [r for r in self.rows if r["kind"] == kind and r.get(key) == value]
        rows = [r for r in rows if r.get("precision") == precision] or rows
        return rows[0]["images_per_sec"] if rows else None


def device_rates(rows: list[dict], kind_of_device: str, device: str | None, source: str) -> Rates:
    """The rows of the one device of type `kind_of_device` (cuda or cpu) whose name contains `device`."""
    candidates = [
        r for r in rows if r["device_type"] == kind_of_device and (not device or device.lower() in r["device"].lower())
    ]
    names = sorted({r["device"] for r in candidates})
    if not names:
        named = f" named like {device!r}" if device else ""
        raise ValueError(
            f"{source} has no usable row for a {kind_of_device} device{named}, which this grid runs on; {MEASURE_HINT}"
        )
    if len(names) > 1:
        raise ValueError(
            f"{source} holds several {kind_of_device} devices ({'; '.join(names)}); choose one with --device"
        )
    return Rates(device=names[0], rows=tuple(r for r in candidates if r["device"] == names[0]), source=source)


# ---- one run -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class RunCost:
    """What one run costs (or has left): GPU-hours of training and evaluation on `gpus` GPUs."""

    run: str
    gpus: int
    train: Rate  # training images/s of one GPU
    sample: Rate  # sampling forward passes/s of one GPU
    train_gpu_hours: float
    eval_gpu_hours: float

    @property
    def gpu_hours(self) -> float:
        return self.train_gpu_hours + self.eval_gpu_hours

    @property
    def hours(self) -> float:
        """Wall time of the run on its GPUs."""
        return self.gpu_hours / self.gpus


def eval_rates(run: RunSpec, rates: Rates) -> tuple[float | None, float | None]:
    """Images/s of one GPU decoding the run's samples (None in pixel space or when the table lacks it) and
    extracting their features (None when the table lacks it)."""
    codec = run.data.codec
    decode = rates.single("decode", "codec", codec, sampling_precision()) if codec != "identity" else None
    return decode, rates.single("features", "features", run.eval.features)


def eval_point_gpu_seconds(run: RunSpec, rates: Rates, passes: float, step: int) -> float:
    """GPU-seconds of the run's evaluation point `step`: for every setting the runner evaluates there, its
    samples' forward passes at `passes` per second, their decoding and their features."""
    settings = point_settings(run, step) + posthoc_settings(run, step)
    (num_samples,) = {s.num_samples for s in settings}  # the settings of a run share one sample count
    decode, features = eval_rates(run, rates)
    per_sample = sum(s.sampling_steps * guidance_passes(s.cfg_scale) / passes for s in settings)
    per_sample += len(settings) * ((1 / decode if decode else 0.0) + (1 / features if features else 0.0))
    return num_samples * per_sample


def eval_gpu_seconds(run: RunSpec, rates: Rates, passes: float, points: list[int]) -> float:
    """GPU-seconds of the run's evaluation `points`: each set of points with the same settings priced once."""
    alike = {}
    for point in points:
        alike.setdefault(tuple(point_settings(run, point) + posthoc_settings(run, point)), []).append(point)
    return sum(len(group) * eval_point_gpu_seconds(run, rates, passes, group[0]) for group in alike.values())


def table_rates(run: RunSpec, rates: Rates) -> tuple[Rate, Rate]:
    """The run's training images/s and sampling forward passes/s of one GPU, read or fitted from the table."""
    from scaling.flops import gflops

    gpus, _ = executor_layout(run.executor)
    g = gflops(run.dit_config())
    per_gpu_batch = max(1, run.train.batch_size // gpus)
    train_rows = rates.required("train", run.train.precision, run.train.compile)
    train, line = rate_of(
        model_points(train_rows, per_gpu_batch), lambda r: r["images_per_sec"], run.model, g, per_gpu_batch
    )
    sample_rows = rates.required("sample", sampling_precision(), False)
    sample, _ = rate_of(
        model_points(sample_rows, run.eval.batch_size),
        passes_per_sec,
        run.model,
        g,
        run.eval.batch_size,
        fallback_slope=line.slope,
    )
    return train, sample


def run_cost(run: RunSpec, rates: Rates, state: "RunState | None" = None) -> RunCost:
    """The cost of a run, or with its `state` what is left of it: the steps not trained (at the run's own
    seconds per step once it has some, `RunState.seconds_left`) and the points not evaluated."""
    gpus, _ = executor_layout(run.executor)
    train, sample = table_rates(run, rates)
    steps, points = run.train.steps, run.eval_points()
    if state is not None:
        steps, points = state.steps - state.step, points[state.evaluated:]  # the runner scores points in order
    train_seconds = steps * run.train.batch_size / train.value
    if state is not None and state.seconds_per_step:
        train = Rate(run.train.batch_size / (state.seconds_per_step * gpus), "this run's own")
        train_seconds = state.seconds_left() * gpus
    eval_seconds = eval_gpu_seconds(run, rates, sample.value, points)
    return RunCost(
        run=run.name,
        gpus=gpus,
        train=train,
        sample=sample,
        train_gpu_hours=train_seconds / SECONDS_PER_HOUR,
        eval_gpu_hours=eval_seconds / SECONDS_PER_HOUR,
    )


# ---- the grid ------------------------------------------------------------------------------------
def parallel_groups(gpus_per_run: int, total_gpus: int, runs_at_once: int | None) -> int:
    """How many runs execute together: groups of `gpus_per_run` among `total_gpus`, at most `runs_at_once`."""
    if total_gpus < 1:
        raise ValueError(f"the number of GPUs must be at least 1, not {total_gpus}")
    if gpus_per_run > total_gpus:
        raise ValueError(
            f"the grid's runs take {gpus_per_run} GPUs each, more than the {total_gpus} given; "
            f"give --gpus {gpus_per_run} or more"
        )
    return min(total_gpus // gpus_per_run, runs_at_once or total_gpus)


def schedule(
    hours: list[float], gpus_per_run: int, total_gpus: int, runs_at_once: int | None = None
) -> list[tuple[float, float]]:
    """(start, end) hours of each run: in order, each starts on the first group of `gpus_per_run` GPUs
    to come free (greedy list scheduling), with at most `runs_at_once` runs together."""
    free_at = [0.0] * parallel_groups(gpus_per_run, total_gpus, runs_at_once)
    spans = []
    for h in hours:
        start = heapq.heappop(free_at)
        spans.append((start, start + h))
        heapq.heappush(free_at, start + h)
    return spans


@dataclasses.dataclass(frozen=True, kw_only=True)
class GridCost:
    """Every run's cost and its place in the schedule on `total_gpus` GPUs (or CPUs: `unit`)."""

    runs: tuple[RunCost, ...]
    spans: tuple[tuple[float, float], ...]
    total_gpus: int
    gpus_per_run: int
    runs_at_once: int
    unit: str = "GPU"

    @property
    def train_gpu_hours(self) -> float:
        return sum(r.train_gpu_hours for r in self.runs)

    @property
    def eval_gpu_hours(self) -> float:
        return sum(r.eval_gpu_hours for r in self.runs)

    @property
    def gpu_hours(self) -> float:
        return self.train_gpu_hours + self.eval_gpu_hours

    @property
    def eval_share(self) -> float:
        return self.eval_gpu_hours / self.gpu_hours if self.gpu_hours else 0.0

    @property
    def wall_hours(self) -> float:
        return max((end for _, end in self.spans), default=0.0)


def grid_cost(runs: list[RunSpec], rates: Rates, total_gpus: int | None = None, states=None) -> GridCost:
    """The cost of a grid's runs on `total_gpus` GPUs (default: as many as its executor runs at once);
    with `states` (scaling.run_state.RunState, one per run) what is left of it: the steps and points not done."""
    gpus_per_run, at_once = executor_layout(runs[0].executor)
    total_gpus = total_gpus or gpus_per_run * (at_once or 1)
    pairs = zip(runs, states, strict=True) if states is not None else ((run, None) for run in runs)
    left = [(run, s) for run, s in pairs if s is None or s.state != "done"]
    costs = [run_cost(run, rates, s) for run, s in left]
    costed = [run for run, _ in left]
    order = start_order(costed)
    started = schedule([costs[i].hours for i in order], gpus_per_run, total_gpus, at_once)
    spans = [span for _, span in sorted(zip(order, started, strict=True))]
    return GridCost(
        runs=tuple(costs),
        spans=tuple(spans),
        total_gpus=total_gpus,
        gpus_per_run=gpus_per_run,
        runs_at_once=parallel_groups(gpus_per_run, total_gpus, at_once),
        unit="GPU" if device_type(runs[0].executor) == "cuda" else "CPU",
    )


def grid_rates(executor: ExecutorSpec, path=None, device: str | None = None) -> Rates:
    """The rows of a throughput file (the shipped table by default) for the device a grid runs on."""
    from scaling.throughput import SHIPPED_TABLE, load_table

    source = str(path) if path else f"the shipped table (scaling/data/{SHIPPED_TABLE.name})"
    return device_rates(load_table(path), device_type(executor), device, source)


# ---- what the estimate rests on, in words ---------------------------------------------------------
def _measured(points: list[dict]) -> str:
    return ", ".join(f"{p['model']} ({p['gflops']:.2f} Gflops, batch {p['batch_size']})" for p in points)


def basis_lines(run: RunSpec, rates: Rates) -> list[str]:
    """How the rates of a grid's runs (`run`: any of them, they share recipe and evaluation) are read and fitted."""
    gpus, _ = executor_layout(run.executor)
    batch = max(1, run.train.batch_size // gpus)
    train_rows = rates.required("train", run.train.precision, run.train.compile)
    train_points = model_points(train_rows, batch)
    train_line = fit_rate_line([(p["gflops"], p["images_per_sec"]) for p in train_points])
    sample_points = model_points(rates.required("sample", sampling_precision(), False), run.eval.batch_size)
    sample_line = fit_rate_line([(p["gflops"], passes_per_sec(p)) for p in sample_points], train_line.slope)
    versions = sorted(
        {f"torch {r['torch']}" for r in rates.rows if r.get("torch")} | {r["date"] for r in rates.rows if r.get("date")}
    )
    compiled = ", compiled" if train_rows[0].get("compile") else ""
    return [
        f"throughput: {rates.device} ({', '.join(versions)}), from {rates.source}",
        f"training: images/s of one GPU at the run's per-GPU batch {run.train.batch_size} / {gpus} = {batch}; "
        f"{run.train.precision}{compiled} rows measured for {_measured(train_points)}; other models on "
        f"log(images/s) = {train_line.intercept:.2f} {train_line.slope:+.3f} log(Gflops)"
        + (" (one model: images/s x Gflops held constant)" if len(train_points) == 1 else ""),
        f"sampling: forward passes/s of one GPU (images x steps x passes; a guided step is 2 passes, cfg 1 is 1); "
        f"{sampling_precision()} rows measured for {_measured(sample_points)}; "
        f"other models on the slope {sample_line.slope:+.3f}"
        + (" of the training line" if len(sample_points) == 1 else " fitted on them"),
        evaluation_line(run, rates),
    ]


def settings_text(settings: list[EvalSetting]) -> str:
    """Settings in words: sampler, steps, guidance and its forward passes per step."""
    return "; ".join(
        f"{s.sampler} {s.sampling_steps} steps cfg {s.cfg_scale:g} ({guidance_passes(s.cfg_scale)} "
        f"pass{'es' if guidance_passes(s.cfg_scale) > 1 else ''})"
        for s in settings
    )


def evaluation_line(run: RunSpec, rates: Rates) -> str:
    """What one run's evaluation consists of (the settings of `point_settings`), and what of it the table can price."""
    points = run.eval_points()
    every, last = point_settings(run, points[0]), point_settings(run, points[-1])
    extra = [s for s in last if s not in every]
    decode, features = eval_rates(run, rates)
    codec, e = run.data.codec, run.eval
    extras = [
        f"{codec} decoding at {decode:,.0f} img/s"
        if decode
        else (f"{codec} decoding: not in the table, not counted" if codec != "identity" else ""),
        f"{e.features} features at {features:,.0f} img/s"
        if features
        else f"{e.features} features: not in the table, not counted",
    ]
    at_last = f", at the last point also [{settings_text(extra)}]" if extra else ""
    return (
        f"evaluation per run: {len(points)} points x {e.num_samples:,} samples x [{settings_text(every)}]{at_last}"
        f" + {' + '.join(x for x in extras if x)}"
    )


# ---- whether a run can train on a GPU at all ----------------------------------------------------------
LARGEST_GPU_GIB = 141  # an H200: no GPU holds more
STATE_BYTES_PER_PARAM = 20  # fp32 weights, gradients, AdamW's two moments and the EMA
ACTIVATION_BYTES = 34  # kept for backward, per token x width x block of each row (Korthikanti et al. 2022, 16-bit)


def step_memory_gib(run: RunSpec, params: int, rows: int) -> float:
    """A lower bound of the GPU memory of one training step of `rows` rows per GPU (flash attention's)."""
    config = run.dit_config()
    activations = ACTIVATION_BYTES * config.num_tokens * config.hidden_size * config.depth
    return (STATE_BYTES_PER_PARAM * params + rows * activations) / 2**30


def check_fits_a_gpu(run: RunSpec, params: int):
    """ValueError when a GPU run's step (each GPU's rows in one pass, or micro-batches of
    train.micro_batch_size) needs more memory than the largest GPU holds, naming the fix."""
    gpus = run.executor.gpus_per_run
    if gpus == 0:
        return
    micro = run.train_config().micro_batch_size
    rows = micro or math.ceil(run.train.batch_size / gpus)
    need = step_memory_gib(run, params, rows)
    if need <= LARGEST_GPU_GIB:
        return
    fix = (f"choose a smaller model or resolution (one row alone needs {step_memory_gib(run, params, 1):,.0f} GiB)"
           if step_memory_gib(run, params, 1) > LARGEST_GPU_GIB else
           "set train.micro_batch_size (gradient accumulation, the same result) or more executor.gpus_per_run")
    raise ValueError(f"{run.label}: a training step of batch {rows:,} per GPU needs at least {need:,.0f} GiB, more "
                     f"than the {LARGEST_GPU_GIB} GiB of the largest GPU; {fix}")
