"""Throughput benchmarks: training images/s, peak memory and sampling images/s of one model,
for the fast path and a reference path with the official release's settings, in the same run.

Weights are random (speed does not depend on them) and batches synthetic, so only the model,
optimiser, EMA and sampler are timed; `benchmarks/` holds the comparisons that need more.
"""
import time

import torch

from dit.config import TrainConfig
from dit.diffusion import create_diffusion
from dit.distributed import compute_device, pick_device
from dit.ema import PowerEMA
from dit.models import create_dit
from dit.precision import autocast_for, set_tf32
from dit.sample import compile_forward
from dit.samplers import guided_model_fn, sample_ddpm
from dit.train import StepInputs, TrainingParts, make_optimizer, train_step
from study.registry import Registry

# The official release trains in fp32 (TF32 matmuls), timm's explicit attention, a Python loop for
# the EMA and no compilation; the fast path changes each of those.
PATHS = Registry("benchmark path", {
    "reference": dict(precision="fp32", attention="math", fused_ema=False, fused_optimizer=False, compile=False),
    "fast": dict(precision="bf16", attention="sdpa", fused_ema=True, fused_optimizer=True, compile=True),
})


def path_options(name: str, device: torch.device) -> dict:
    options = dict(PATHS.get(name))
    if device.type != "cuda":  # bf16 matmuls and compilation pay off on GPUs; on CPUs they slow down
        options.update(precision="fp32", compile=False)
    return options


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(model_name, options, input_size, in_channels, num_classes, device):
    torch.manual_seed(0)
    model = create_dit(
        model_name,
        input_size=input_size,
        in_channels=in_channels,
        num_classes=num_classes,
        attention=options["attention"],
    )
    return model.to(device)


def training_setup(model_name: str, *, path: str, batch_size: int, input_size: int = 32, in_channels: int = 4,
                   num_classes: int = 1000, checkpoint_blocks: int = 0, micro_batch_size: int | None = None,
                   device: str = "auto", ema_sigma_rels: tuple[float, ...] = ()):
    """(step, device): step() runs one full training step (forward, backward, AdamW, EMA and the power-function
    EMA profiles of `ema_sigma_rels`) of a random-weight model on a fixed synthetic batch, with the path's
    settings."""
    dev = compute_device(device)  # on a CPU: keeps freed memory, as training does
    options = path_options(path, dev)
    set_tf32(dev, True)  # both paths, as the official release trains
    config = TrainConfig(
        model=model_name,
        batch_size=batch_size,
        **{k: v for k, v in options.items() if k != "attention"},
        attention=options["attention"],
        checkpoint_blocks=checkpoint_blocks,
        micro_batch_size=micro_batch_size,
    )
    model = _model(model_name, options, input_size, in_channels, num_classes, dev).train()
    model.set_checkpointing(checkpoint_blocks)
    ema = _model(model_name, options, input_size, in_channels, num_classes, dev).requires_grad_(False)
    opt = make_optimizer(model, config, dev)
    net = torch.compile(model) if options["compile"] else model
    diffusion = create_diffusion()
    gen = torch.Generator(dev).manual_seed(0)
    x = torch.randn((batch_size, in_channels, input_size, input_size), generator=gen, device=dev)
    y = torch.randint(0, num_classes, (batch_size,), generator=gen, device=dev)
    t = torch.randint(0, diffusion.num_timesteps, (batch_size,), generator=gen, device=dev)
    inputs = StepInputs(x, y, t, torch.randn_like(x), torch.zeros_like(y))
    profiles = PowerEMA(model, ema_sigma_rels) if ema_sigma_rels else None
    parts = TrainingParts(None, None, model, ema, opt, diffusion, profiles)
    return (lambda: train_step(parts, net, inputs, config)), dev


def bench_training(model_name: str, *, path: str, batch_size: int, input_size: int = 32, in_channels: int = 4,
                   num_classes: int = 1000, steps: int = 10, warmup: int = 3, checkpoint_blocks: int = 0,
                   device: str = "auto") -> dict:
    """Images/s and peak memory of full training steps (forward, backward, AdamW, EMA)."""
    step, dev = training_setup(model_name, path=path, batch_size=batch_size, input_size=input_size,
                               in_channels=in_channels, num_classes=num_classes, checkpoint_blocks=checkpoint_blocks,
                               device=device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(dev)
            start = time.perf_counter()
        step()
    _sync(dev)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return {"path": path, "train_images_per_sec": steps * batch_size / seconds, "peak_mem_gb": peak,
            "checkpoint_blocks": checkpoint_blocks}


def largest_fitting_micro_batch(batch_size: int, try_step) -> int | None:
    """The largest divisor of `batch_size`, searched downwards by halving, for which `try_step(m)` (one
    training step in micro-batches of m) runs without running out of GPU memory; None if not even 1 fits."""
    m = batch_size
    while m >= 1:
        try:
            try_step(m)
            return m
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
        m = max(d for d in range(1, m // 2 + 1) if batch_size % d == 0) if m > 1 else 0
    return None


def find_micro_batch(model_name: str, *, path: str, batch_size: int, device: str = "auto", **geometry) -> int | None:
    """The largest micro-batch with which a step of `batch_size` images fits this GPU (None: on a CPU,
    where memory is not what limits the batch)."""
    dev = pick_device(device)
    if dev.type != "cuda":
        return None

    def try_step(m: int):
        step, _ = training_setup(model_name, path=path, batch_size=batch_size, micro_batch_size=m, device=device,
                                 **geometry)
        step()
        _sync(dev)

    return largest_fitting_micro_batch(batch_size, try_step)


def bench_sampling(model_name: str, *, path: str, num_images: int, sampling_steps: int = 250, cfg_scale: float = 1.5,
                   input_size: int = 32, in_channels: int = 4, num_classes: int = 1000, compile_mode: str = "default",
                   device: str = "auto") -> dict:
    """Images/s of guided DDPM sampling (the diffusion model only; the VAE decoder is benchmarked apart).

    compile_mode "reduce-overhead" replays CUDA graphs of the compiled forward (fast path on a GPU only).
    """
    dev = compute_device(device)  # on a CPU: keeps freed memory, as training does
    options = path_options(path, dev)
    set_tf32(dev, True)  # both paths, as the official release trains
    model = _model(model_name, options, input_size, in_channels, num_classes, dev).eval()
    if options["compile"]:
        compile_mode = compile_forward(model, compile_mode, dev)
    diffusion = create_diffusion(str(sampling_steps))
    autocast = autocast_for(dev, options["precision"])
    gen = torch.Generator(dev).manual_seed(0)
    noise = torch.randn((num_images, in_channels, input_size, input_size), generator=gen, device=dev)
    labels = torch.randint(0, num_classes, (num_images,), generator=gen, device=dev)
    with autocast:  # one step first: compilation and kernel selection are not sampling time
        sample_ddpm(create_diffusion("2"), guided_model_fn(model, labels, cfg_scale), noise, generator=gen)
        _sync(dev)
        start = time.perf_counter()
        sample_ddpm(diffusion, guided_model_fn(model, labels, cfg_scale), noise, generator=gen)
        _sync(dev)
    seconds = time.perf_counter() - start
    mode = compile_mode if options["compile"] else None
    return {"path": path, "sample_images_per_sec": num_images / seconds, "sample_compile_mode": mode}
