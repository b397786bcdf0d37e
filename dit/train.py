"""Training DiT: one readable loop, from one CPU process to many GPUs under torchrun (DDP).

Re-running the same command resumes exactly from the run directory's latest checkpoint. Every
random draw is a function of (seed, step): timesteps, noise and label dropout come from a
generator seeded per step over the *global* batch (each rank takes its rows), and data
augmentation from per-item seeds, so a resumed run, or one on another number of ranks, sees the
same batches and the same randomness as an uninterrupted one.
"""
import copy
import dataclasses
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from dit import distributed
from dit.checkpoint import checkpoint_path, latest_checkpoint, model_config_dict, prune_checkpoints
from dit.config import TrainConfig
from dit.data import build_dataset
from dit.diffusion import create_diffusion
from dit.images import image_grid, save_gif, to_uint8
from dit.interop import initialise_from
from dit.io import atomic_path, atomic_torch_save, atomic_write_text
from dit.models import DiT, create_dit
from dit.progress import progress_bar
from dit.samplers import guided_model_fn, sample_ddpm
from dit.schedules import get_lr_schedule

LOG_NAME, CONFIG_NAME, SAMPLES_DIR = "train-log.jsonl", "config.json", "samples"
# Options that may differ when a run is resumed: they change speed or bookkeeping, not the result.
RESUMABLE_CHANGES = {
    "steps", "device", "num_workers", "compile", "log_every", "ckpt_every", "keep_last", "keep_every",
    "sample_every", "fused_optimizer", "fused_ema", "grad_checkpointing", "tf32",
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; no checkpoint was written from that state."""


# ---- data --------------------------------------------------------------------------------------
def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A distinct 63-bit seed for each (seed, step, stream)."""
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63)


class StepBatches(torch.utils.data.Sampler):
    """The items of every training step, from `start_step` on: this rank's share of the global batch.

    Epoch e is a permutation seeded by (seed, e); step s takes the s-th slice of B items of it. Each
    item comes with its own seed for augmentation. Yields lists of (index, item_seed).
    """

    def __init__(self, num_items: int, global_batch: int, rank: int, world_size: int, seed: int, start_step: int):
        if num_items < global_batch:
            raise ValueError(f"the data set has {num_items} items, fewer than the batch size {global_batch}; lower --batch-size")
        self.num_items, self.global_batch, self.seed, self.start_step = num_items, global_batch, seed, start_step
        self.local = global_batch // world_size
        self.offset = rank * self.local

    def __iter__(self):
        steps_per_epoch = self.num_items // self.global_batch
        step, epoch, perm = self.start_step, None, None
        while True:
            if step // steps_per_epoch != epoch:
                epoch = step // steps_per_epoch
                perm = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(step_seed(self.seed, epoch, 1)))
            first = (step % steps_per_epoch) * self.global_batch + self.offset
            positions = range(first, first + self.local)
            yield [(int(perm[p]), step_seed(self.seed, step, 2 + p)) for p in positions]
            step += 1


class SeededItems(Dataset):
    """Wraps a data set so item (index, seed) is drawn under its own seed (flips, latent samples)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def make_loader(dataset, config: TrainConfig, dist: distributed.DistInfo, start_step: int):
    sampler = StepBatches(len(dataset), config.batch_size, dist.rank, dist.world_size, config.seed, start_step)
    workers = 0 if getattr(dataset, "in_memory", False) else config.num_workers
    return DataLoader(SeededItems(dataset), batch_sampler=sampler, num_workers=workers,
                      pin_memory=dist.device.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=4 if workers else None)


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
def check_same_run(run_dir: Path, config: TrainConfig):
    """Refuse to resume a run directory that was started with a different recipe."""
    path = run_dir / CONFIG_NAME
    if not path.exists():
        return
    stored = json.loads(path.read_text()).get("train", {})
    new = config.to_dict()
    changed = [k for k in new if k not in RESUMABLE_CHANGES and k in stored and stored[k] != new[k]]
    if changed:
        k = changed[0]
        raise ValueError(f"{run_dir} holds a run with {k}={stored[k]!r}, not {new[k]!r}; use another run directory or the same options")


def trim_log(run_dir: Path, step: int):
    """Keep only whole log lines up to `step`: the steps after the checkpoint are logged again."""
    path = run_dir / LOG_NAME
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


def rng_state() -> dict:
    """This process's RNG states as plain Python values (they travel between ranks and into checkpoints)."""
    name, keys, *rest = np.random.get_state()
    state = {"torch": bytes(torch.get_rng_state().numpy()), "python": random.getstate(), "numpy": [name, keys.tolist(), *rest]}
    if torch.cuda.is_available():
        state["cuda"] = [bytes(s.numpy()) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict):
    as_tensor = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8)
    torch.set_rng_state(as_tensor(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([as_tensor(s) for s in state["cuda"]])


# ---- previews ----------------------------------------------------------------------------------
@torch.no_grad()
def save_sample_grid(ema: DiT, config: TrainConfig, codec, run_dir: Path, step: int, device):
    """EMA samples from fixed noise and labels, so grids of a run compare across steps; plus the GIF."""
    c = ema.config
    gen = torch.Generator(device).manual_seed(config.seed)
    noise = torch.randn((config.sample_images, c.in_channels, c.input_size, c.input_size), generator=gen, device=device)
    labels = torch.arange(config.sample_images, device=device) % c.num_classes
    diffusion = create_diffusion(str(config.sample_steps), config.noise_schedule, config.learn_sigma, config.diffusion_steps)
    x = sample_ddpm(diffusion, guided_model_fn(ema, labels, config.sample_cfg_scale), noise, generator=gen)
    images = to_uint8(codec.decode(x) if codec is not None else x)
    folder = run_dir / SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    columns = min(config.sample_images, c.num_classes) if c.num_classes <= 16 else None
    grid = image_grid(images, columns=columns)
    with atomic_path(folder / f"step_{step:07d}.png") as tmp:  # a kill mid-write must not leave half a PNG
        grid.save(tmp, format="PNG")
    frames = []
    for path in sorted(folder.glob("step_*.png")):
        with Image.open(path) as frame:
            frames.append(frame.convert("RGB"))
    save_gif(frames, folder / "progress.gif")


# ---- the loop ----------------------------------------------------------------------------------
def step_randomness(config: TrainConfig, step: int, shape, num_timesteps: int, dist: distributed.DistInfo):
    """Timesteps, noise and label-dropout mask of this rank's rows of the global batch at `step`."""
    gen = torch.Generator(dist.device).manual_seed(step_seed(config.seed, step))
    B = config.batch_size
    t = torch.randint(0, num_timesteps, (B,), generator=gen, device=dist.device)
    noise = torch.randn((B, *shape), generator=gen, device=dist.device)
    drop = (torch.rand(B, generator=gen, device=dist.device) < config.class_dropout_prob).long()
    rows = slice(dist.rank * B // dist.world_size, (dist.rank + 1) * B // dist.world_size)
    return t[rows], noise[rows], drop[rows]


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
    model.grad_checkpointing = config.grad_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = make_optimizer(model, config, device)
    diffusion = create_diffusion("", config.noise_schedule, config.learn_sigma, config.diffusion_steps)
    return TrainingParts(dataset, codec, model, ema, opt, diffusion)


def step_inputs(batch, parts: TrainingParts, config: TrainConfig, step: int, dist: distributed.DistInfo):
    """(x, y, t, noise, drop) of this rank at `step`: the batch on the device (through the VAE under
    codec sd-vae, with a per-step posterior draw) and the step's random draws."""
    x, y = (v.to(dist.device, non_blocking=True) for v in batch)
    if parts.codec is not None:
        gen = torch.Generator(dist.device).manual_seed(step_seed(config.seed, step, 3 + dist.rank))
        x = parts.codec.sample_latent(*parts.codec.encode_moments(x), generator=gen)
    c = parts.model.config
    t, noise, drop = step_randomness(config, step, (c.in_channels, c.input_size, c.input_size), parts.diffusion.num_timesteps, dist)
    return x, y, t, noise, drop


def train_step(net, model, ema, opt, diffusion, config: TrainConfig, autocast, x, y, t, noise, drop) -> torch.Tensor:
    """One optimiser step on the hybrid loss and one EMA update; returns [loss, mse, vb, grad norm]."""
    with autocast:
        terms = diffusion.training_losses(net, x, t, dict(y=y, force_drop_ids=drop), noise)
    loss = terms["loss"].mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm or math.inf)
    opt.step()
    update_ema(ema, model, config.ema_decay, config.fused_ema)
    return torch.stack([loss, terms["mse"].mean(), terms["vb"].mean(), grad_norm]).detach()


def train(config: TrainConfig, run_dir, *, until: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) the run in run_dir to config.steps, or stop early at step `until` with a
    checkpoint there (the schedule still spans config.steps). Returns the last log record."""
    dist = distributed.setup(config.device)
    run_dir = Path(run_dir)
    if config.batch_size % dist.world_size:
        raise ValueError(f"batch size {config.batch_size} does not divide by the {dist.world_size} processes; choose a multiple of {dist.world_size}")
    check_same_run(run_dir, config)
    device = dist.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32

    torch.manual_seed(config.seed)
    parts = build_training(config, device)
    dataset, codec, model, ema, opt, diffusion = parts.dataset, parts.codec, parts.model, parts.ema, parts.opt, parts.diffusion
    lr_at = get_lr_schedule(config.lr_schedule)

    step, wall = 0, 0.0
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        step, wall = ckpt["step"], ckpt.get("wall_seconds", 0.0)
        set_rng_state(ckpt["rng"][min(dist.rank, len(ckpt["rng"]) - 1)])
    elif config.init:
        initialise_from(model, ema, config.init, config.model)
    run_config = {"train": config.to_dict(), "model": model_config_dict(model.config), "class_names": list(dataset.class_names)}
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_NAME, json.dumps(run_config, indent=2) + "\n")
        trim_log(run_dir, step)
    distributed.barrier()

    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if dist.world_size > 1 else model
    if config.compile:
        net = torch.compile(net)
    model.train()
    batches = iter(make_loader(dataset, config, dist, step))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    sums = torch.zeros(4, device=device)  # loss, mse, vb, grad norm since the last log
    first_bad = torch.tensor(-1, device=device)
    logged_steps, t0, record = 0, time.perf_counter(), {}
    stop = min(until or config.steps, config.steps)
    bar = progress_bar(total=stop, initial=step, desc="training", enabled=progress and dist.is_main)
    while step < stop:
        x, y, t, noise, drop = step_inputs(next(batches), parts, config, step, dist)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config.lr, config.steps, config.warmup_steps)

        stats = train_step(net, model, ema, opt, diffusion, config, autocast, x, y, t, noise, drop)
        step += 1

        sums += stats
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(stats[0]), torch.tensor(step, device=device), first_bad)
        logged_steps += 1
        bar.update(1)
        is_ckpt = step % config.ckpt_every == 0 or step == stop
        if step % config.log_every == 0 or is_ckpt:
            check_finite(first_bad)
            elapsed = time.perf_counter() - t0
            wall += elapsed
            record = log_record(step, sums / logged_steps, opt, config, logged_steps, elapsed, wall, device)
            if dist.is_main:
                with open(run_dir / LOG_NAME, "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_sec']:.0f}")
            sums.zero_()
            logged_steps, t0 = 0, time.perf_counter()
        if is_ckpt:
            save_checkpoint(run_dir, model, ema, opt, run_config, step, wall, dist)
        sample_every = config.sample_every or config.ckpt_every
        if dist.is_main and (step % sample_every == 0 or step == stop):
            save_sample_grid(ema, config, codec, run_dir, step, device)
            t0 = time.perf_counter()  # previews do not count as training time
    bar.close()
    distributed.barrier()
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


def save_checkpoint(run_dir: Path, model, ema, opt, run_config: dict, step: int, wall: float, dist):
    """Rank 0 writes model, EMA, optimiser, the run's config, step and every rank's RNG state, atomically."""
    train_config = run_config["train"]
    rngs = distributed.all_gather_objects(rng_state())
    if dist.is_main:
        state = {
            "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
            "config": run_config,
            "step": step, "wall_seconds": wall, "rng": rngs,
            "data": {"images_seen": step * train_config["batch_size"]},
        }
        atomic_torch_save(state, checkpoint_path(run_dir, step))
        prune_checkpoints(run_dir, train_config["keep_last"], train_config["keep_every"])
    distributed.barrier()
