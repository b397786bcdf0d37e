"""Training DiT: one readable loop, from one CPU process to many GPUs under torchrun (DDP).

Re-running the same command resumes exactly from the run directory's latest checkpoint. Every
random draw is a function of (seed, step): timesteps, noise and label dropout come from a
generator seeded per step over the *global* batch (each rank takes its rows), and data
augmentation from per-item seeds (`dit.data.StepBatches`), so a resumed run, or one on another
number of ranks, sees the same batches and the same randomness as an uninterrupted one.
"""
import copy
import dataclasses
import json
import math
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from dit import distributed
from dit.checkpoint import load_training_state, model_config_dict, save_checkpoint
from dit.config import TrainConfig
from dit.data import POSTERIOR, build_dataset, make_loader, step_seed
from dit.diffusion import create_diffusion
from dit.errors import UserError
from dit.interop import initialise_from
from dit.io import atomic_write_text
from dit.loggers import Loggers, open_loggers
from dit.models import DiT, create_dit
from dit.precision import autocast_for
from dit.progress import progress_bar
from dit.sample import save_sample_grid
from dit.schedules import get_lr_schedule
from study.layout import RunLayout

# Options that may differ when a run is resumed: they change speed or bookkeeping, not the result.
RESUMABLE_CHANGES = {
    "steps", "device", "num_workers", "compile", "log_every", "ckpt_every", "keep_last", "keep_every",
    "sample_every", "fused_optimizer", "fused_ema", "grad_checkpointing", "tf32", "loggers",
    "checkpoint_blocks",
}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; no checkpoint was written from that state."""


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
    )


def make_optimizer(model: DiT, config: TrainConfig, device) -> torch.optim.Optimizer:
    fused = config.fused_optimizer and device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None)


@torch.no_grad()
def update_ema(ema: DiT, model: DiT, decay: float, fused: bool = True):
    """ema <- decay * ema + (1 - decay) * model over all parameters (the frozen position embedding too)."""
    ema_params, params = list(ema.parameters()), list(model.parameters())
    if fused:
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    else:  # the official release's per-parameter loop, kept as the benchmark's reference path
        for e, p in zip(ema_params, params):
            e.mul_(decay).add_(p.data, alpha=1 - decay)


# ---- run directory -----------------------------------------------------------------------------
def check_same_run(run_dir, config: TrainConfig):
    """Refuse to resume a run directory that was started with a different recipe."""
    path = RunLayout(run_dir).config
    if not path.exists():
        return
    stored = json.loads(path.read_text()).get("train", {})
    new = config.to_dict()
    changed = [k for k in new if k not in RESUMABLE_CHANGES and k in stored and stored[k] != new[k]]
    if changed:
        k = changed[0]
        raise ValueError(f"{run_dir} holds a run with {k}={stored[k]!r}, not {new[k]!r}; use another run directory or the same options")


def trim_log(run_dir, step: int):
    """Keep only whole log lines up to `step`: the steps after the checkpoint are logged again."""
    path = RunLayout(run_dir).train_log
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # a line cut by a kill
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def check_can_start(config: TrainConfig, run: RunLayout, dist: distributed.DistInfo):
    """Refuse a batch the processes cannot share or a run directory of another recipe; set TF32 on GPUs."""
    if config.batch_size % dist.world_size:
        raise ValueError(f"batch size {config.batch_size} does not divide by the {dist.world_size} processes; choose a multiple of {dist.world_size}")
    check_same_run(run.root, config)
    if dist.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32


def start_run_dir(run: RunLayout, config: TrainConfig, parts: "TrainingParts", step: int, dist) -> dict:
    """Rank 0 writes config.json and drops log lines after `step`; returns the run config (also in checkpoints)."""
    run_config = {"train": config.to_dict(), "model": model_config_dict(parts.model.config),
                  "class_names": list(parts.dataset.class_names)}
    if dist.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, json.dumps(run_config, indent=2) + "\n")
        trim_log(run.root, step)
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


def build_training(config: TrainConfig, device) -> TrainingParts:
    dataset = build_dataset(config.data, resolution=config.resolution, train=True)
    codec = build_codec(config, device)
    model = build_model(config, dataset, codec).to(device)
    model.set_checkpointing(config.checkpointed_blocks(model.config.depth))
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = make_optimizer(model, config, device)
    diffusion = create_diffusion("", config.noise_schedule, config.learn_sigma, config.diffusion_steps)
    return TrainingParts(dataset, codec, model, ema, opt, diffusion)


@dataclasses.dataclass
class StepInputs:
    """One rank's rows of a training step: the batch on the device and the step's random draws."""

    x: torch.Tensor  # (B, C, H, W) images or latents
    y: torch.Tensor  # (B,) class labels
    t: torch.Tensor  # (B,) timesteps
    noise: torch.Tensor  # (B, C, H, W)
    drop: torch.Tensor  # (B,) 1 where the label is replaced by the null class


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
    t, noise, drop = step_randomness(config, step, (c.in_channels, c.input_size, c.input_size), parts.diffusion.num_timesteps, dist)
    return StepInputs(x, y, t, noise, drop)


def train_step(parts: TrainingParts, net, inputs: StepInputs, config: TrainConfig) -> torch.Tensor:
    """One optimiser step of `net` (parts.model, or its DDP or compiled wrapper) on the hybrid loss and one
    EMA update; returns [loss, mse, vb, grad norm]."""
    with autocast_for(inputs.x.device, config.precision):
        terms = parts.diffusion.training_losses(net, inputs.x, inputs.t, dict(y=inputs.y, force_drop_ids=inputs.drop), inputs.noise)
    loss = terms["loss"].mean()
    parts.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), config.max_grad_norm or math.inf)
    parts.opt.step()
    update_ema(parts.ema, parts.model, config.ema_decay, config.fused_ema)
    return torch.stack([loss, terms["mse"].mean(), terms["vb"].mean(), grad_norm]).detach()


# ---- the loop ----------------------------------------------------------------------------------
def train(config: TrainConfig, run_dir, *, until: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) the run in run_dir to config.steps, or stop early at step `until` with a
    checkpoint there (the schedule still spans config.steps). Returns the last log record."""
    dist = distributed.setup(config.device)
    run = RunLayout(run_dir)
    check_can_start(config, run, dist)
    torch.manual_seed(config.seed)
    parts = build_training(config, dist.device)
    step, wall = load_training_state(run.root, parts.model, parts.ema, parts.opt, dist.rank)
    if step == 0 and config.init:  # a fresh run that starts from given weights (`--init`)
        initialise_from(parts.model, parts.ema, config.init, config.model)
    run_config = start_run_dir(run, config, parts, step, dist)
    loggers = open_loggers(config.loggers, run, run_config, step) if dist.is_main else Loggers({})
    net = wrap_for_training(parts.model, config, dist)
    batches = iter(make_loader(parts.dataset, config, dist, step))
    lr_at = get_lr_schedule(config.lr_schedule)

    window, record = LogWindow(dist.device, wall), {}
    stop = min(until or config.steps, config.steps)
    bar = progress_bar(total=stop, initial=step, desc="training", enabled=progress and dist.is_main)
    while step < stop:
        inputs = step_inputs(next(batches), parts, config, step, dist)
        set_lr(parts.opt, lr_at(step, config.lr, config.steps, config.warmup_steps))
        stats = train_step(parts, net, inputs, config)
        step += 1
        window.add(stats, step)
        bar.update(1)
        if is_due(step, config.log_every, stop) or is_due(step, config.ckpt_every, stop):
            record = log_window(run, window, step, parts.opt, config, dist, bar)
            loggers.log_train(record)
        if is_due(step, config.ckpt_every, stop):
            save_checkpoint(run.root, parts.model, parts.ema, parts.opt, run_config, step, window.wall_seconds, dist)
        if dist.is_main and is_due(step, config.sample_every or config.ckpt_every, stop):
            loggers.log_image(step, save_sample_grid(parts.ema, config, parts.codec, run.root, step, dist.device))
            window.restart_clock()  # previews do not count as training time
    bar.close()
    loggers.close()
    distributed.barrier()
    return record


def wrap_for_training(model: DiT, config: TrainConfig, dist: distributed.DistInfo):
    """The module the loop calls: the model under DDP for several processes, compiled if asked; in train mode."""
    device = dist.device
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.world_size > 1 else model
    if config.compile:
        net = torch.compile(net)
    model.train()
    return net


def set_lr(opt: torch.optim.Optimizer, lr: float):
    for group in opt.param_groups:
        group["lr"] = lr


def is_due(step: int, every: int, stop: int) -> bool:
    """Whether a periodic action (log, checkpoint, preview) falls on `step`: every `every` steps and at the end."""
    return step % every == 0 or step == stop


class LogWindow:
    """The steps since the last log line: their summed [loss, mse, vb, grad norm], the first step whose loss
    was not finite (-1: none) and their start time; `wall_seconds` adds up the run's training time."""

    def __init__(self, device, wall_seconds: float):
        self.device, self.wall_seconds = device, wall_seconds
        self.sums = torch.zeros(4, device=device)
        self.first_bad = torch.tensor(-1, device=device)
        self.steps, self.start = 0, time.perf_counter()

    def add(self, stats: torch.Tensor, step: int):
        self.sums += stats
        bad_now = (self.first_bad < 0) & ~torch.isfinite(stats[0])
        self.first_bad = torch.where(bad_now, torch.tensor(step, device=self.device), self.first_bad)
        self.steps += 1

    def restart_clock(self):
        self.start = time.perf_counter()

    def reset(self):
        self.sums.zero_()
        self.steps = 0
        self.restart_clock()


def log_window(run: RunLayout, window: LogWindow, step: int, opt, config: TrainConfig, dist, bar) -> dict:
    """Stop if a loss was not finite; else append the window's means to train-log.jsonl (rank 0) and reset it."""
    check_finite(window.first_bad)
    elapsed = time.perf_counter() - window.start
    window.wall_seconds += elapsed
    record = log_record(step, window.sums / window.steps, opt, config, window.steps, elapsed, window.wall_seconds, dist.device)
    if dist.is_main:
        with open(run.train_log, "a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_sec']:.0f}")
    window.reset()
    return record


def check_finite(first_bad: torch.Tensor):
    """Stop on the first step (on any rank) whose loss was not finite, before anything is written."""
    bad_step = int(distributed.all_reduce_max(first_bad).item())
    if bad_step >= 0:
        raise TrainingDiverged(f"the loss became NaN or infinite at step {bad_step}; lower the learning rate or use fp32 (no checkpoint was written from that state)")


def log_record(step, means, opt, config, steps_done, elapsed, wall, device) -> dict:
    loss, mse, vb, grad_norm = distributed.all_reduce_mean(means).tolist()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {
        "step": step, "loss": loss, "mse": mse, "vb": vb, "grad_norm": grad_norm,
        "lr": opt.param_groups[0]["lr"], "images_per_sec": steps_done * config.batch_size / max(elapsed, 1e-9),
        "peak_mem_gb": peak, "wall_seconds": wall,
    }
