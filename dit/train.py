"""Training DiT: one readable loop, from one CPU process to many GPUs under torchrun (DDP).

Re-running the same command resumes exactly from the run directory's latest checkpoint. Every
random draw is a function of (seed, step): timesteps, noise and label dropout come from a
generator seeded per step over the *global* batch (each rank takes its rows), and data
augmentation from per-item seeds (`dit.data.StepBatches`), so a resumed run, or one on another
number of ranks, sees the same batches and the same randomness as an uninterrupted one.

Stopping: SIGTERM (SLURM's time limit and preemption), SIGUSR1, SIGUSR2 (submitit's preemption signal)
and SIGINT finish the current step, write a checkpoint there and raise TrainingInterrupted (the CLI
exits with 128 + the signal's number: 143 for SIGTERM, 138 SIGUSR1, 140 SIGUSR2, 130 SIGINT); a second
signal stops at once. Several processes agree on a stop every STOP_POLL_STEPS steps (one process: every
step). A loss or gradient norm that is not finite stops the run with TrainingDiverged before anything
is written from that state: the loop keeps the first bad step on the device and checks it (one sync)
before every log line, checkpoint and preview, so the fast path adds no GPU-to-CPU sync per step.
"""
import contextlib
import copy
import dataclasses
import json
import math
import signal
import sys
import threading
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from dit import distributed
from dit.checkpoint import list_checkpoints, load_training_state, model_config_dict, save_checkpoint
from dit.config import TrainConfig, recipe_difference, run_identity
from dit.data import POSTERIOR, build_dataset, make_loader, step_seed
from dit.diffusion import create_diffusion
from dit.ema import PowerEMA
from dit.errors import UserError
from dit.init_from import initialise_from
from dit.io import atomic_write_text, read_json, remove_stale_temporaries
from dit.lock import directory_lock
from dit.loggers import Loggers, open_loggers
from dit.models import DiT, create_dit
from dit.parametrization import param_groups
from dit.precision import autocast_for, set_tf32
from dit.progress import progress_bar
from dit.sample import save_sample_grid
from dit.schedules import get_lr_schedule
from study.layout import RunLayout

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
STOP_POLL_STEPS = 10  # several processes compare their stop flags this often (one all-reduce and sync)
NONFINITE_CAUSES = {1: "the loss", 2: "the gradient norm", 3: "the loss and the gradient norm"}


class TrainingDiverged(UserError):
    """The loss or the gradient norm became NaN or infinite; no checkpoint was written from that state."""

    def __init__(self, message: str, *, step: int | None = None, cause: str | None = None):
        super().__init__(message)
        self.step, self.cause = step, cause


class TrainingInterrupted(UserError):
    """A stop signal arrived: the run wrote a checkpoint at `step` and stopped; re-running resumes it."""

    def __init__(self, signum: int, step: int, run_dir):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step} with a checkpoint in {run_dir}; re-run the same command to resume"
        )
        self.signum, self.step = signum, step
        self.exit_status = 128 + signum


# ---- model, codec and optimiser ---------------------------------------------------------------
def model_input_geometry(config: TrainConfig, dataset, codec) -> tuple[int, int]:
    """(input_size, in_channels) of the model: the image's, or the latent grid's under a VAE."""
    if codec is None:
        return dataset.image_size, dataset.in_channels
    channels, size, _ = codec.latent_shape(dataset.in_channels, dataset.image_size)
    return size, channels


def build_codec(config: TrainConfig, device):
    """The VAE for on-the-fly encoding (codec "sd-vae"), or None for pixels and latent caches."""
    if config.codec == "identity":
        return None
    from dit.latents import get_codec

    return get_codec(config.codec, vae=config.vae, device=device)


def build_model(config: TrainConfig, dataset, codec) -> DiT:
    input_size, in_channels = model_input_geometry(config, dataset, codec)
    return create_dit(
        config.model, input_size=input_size, in_channels=in_channels, num_classes=dataset.num_classes,
        block=config.block, learn_sigma=config.learn_sigma, class_dropout_prob=config.class_dropout_prob,
        attention=config.attention, depth=config.depth, hidden_size=config.hidden_size, num_heads=config.num_heads,
        parametrization=config.parametrization, base_width=model_base_width(config),
    )


def model_base_width(config: TrainConfig) -> int | None:
    """μP's base width of the model (None: its own width); SP has none."""
    return config.base_width if config.parametrization == "mup" else None


def make_optimizer(model: DiT, config: TrainConfig, device) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: one group in SP, μP's per-width groups (dit.parametrization) in μP."""
    fused = config.fused_optimizer and device.type == "cuda"
    c = model.config
    if c.parametrization == "mup":
        params = param_groups(model, config.lr, config.weight_decay, c.hidden_size, c.base_width)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


@torch.no_grad()
def update_ema(ema: DiT, model: DiT, decay: float, fused: bool = True):
    """ema <- decay * ema + (1 - decay) * model over all parameters (the frozen position embedding too)."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if fused:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    else:  # the official release's per-parameter loop, kept as the benchmark's reference path
        for e, p in zip(ema_params, params, strict=True):
            e.mul_(decay).add_(p.data, alpha=1 - decay)


# ---- run directory -----------------------------------------------------------------------------
def check_same_run(run_dir, config: TrainConfig):
    """Refuse to resume a run directory that was started with a different recipe."""
    path = RunLayout(run_dir).config
    if not path.exists():
        return
    stored = read_json(path, what="run config", fix="delete it to resume with the options given").get("train", {})
    changed = recipe_difference(stored, json.loads(json.dumps(config.to_dict())))  # tuples as the stored lists
    if changed:
        raise ValueError(f"{run_dir} holds a run with {changed}; use another run directory or the same options")


def trim_log(run_dir, step: int):
    """Keep only whole log lines up to `step`: the steps after the checkpoint are logged again."""
    path = RunLayout(run_dir).train_log
    if not path.exists():
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"train log {path} is damaged (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not "
                         f"text); cut it before that offset or move it away, then re-run (the steps after the "
                         f"checkpoint are logged again)") from None
    kept = []
    for line in text.splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # a line cut by a kill
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def check_can_start(config: TrainConfig, run: RunLayout, dist: distributed.DistInfo):
    """Refuse a batch the processes cannot share or a run directory of another recipe."""
    if config.batch_size % dist.world_size:
        raise ValueError(
            f"batch size {config.batch_size} does not divide by the {dist.world_size} processes; choose a multiple of "
            f"{dist.world_size}"
        )
    rows = config.batch_size // dist.world_size
    if config.micro_batch_size and rows % config.micro_batch_size:
        raise ValueError(f"micro batch size {config.micro_batch_size} does not divide the {rows} rows of each of the "
                         f"{dist.world_size} processes; choose a divisor of {rows}")
    check_same_run(run.root, config)


def make_run_config(config: TrainConfig, parts: "TrainingParts") -> dict:
    """What config.json and every checkpoint record of the run: its options, model, classes and identity."""
    train, model = config.to_dict(), model_config_dict(parts.model.config)
    return {"train": train, "model": model, "class_names": list(parts.dataset.class_names),
            "run_id": run_identity(train, model)}


def start_run_dir(run: RunLayout, run_config: dict, step: int, dist) -> dict:
    """Rank 0 drops log lines after `step` and writes config.json; returns the run config (also in checkpoints)."""
    if dist.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        trim_log(run.root, step)
        atomic_write_text(run.config, json.dumps(run_config, indent=2) + "\n")
    distributed.barrier()
    return run_config


# ---- one step ------------------------------------------------------------------------------------
@dataclasses.dataclass
class TrainingParts:
    """What a training run is made of, built the same way for training, the lr range test and benchmarks."""

    dataset: Dataset
    codec: object
    model: DiT
    ema: DiT
    opt: torch.optim.Optimizer
    diffusion: object
    profiles: PowerEMA | None = None  # the power-function EMA profiles (config.ema_sigma_rels), if any


def build_training(config: TrainConfig, device) -> TrainingParts:
    dataset = build_dataset(config.data, resolution=config.resolution, train=True)
    codec = build_codec(config, device)
    model = build_model(config, dataset, codec).to(device)
    model.set_checkpointing(config.checkpointed_blocks(model.config.depth))
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = make_optimizer(model, config, device)
    diffusion = create_diffusion("", config.noise_schedule, config.learn_sigma, config.diffusion_steps)
    profiles = PowerEMA(model, config.ema_sigma_rels) if config.ema_sigma_rels else None
    return TrainingParts(dataset, codec, model, ema, opt, diffusion, profiles)


@dataclasses.dataclass
class StepInputs:
    """One rank's rows of a training step: the batch on the device and the step's random draws."""

    x: torch.Tensor  # (B, C, H, W) images or latents
    y: torch.Tensor  # (B,) class labels
    t: torch.Tensor  # (B,) timesteps
    noise: torch.Tensor  # (B, C, H, W)
    drop: torch.Tensor  # (B,) 1 where the label is replaced by the null class

    def split(self, rows: int) -> list["StepInputs"]:
        """Consecutive chunks of `rows` rows (gradient accumulation); the draws stay those of the whole batch."""
        fields = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return [StepInputs(*(v[i : i + rows] for v in fields)) for i in range(0, len(self.x), rows)]


def step_randomness(config: TrainConfig, step: int, shape, num_timesteps: int, dist: distributed.DistInfo):
    """Timesteps, noise and label-dropout mask of this rank's rows of the global batch at `step`."""
    gen = torch.Generator(dist.device).manual_seed(step_seed(config.seed, step))
    B = config.batch_size
    t = torch.randint(0, num_timesteps, (B,), generator=gen, device=dist.device)
    noise = torch.randn((B, *shape), generator=gen, device=dist.device)
    drop = (torch.rand(B, generator=gen, device=dist.device) < config.class_dropout_prob).long()
    rows = slice(dist.rank * B // dist.world_size, (dist.rank + 1) * B // dist.world_size)
    return t[rows], noise[rows], drop[rows]


def step_inputs(batch, parts: TrainingParts, config: TrainConfig, step: int, dist: distributed.DistInfo) -> StepInputs:
    """This rank's inputs at `step`: the batch on the device (through the VAE under codec sd-vae, with a
    per-step posterior draw) and the step's random draws."""
    x, y = (v.to(dist.device, non_blocking=True) for v in batch)
    if parts.codec is not None:
        gen = torch.Generator(dist.device).manual_seed(step_seed(config.seed, step, POSTERIOR + dist.rank))
        x = parts.codec.sample_latent(*parts.codec.encode_moments(x), generator=gen)
    c = parts.model.config
    t, noise, drop = step_randomness(
        config, step, (c.in_channels, c.input_size, c.input_size), parts.diffusion.num_timesteps, dist
    )
    return StepInputs(x, y, t, noise, drop)


def train_step(parts: TrainingParts, net, inputs: StepInputs, config: TrainConfig) -> torch.Tensor:
    """One optimiser step of `net` (parts.model, or its DDP or compiled wrapper) on the hybrid loss and one
    EMA update (and one of each power-function profile); returns [loss, mse, vb, grad norm]. With
    micro_batch_size the rows go through in chunks whose gradients add up (each chunk's mean loss weighted by
    its share of the rows): the step is the same."""
    parts.opt.zero_grad(set_to_none=True)
    rows = len(inputs.x)
    chunks = inputs.split(config.micro_batch_size or rows)
    terms_sum = torch.zeros(3, device=inputs.x.device)  # [loss, mse, vb] of the whole batch
    for i, chunk in enumerate(chunks):
        with gradient_sync(net, last=i == len(chunks) - 1):
            with autocast_for(chunk.x.device, config.precision):
                terms = parts.diffusion.training_losses(
                    net, chunk.x, chunk.t, dict(y=chunk.y, force_drop_ids=chunk.drop), chunk.noise
                )
            share = len(chunk.x) / rows
            loss = terms["loss"].mean() * share
            loss.backward()
        terms_sum += torch.stack([loss, terms["mse"].mean() * share, terms["vb"].mean() * share]).detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), config.max_grad_norm or math.inf)
    parts.opt.step()
    update_ema(parts.ema, parts.model, config.ema_decay, config.fused_ema)
    if parts.profiles is not None:
        parts.profiles.update(parts.model)
    return torch.cat([terms_sum, grad_norm.detach().reshape(1).to(terms_sum)])


def gradient_sync(net, *, last: bool):
    """DDP's no_sync for every micro-batch but the last (its backward all-reduces the summed gradients)."""
    ddp = getattr(net, "_orig_mod", net)  # under torch.compile
    if isinstance(ddp, DistributedDataParallel) and not last:
        return ddp.no_sync()
    return contextlib.nullcontext()


# ---- the loop ----------------------------------------------------------------------------------
def train(
    config: TrainConfig, run_dir, *, until: int | None = None, progress: bool = True, restart: bool = False,
    lock_held: bool = False,
) -> dict:
    """Train (or resume) the run in run_dir to config.steps, or stop early at step `until` with a
    checkpoint there (the schedule still spans config.steps). Returns the last log record.

    Holds the run directory's lock throughout (`lock_held`: the caller holds it already, as a grid does for a
    run's whole life, training and evaluation). `restart` trains from step 0 when checkpoints exist
    but none reads back (otherwise that is refused)."""
    dist = distributed.setup(config.device)
    run = RunLayout(run_dir)
    check_can_start(config, run, dist)
    set_tf32(dist.device, config.tf32)
    torch.manual_seed(config.seed)
    parts = build_training(config, dist.device)  # the data, the model and --init are read before anything is written
    if config.init and (restart or not list_checkpoints(run.root)):  # a resumed run's checkpoint replaces these
        initialise_from(parts.model, parts.ema, config.init, config.model)
    with contextlib.nullcontext() if lock_held else run_lock(run, dist), StopRequest() as stop:
        return train_locked(config, parts, run, dist, stop, until=until, progress=progress, restart=restart)


def train_locked(config: TrainConfig, parts: "TrainingParts", run: RunLayout, dist, stop: "StopRequest", *, until,
                 progress, restart) -> dict:
    run_config = make_run_config(config, parts)
    step, wall, window_state = load_training_state(
        run.root, parts.model, parts.ema, parts.opt, dist.rank, restart=restart, run_config=run_config,
        profiles=parts.profiles,
    )
    start_run_dir(run, run_config, step, dist)
    loggers = open_loggers(config.loggers, run, run_config, step) if dist.is_main else Loggers({})
    redraw_missing_preview(run, parts, config, step, dist)
    net = wrap_for_training(parts.model, config, dist)
    batches = iter(make_loader(parts.dataset, config, dist, step))
    lr_at = get_lr_schedule(config.lr_schedule)

    window, record = LogWindow(dist.device, wall, window_state), {}
    stop_at = min(until or config.steps, config.steps)
    bar = progress_bar(total=stop_at, initial=step, desc="training", enabled=progress and dist.is_main)
    while step < stop_at:
        inputs = step_inputs(next(batches), parts, config, step, dist)
        set_lr(parts.opt, lr_at(step, config.lr, config.steps, config.warmup_steps))
        window.add(train_step(parts, net, inputs, config), step + 1)
        step += 1
        bar.update(1)
        ckpt_due, preview_due = (
            is_due(step, config.ckpt_every, stop_at),
            is_due(step, config.sample_every or config.ckpt_every, stop_at),
        )
        if is_due(step, config.log_every, stop_at) or ckpt_due:
            record = log_window(run, window, step, parts.opt, config, dist, bar)
            loggers.log_train(record)
            distributed.follow_thread_hint()
        signum = stop.agreed(step, dist, final=step == stop_at)
        if ckpt_due or preview_due or signum:
            check_finite(window.first_bad)
        snapshot_if_due(run, parts, config, step, window, dist)
        if ckpt_due or signum:
            save_checkpoint(run.root, parts.model, parts.ema, parts.opt, run_config, step, window.wall_seconds, dist,
                            log_window=window.state(), profiles=parts.profiles)
        if signum:
            bar.close()
            loggers.close()
            raise TrainingInterrupted(signum, step, run.root)
        if dist.is_main and preview_due:
            loggers.log_image(step, save_sample_grid(parts.ema, config, parts.codec, run.root, step, dist.device))
            window.restart_clock()  # previews do not count as training time
    bar.close()
    loggers.close()
    distributed.barrier()
    return record


def snapshot_if_due(run: RunLayout, parts: TrainingParts, config: TrainConfig, step: int, window, dist):
    """Every ema_snapshot_every steps and at the run's last step, rank 0 writes a snapshot of the power-function
    profiles (after checking that no loss or gradient went non-finite; every rank checks)."""
    if parts.profiles is None or not is_due(step, config.ema_snapshot_every, config.steps):
        return
    check_finite(window.first_bad)
    if dist.is_main:
        from dit.posthoc_ema import write_snapshot

        write_snapshot(run.root, parts.profiles, config.ema_snapshot_precision)


@contextlib.contextmanager
def run_lock(run: RunLayout, dist: distributed.DistInfo):
    """Rank 0 holds the run directory's lock and, holding it, removes the temporary files of interrupted writes."""
    if not dist.is_main:
        yield
        return
    with directory_lock(run.lock, f"run directory {run.root}", "training"):
        removed = remove_stale_temporaries(run.root, run.checkpoints_dir, run.samples_dir, run.ema_snapshots_dir)
        if removed:
            print(
                f"removed {len(removed)} temporary file(s) of interrupted writes: "
                f"{', '.join(p.name for p in removed[:3])}"
                + (", ..." if len(removed) > 3 else ""),
                file=sys.stderr,
                flush=True,
            )
        yield


def redraw_missing_preview(run: RunLayout, parts: TrainingParts, config: TrainConfig, step: int, dist):
    """Draw the preview of the resumed checkpoint when a kill cut it (it was due there and is missing)."""
    if (
        dist.is_main
        and step
        and step % (config.sample_every or config.ckpt_every) == 0
        and not run.preview(step).exists()
    ):
        save_sample_grid(parts.ema, config, parts.codec, run.root, step, dist.device)


class StopRequest:
    """Catches the stop signals while training (in the main thread): the first sets `signum` and the loop stops
    after the step with a checkpoint; a second restores the previous handlers and re-sends itself (stops at once)."""

    def __init__(self):
        self.signum, self.previous = 0, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        self.restore()

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def handle(self, signum, frame):
        if self.signum:
            self.restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        print(f"caught {signal.Signals(signum).name}: stopping after this step with a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def agreed(self, step: int, dist: distributed.DistInfo, final: bool) -> int:
        """The signal every process stops on now (0: go on); several processes compare every STOP_POLL_STEPS
        steps and at the `final` step (a signal there still stops the caller, e.g. a grid's next segment)."""
        if dist.world_size == 1:
            return self.signum
        if step % STOP_POLL_STEPS and not final:
            return 0
        return int(distributed.all_reduce_max(torch.tensor(self.signum, device=dist.device)).item())


def wrap_for_training(model: DiT, config: TrainConfig, dist: distributed.DistInfo):
    """The module the loop calls: the model under DDP for several processes, compiled if asked; in train mode."""
    device = dist.device
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if dist.world_size > 1
        else model
    )
    if config.compile:
        net = torch.compile(net)
    model.train()
    return net


def set_lr(opt: torch.optim.Optimizer, lr: float):
    """Every group's lr: the schedule's `lr` times the group's `lr_mult` (μP's per-width groups; SP has none)."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def is_due(step: int, every: int, stop: int) -> bool:
    """Whether a periodic action (log, checkpoint, preview) falls on `step`: every `every` steps and at the end."""
    return step % every == 0 or step == stop


class LogWindow:
    """The steps since the last log line: their summed [loss, mse, vb, grad norm], the first step whose loss or
    gradient norm was not finite with its cause ([-1, 0]: none; cause 1 loss, 2 gradient norm, 3 both) and
    their start time; `wall_seconds` adds up the run's training time. `state` travels in checkpoints, so a
    run stopped between log lines logs the same means when it resumes."""

    def __init__(self, device, wall_seconds: float, state: dict | None = None):
        self.device, self.wall_seconds = device, wall_seconds
        self.sums = torch.zeros(4, device=device)
        self.first_bad = torch.tensor([-1, 0], device=device)
        self.steps, self.start = 0, time.perf_counter()
        if state:
            self.sums = torch.tensor(state["sums"], device=device, dtype=self.sums.dtype)
            self.steps, self.start = state["steps"], self.start - state["elapsed"]

    def add(self, stats: torch.Tensor, step: int):
        self.sums += stats
        cause = (~torch.isfinite(stats[0])).long() + 2 * (~torch.isfinite(stats[3])).long()
        bad_now = (self.first_bad[0] < 0) & (cause > 0)
        self.first_bad = torch.where(
            bad_now, torch.stack([torch.tensor(step, device=self.device), cause]), self.first_bad
        )
        self.steps += 1

    def state(self) -> dict:
        return {"sums": self.sums.tolist(), "steps": self.steps, "elapsed": time.perf_counter() - self.start}

    def restart_clock(self):
        self.start = time.perf_counter()

    def reset(self):
        self.sums.zero_()
        self.steps = 0
        self.restart_clock()


def log_window(run: RunLayout, window: LogWindow, step: int, opt, config: TrainConfig, dist, bar) -> dict:
    """Stop if a loss or gradient was not finite; else append the window's means to train-log.jsonl (rank 0)
    and reset it."""
    check_finite(window.first_bad)
    elapsed = time.perf_counter() - window.start
    window.wall_seconds += elapsed
    record = log_record(
        step, window.sums / window.steps, opt, config, window.steps, elapsed, window.wall_seconds, dist.device
    )
    if dist.is_main:
        with open(run.train_log, "a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_sec']:.0f}")
    window.reset()
    return record


def check_finite(first_bad: torch.Tensor):
    """Stop on the first step (on any rank) whose loss or gradient norm was not finite, before anything is written."""
    bad_step, cause = (int(v) for v in distributed.all_reduce_max(first_bad).tolist())
    if bad_step >= 0:
        what = NONFINITE_CAUSES[cause]
        raise TrainingDiverged(f"{what} became NaN or infinite at step {bad_step}; lower the learning rate, clip "
                               f"gradients (--max-grad-norm) or use fp32 (no checkpoint was written from that state)",
                               step=bad_step, cause=f"{what} became NaN or infinite")


def log_record(step, means, opt, config, steps_done, elapsed, wall, device) -> dict:
    loss, mse, vb, grad_norm = distributed.all_reduce_mean(means).tolist()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {
        "step": step, "loss": loss, "mse": mse, "vb": vb, "grad_norm": grad_norm,
        "lr": opt.param_groups[0]["lr"], "images_per_sec": steps_done * config.batch_size / max(elapsed, 1e-9),
        "peak_mem_gb": peak, "wall_seconds": wall,
    }
