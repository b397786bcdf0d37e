"""Reverse-process samplers: ancestral DDPM and DDIM, with one signature and one progress callback.

Every sampler is `sampler(diffusion, model_fn, x_T, *, generator=None, progress=False, callback=None,
**options) -> x_0`, where model_fn(x, timesteps) returns the model's raw output and `callback`
receives (step index i, x_{t-1}, predicted x_0) after each step. Guidance is part of model_fn
(see `guided_model_fn`). All noise is drawn from `generator`, so a seeded one gives the same samples;
a `PerSampleNoise` draws each sample's noise from its own generator, so a sample does not depend on
which batch it was made in.
"""
from collections.abc import Callable

import torch

from dit.diffusion import GaussianDiffusion, extract
from dit.progress import progress_bar
from study.registry import Registry

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PerSampleNoise:
    """One generator per sample, seeded from (seed, sample index), as EDM2 does: sample i gets the same
    label, initial noise and step noise whatever the batch size or number of processes."""

    def __init__(self, seeds, device):
        self.generators = [torch.Generator(device).manual_seed(int(seed)) for seed in seeds]
        self.device = device

    def randn(self, shape, dtype=torch.float32) -> torch.Tensor:
        """(N, *shape[1:]) normal noise, row i from generator i."""
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=self.device, dtype=dtype)
                            for g in self.generators])

    def randint(self, high: int) -> torch.Tensor:
        """(N,) integers in [0, high), entry i from generator i."""
        return torch.cat([torch.randint(0, high, (1,), generator=g, device=self.device) for g in self.generators])


def _noise_like(x: torch.Tensor, generator: torch.Generator | PerSampleNoise | None) -> torch.Tensor:
    if isinstance(generator, PerSampleNoise):
        return generator.randn(x.shape, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _reverse_loop(diffusion: GaussianDiffusion, x_T: torch.Tensor, step, progress: bool, callback):
    """Run step(x, t) -> (x_prev, pred_xstart) from t = T-1 down to 0."""
    x = x_T
    steps = range(diffusion.num_timesteps - 1, -1, -1)
    for i in progress_bar(steps, desc="sampling", enabled=progress, leave=False):
        t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
        with torch.no_grad():
            x, pred_xstart = step(x, t)
        if callback is not None:
            callback(i, x, pred_xstart)
    return x


@torch.no_grad()
def sample_ddpm(
    diffusion, model_fn: ModelFn, x_T, *, generator=None, progress=False, callback=None, clip_denoised=False
):
    """Ancestral sampling x_{t-1} ~ p(x_{t-1} | x_t) (DDPM Alg. 2, learned variance as IDDPM)."""

    def step(x, t):
        out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised=clip_denoised)
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))  # no noise at the last step
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * _noise_like(x, generator), out[
            "pred_xstart"
        ]

    return _reverse_loop(diffusion, x_T, step, progress, callback)


@torch.no_grad()
def sample_ddim(
    diffusion, model_fn: ModelFn, x_T, *, generator=None, progress=False, callback=None, clip_denoised=False, eta=0.0
):
    """DDIM (Song et al. 2021, Eq. 12): eta = 0 is deterministic, eta = 1 matches DDPM's marginals."""

    def step(x, t):
        out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised=clip_denoised)
        eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = extract(diffusion.alphas_cumprod, t, x.ndim)
        abar_prev = extract(diffusion.alphas_cumprod_prev, t, x.ndim)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        return mean + nonzero * sigma * _noise_like(x, generator), out["pred_xstart"]

    return _reverse_loop(diffusion, x_T, step, progress, callback)


SAMPLERS = Registry("sampler", {"ddpm": sample_ddpm, "ddim": sample_ddim})
get_sampler = SAMPLERS.get


def guided_model_fn(model, y: torch.Tensor, cfg_scale: float = 1.0, guidance_channels: int | None = None) -> ModelFn:
    """model_fn for class-conditional sampling of labels y, with classifier-free guidance if cfg_scale != 1.

    With guidance the conditional and unconditional (null-class) passes share one batch of 2N.
    """
    if cfg_scale == 1.0:
        return lambda x, t: model(x, t, y)
    null = torch.full_like(y, model.config.num_classes)

    def fn(x, t):
        out = model.forward_with_cfg(
            torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), cfg_scale, guidance_channels
        )
        return out[: len(x)]  # (N, C_out, H, W): the guided half

    return fn
