"""Sampling a trained DiT into the ADM evaluator's `.npz` layout, resumably and over all local GPUs.

Samples are made in shards of `batch_size`; sample i draws its label, initial noise and step noise
from its own generator seeded by (seed, i) (EDM2's habit), so the result does not depend on the batch
size, on how many processes made it or on how often the job was interrupted. Finished shards are kept
in a folder beside the output until the last one is done, then merged into one file (`arr_0`: uint8
(N, H, W, C), `arr_1`: int64 labels (N,)).
`save_sample_grid` draws the EMA previews that training writes into its run directory.
"""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dit import distributed
from dit.checkpoint import is_project_checkpoint, load_model, read_checkpoint
from dit.config import DEFAULT_VAE, PRECISIONS, TrainConfig
from dit.data import SAMPLE_SHARDS, step_seed
from dit.diffusion import create_diffusion
from dit.images import image_grid, save_gif, to_uint8
from dit.io import atomic_path
from dit.precision import autocast_for
from dit.progress import progress_bar
from dit.samplers import PerSampleNoise, get_sampler, guided_model_fn, sample_ddpm
from study.layout import RunLayout, preview_columns, steps_in
from study.registry import Registry

# torch.compile modes for the sampler's model calls; "reduce-overhead" replays CUDA graphs (fixed shapes, GPU only).
COMPILE_MODES = Registry("compile mode", ("default", "reduce-overhead", "max-autotune"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """What to sample. The paper's FID-50K setting: num=50_000, steps=250, sampler="ddpm"."""

    num: int
    steps: int = 250
    sampler: str = "ddpm"
    cfg_scale: float = 1.0
    eta: float = 0.0  # DDIM only
    batch_size: int = 64
    seed: int = 0
    labels: tuple[int, ...] | None = None  # repeated cyclically; None: uniform over the classes
    use_ema: bool = True
    guidance_channels: int | None = None  # 3 reproduces the official release's guidance
    vae: str | None = None  # decoder for latent models (default: the one the run trained with)
    precision: str = "fp32"
    compile: bool = False  # torch.compile the model's forward (pays off on GPUs for long jobs)
    compile_mode: str = "default"  # with compile: "reduce-overhead" captures CUDA graphs (a CPU falls back to default)

    def __post_init__(self):
        get_sampler(self.sampler)
        for name in ("num", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not self.cfg_scale >= 1.0:
            raise ValueError(f"cfg scale {self.cfg_scale} is below 1; choose 1 (no guidance) or more "
                             f"(the paper's best: 1.5)")
        if not 0 <= self.eta <= 1:
            raise ValueError(f"eta {self.eta} is outside [0, 1] (0: deterministic DDIM, 1: DDPM-like noise)")
        if self.guidance_channels is not None and self.guidance_channels < 1:
            raise ValueError(f"guidance_channels must be at least 1 (got {self.guidance_channels}); "
                             f"leave it out to guide all channels")
        PRECISIONS.check(self.precision)
        COMPILE_MODES.check(self.compile_mode, what="compile_mode")


def run_metadata(ckpt: dict) -> dict:
    """The run config stored with a project checkpoint ({} for an official plain state dict)."""
    return ckpt["config"] if is_project_checkpoint(ckpt) else {}


def resolve_labels(labels: list[str], class_names: list[str], num_classes: int) -> tuple[int, ...]:
    """Labels given as indices ('3 7') or as the data set's class names ('female male')."""
    out = []
    for label in labels:
        if label.isdigit() and int(label) < num_classes:
            out.append(int(label))
        elif label in class_names:
            out.append(class_names.index(label))
        else:
            named = f"; class names: {', '.join(class_names[:20])}" if class_names else ""
            raise ValueError(f"label {label!r} is neither a class index below {num_classes} nor a class name{named}")
    return tuple(out)


def decoder_vae(meta: dict, vae: str | None) -> str | None:
    """The VAE that turns the model's outputs into images, or None for a pixel-space model.

    `vae` (given by the user) wins; an official checkpoint (no run config) is an SD-VAE latent model;
    a run decodes with the VAE it trained through, or the one its latent cache was encoded with.
    """
    if vae or not meta:
        return vae or DEFAULT_VAE
    train = meta["train"]
    if train["codec"] == "sd-vae":
        return train["vae"]
    from dit.latent_cache import is_latent_cache, read_cache_meta

    return read_cache_meta(train["data"])["vae"] if is_latent_cache(train["data"]) else None


def build_decoder(meta: dict, model_channels: int, vae: str | None, device):
    """A function latents -> images in [-1, 1]: the identity for pixel models, else the VAE's decoder."""
    source = decoder_vae(meta, vae)
    if source is None:
        return lambda x: x
    from dit.latents import get_codec

    codec = get_codec("sd-vae", vae=source, device=device)
    if codec.latent_channels != model_channels:
        raise ValueError(f"the VAE has {codec.latent_channels} latent channels but the model takes {model_channels}")
    return codec.decode


def shard_batch(config: SampleConfig, shard: int, num_classes: int, shape, device):
    """Labels, initial noise and the per-sample generators of one shard: sample i's from (seed, i)."""
    start = shard * config.batch_size
    indices = range(start, min(start + config.batch_size, config.num))
    gen = PerSampleNoise([step_seed(config.seed, i, SAMPLE_SHARDS) for i in indices], device)
    if config.labels:
        labels = torch.tensor([config.labels[i % len(config.labels)] for i in indices], device=device)
    else:
        labels = gen.randint(num_classes)
    noise = gen.randn((len(indices), *shape))
    return labels, noise, gen


def compile_forward(model, mode: str, device) -> str:
    """Compile the model's forward in place (forward_with_cfg calls it) and return the mode used.

    "reduce-overhead" records CUDA graphs, replayed at each step: a sampler's calls have fixed shapes and
    launch overhead is a large share of a step's time. Graphs are CUDA only, so a CPU compiles in "default" mode.
    """
    COMPILE_MODES.check(mode, what="compile_mode")
    if mode == "reduce-overhead" and torch.device(device).type != "cuda":
        print("compile_mode reduce-overhead: CUDA graphs need a GPU; compiling in default mode")
        mode = "default"
    compiled = torch.compile(model.forward, mode=mode)
    if mode != "reduce-overhead":
        model.forward = compiled
        return mode

    def forward(*args, **kwargs):
        torch.compiler.cudagraph_mark_step_begin()  # each call is a new step: the last replay's outputs are used up
        return compiled(*args, **kwargs)

    model.forward = forward
    return mode


def generate_samples(ckpt_path, out_npz, config: SampleConfig, *, device: str = "auto", progress: bool = True,
                     model_overrides: dict | None = None) -> Path:
    """Sample `config.num` images from a checkpoint into `out_npz` (ADM layout). Resumable.

    model_overrides: e.g. {"attention": "math"}; for official checkpoints also the expected
    model name as {"name": "DiT-XL/2"}, checked against the weights.
    """
    dist = distributed.setup(device)
    out_npz = Path(out_npz)
    model, meta = load_for_sampling(ckpt_path, config, model_overrides, dist.device)
    c = model.config
    decode = build_decoder(meta, c.in_channels, config.vae, dist.device)
    schedule = meta.get("train", {}).get("noise_schedule", "linear")
    diffusion = create_diffusion(str(config.steps), schedule, c.learn_sigma)
    sampler = get_sampler(config.sampler)
    options = {"eta": config.eta} if config.sampler == "ddim" else {}

    shard_dir = out_npz.parent / f".{out_npz.name}.shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    _check_shards_match(shard_dir, config, ckpt_path)
    num_shards = -(-config.num // config.batch_size)
    todo = [i for i in range(dist.rank, num_shards, dist.world_size) if not (shard_dir / f"{i:06d}.npz").exists()]
    autocast = autocast_for(dist.device, config.precision)
    bar = progress_bar(total=num_shards, initial=num_shards - len(todo) * dist.world_size, desc="sampling",
                       enabled=progress and dist.is_main, unit="batch")
    shape = (c.in_channels, c.input_size, c.input_size)
    for shard in todo:
        labels, noise, gen = shard_batch(config, shard, c.num_classes, shape, dist.device)
        with torch.no_grad(), autocast:
            model_fn = guided_model_fn(model, labels, config.cfg_scale, config.guidance_channels)
            latents = sampler(diffusion, model_fn, noise, generator=gen, **options)
            images = to_uint8(decode(latents.float()))
        with atomic_path(shard_dir / f"{shard:06d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, arr_0=images, arr_1=labels.cpu().numpy().astype(np.int64))
        bar.update(dist.world_size)
    bar.close()
    distributed.barrier()
    if dist.is_main:
        merge_shards(shard_dir, num_shards, out_npz)
    distributed.barrier()
    return out_npz


def load_for_sampling(ckpt_path, config: SampleConfig, model_overrides: dict | None, device) -> tuple:
    """(model on `device`, compiled if asked; the run's metadata) of a checkpoint, checked against an expected name."""
    overrides = dict(model_overrides or {})
    expected = overrides.pop("name", None)
    ckpt = read_checkpoint(ckpt_path, model_name=expected)
    model = load_model(ckpt, use_ema=config.use_ema, **overrides).to(device)
    if expected and expected != model.config.name:
        raise ValueError(f"{ckpt_path} holds a {model.config.name} model, not {expected}; give the matching --model")
    if (config.guidance_channels or 0) > model.config.in_channels:
        raise ValueError(f"guidance_channels {config.guidance_channels} is more than the model's "
                         f"{model.config.in_channels} input channels; give at most {model.config.in_channels}")
    if config.compile:
        compile_forward(model, config.compile_mode, device)
    return model, run_metadata(ckpt)


def _check_shards_match(shard_dir: Path, config: SampleConfig, ckpt_path):
    """Shards left by an interrupted job are reused only for the same checkpoint and settings."""
    source = str(Path(ckpt_path).resolve()) if not isinstance(ckpt_path, dict) else "in-memory"
    key = {"ckpt": source, "noise": "per-sample", **dataclasses.asdict(config)}  # shards of per-shard noise differ
    key["labels"] = list(key["labels"]) if key["labels"] else None
    path = shard_dir / "job.json"
    if path.exists() and json.loads(path.read_text()) != key:
        for old in shard_dir.glob("*.npz"):
            old.unlink()
    path.write_text(json.dumps(key))


def merge_shards(shard_dir: Path, num_shards: int, out_npz: Path):
    images, labels = [], []
    for i in range(num_shards):
        with np.load(shard_dir / f"{i:06d}.npz") as shard:
            images.append(shard["arr_0"])
            labels.append(shard["arr_1"])
    with atomic_path(out_npz) as tmp, open(tmp, "wb") as f:
        np.savez(f, arr_0=np.concatenate(images), arr_1=np.concatenate(labels))
    shutil.rmtree(shard_dir)


def save_npz_grid(npz_path, png_path, max_images: int = 64):
    """A PNG grid of the first images of a samples .npz."""
    with np.load(npz_path) as data:
        images = data["arr_0"][:max_images]
    with atomic_path(png_path) as tmp:
        image_grid(images).save(tmp, format="PNG")


# ---- previews during training ---------------------------------------------------------------------
@torch.no_grad()
def save_sample_grid(ema, config: TrainConfig, codec, run_dir, step: int, device) -> Image.Image:
    """EMA samples from fixed noise and labels, so grids of a run compare across steps; plus the GIF.
    Returns the grid (a PIL image) for the loggers."""
    c = ema.config
    gen = torch.Generator(device).manual_seed(config.seed)
    noise = torch.randn((config.sample_images, c.in_channels, c.input_size, c.input_size), generator=gen, device=device)
    labels = torch.arange(config.sample_images, device=device) % c.num_classes
    diffusion = create_diffusion(str(config.sample_steps), config.noise_schedule, config.learn_sigma,
                                 config.diffusion_steps)
    x = sample_ddpm(diffusion, guided_model_fn(ema, labels, config.sample_cfg_scale), noise, generator=gen)
    images = to_uint8(codec.decode(x) if codec is not None else x)
    run = RunLayout(run_dir)
    run.samples_dir.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, columns=preview_columns(c.num_classes, config.sample_images))
    with atomic_path(run.preview(step)) as tmp:  # a kill mid-write must not leave half a PNG
        grid.save(tmp, format="PNG")
    frames = []
    for _, path in steps_in(run.samples_dir, ".png"):
        with Image.open(path) as frame:
            frames.append(frame.convert("RGB"))
    save_gif(frames, run.progress_gif)
    return grid
