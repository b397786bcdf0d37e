"""Gaussian diffusion with learned variance, as DiT trains and samples it.

Ho et al. 2020 (DDPM) with the improvements of Nichol & Dhariwal 2021 (IDDPM): epsilon
prediction, a learned interpolation between log beta_t and log beta~_t for the reverse variance,
and the hybrid objective L_simple + L_vlb. DiT uses T = 1000 and the linear schedule 1e-4 .. 2e-2.

Schedule arithmetic is done in float64 with numpy; only per-step coefficients reach the tensors,
in float32, so training under bf16 autocast does not change the schedule.
"""
import math

import numpy as np
import torch

from study.registry import Registry

NUM_TRAIN_TIMESTEPS = 1000
LINEAR_BETA_START = 1e-4  # for T = 1000; scaled by 1000 / T otherwise
LINEAR_BETA_END = 2e-2
COSINE_OFFSET = 0.008  # s in alpha_bar(t) = cos((t/T + s) / (1 + s) * pi/2)^2 (IDDPM Eq. 17)
COSINE_MAX_BETA = 0.999
def linear_betas(num_steps: int) -> np.ndarray:
    """DDPM's linear schedule (Ho et al. Sec. 4), rescaled so that any T spans the same noise levels."""
    scale = 1000 / num_steps
    return np.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int) -> np.ndarray:
    """IDDPM's cosine schedule (Eq. 17), each beta clipped at COSINE_MAX_BETA."""

    def alpha_bar(u):
        return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    steps = range(num_steps)
    betas = [min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), COSINE_MAX_BETA) for i in steps]
    return np.array(betas, dtype=np.float64)


NOISE_SCHEDULES = Registry("noise schedule", {"linear": linear_betas, "cosine": cosine_betas})


def make_betas(schedule: str, num_steps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """The beta_t of a named schedule, float64, shape (num_steps,)."""
    return NOISE_SCHEDULES.get(schedule)(num_steps)


def space_timesteps(num_steps: int, spec: str | int | list[int]) -> list[int]:
    """Which of the original timesteps a respaced process keeps (IDDPM Sec. 4, ADM's convention).

    spec: "" (all), an int or "250" (evenly strided, endpoints kept), "ddim50" (stride num_steps // 50,
    as DDIM), or comma-separated counts "10,15,20" for equal sections of the schedule.
    """
    if spec in ("", None):
        return list(range(num_steps))
    if isinstance(spec, str) and spec.startswith("ddim"):
        count = int(spec[len("ddim"):])
        for stride in range(1, num_steps):  # the smallest integer stride that gives exactly `count`
            if len(range(0, num_steps, stride)) == count:
                return list(range(0, num_steps, stride))
        raise ValueError(f"cannot take exactly {count} steps with an integer stride out of {num_steps}")
    counts = [int(x) for x in str(spec).split(",")] if not isinstance(spec, list) else spec
    size_per, extra = divmod(num_steps, len(counts))
    kept, start = [], 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if not 0 < count <= size:
            raise ValueError(f"cannot take {count} steps out of a section of {size} (respacing {spec!r})")
        stride = (size - 1) / (count - 1) if count > 1 else 1
        position = 0.0  # accumulated as ADM does, so rounding picks the same steps
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


def extract(arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """arr[t] as a float32 tensor on t's device, shaped (N, 1, ..., 1) to broadcast over ndim dims."""
    out = torch.from_numpy(arr).to(device=t.device)[t].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) of data in [-1, 1] quantised to 256 bins under N(means, exp(log_scales)^2) (DDPM Eq. 13).

    The edge bins take the whole tails. The exact normal CDF is used (ADM uses a tanh approximation).
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = torch.special.ndtr(inv_std * (centered + 1.0 / 255.0))
    cdf_min = torch.special.ndtr(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusion:
    """A (possibly respaced) diffusion process and its losses; samplers live in `dit.samplers`.

    betas: the process's own betas (after respacing), float64. timestep_map[i] is the original
    timestep that step i of this process stands for; the model is always called with those.
    """

    def __init__(self, betas: np.ndarray, *, learn_sigma: bool = True, timestep_map: list[int] | None = None):
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        assert betas.ndim == 1 and (betas > 0).all() and (betas <= 1).all()
        self.num_timesteps = len(betas)
        self.learn_sigma = learn_sigma
        self.timestep_map = np.arange(len(betas)) if timestep_map is None else np.asarray(timestep_map)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta~_t)  (DDPM Eq. 6-7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0, so its log is clipped to beta~_1
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ---- forward process -------------------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
        noise = torch.randn_like(x_start) if noise is None else noise
        n = x_start.ndim
        return (
            extract(self.sqrt_alphas_cumprod, t, n) * x_start
            + extract(self.sqrt_one_minus_alphas_cumprod, t, n) * noise
        )

    def q_posterior_mean_variance(self, x_start, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        n = x_t.ndim
        mean = extract(self.posterior_mean_coef1, t, n) * x_start + extract(self.posterior_mean_coef2, t, n) * x_t
        return mean, extract(self.posterior_variance, t, n), extract(self.posterior_log_variance_clipped, t, n)

    def predict_xstart_from_eps(self, x_t, t, eps):
        n = x_t.ndim
        return (
            extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t - extract(self.sqrt_recipm1_alphas_cumprod, t, n) * eps
        )

    def predict_eps_from_xstart(self, x_t, t, pred_xstart):
        n = x_t.ndim
        return (extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t - pred_xstart) / extract(
            self.sqrt_recipm1_alphas_cumprod, t, n
        )

    # ---- reverse process -------------------------------------------------------------------
    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Map this process's step indices to the original timesteps the model was trained on."""
        return torch.from_numpy(self.timestep_map).to(t.device)[t]

    def p_mean_variance(self, model_fn, x, t, clip_denoised: bool = False, model_output=None):
        """p(x_{t-1} | x_t): mean, variance, log-variance and the predicted x_0.

        model_fn(x, timesteps) -> (N, C or 2C, H, W); with learned sigma the second C channels v
        set log var = (v+1)/2 log beta_t + (1-(v+1)/2) log beta~_t (IDDPM Eq. 15).
        """
        if model_output is None:
            model_output = model_fn(x, self.model_timesteps(t))
        model_output = model_output.float()
        n, C = x.ndim, x.shape[1]
        min_log = extract(self.posterior_log_variance_clipped, t, n)
        if self.learn_sigma:
            assert model_output.shape[1] == 2 * C, f"expected {2 * C} output channels, got {model_output.shape[1]}"
            eps, var_values = model_output.split(C, dim=1)
            max_log = extract(np.log(self.betas), t, n)
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
        else:
            # fixed large variance beta_t, with beta~_1 at t = 0 (DDPM's choice for sampling)
            eps = model_output
            log_variance = extract(np.log(np.append(self.posterior_variance[1], self.betas[1:])), t, n)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_xstart": pred_xstart,
            "eps": eps,
        }

    # ---- losses ------------------------------------------------------------------------------
    def vb_terms_bpd(self, model_output, x_start, x_t, t) -> torch.Tensor:
        """Per-sample L_vlb term in bits per dimension: KL(q || p) for t > 0, the decoder NLL at t = 0."""
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(None, x_t, t, model_output=model_output)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        decoder_nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def training_losses(self, model, x_start, t, model_kwargs=None, noise=None) -> dict[str, torch.Tensor]:
        """The hybrid objective of IDDPM: loss = mse + vb, each of shape (N,).

        mse = ||eps - eps_theta(x_t, t)||^2 averaged per sample (L_simple). vb is L_vlb with a
        stop-gradient on the predicted mean, so it trains only the variance (IDDPM Sec. 3.1).
        """
        model_kwargs = model_kwargs or {}
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        model_output = model(x_t, self.model_timesteps(t), **model_kwargs).float()
        C = x_t.shape[1]
        terms = {}
        if self.learn_sigma:
            eps, var_values = model_output.split(C, dim=1)
            frozen = torch.cat([eps.detach(), var_values], dim=1)
            terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t)
        else:
            eps = model_output
            terms["vb"] = torch.zeros(len(x_t), device=x_t.device)
        terms["mse"] = mean_flat((noise - eps) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"]
        return terms


def create_diffusion(
    timestep_respacing: str | int | list[int] = "",
    noise_schedule: str = "linear",
    learn_sigma: bool = True,
    diffusion_steps: int = NUM_TRAIN_TIMESTEPS,
) -> GaussianDiffusion:
    """The paper's diffusion (T = 1000, linear schedule, learned sigma), optionally respaced.

    create_diffusion("") trains; create_diffusion("250") samples with 250 of the 1000 steps, as DiT.
    """
    base_betas = make_betas(noise_schedule, diffusion_steps)
    kept = space_timesteps(diffusion_steps, timestep_respacing)
    if len(kept) < 2:
        raise ValueError(
            f"a diffusion process needs at least 2 steps (got {len(kept)} from respacing {timestep_respacing!r})"
        )
    alphas_cumprod = np.cumprod(1.0 - base_betas)
    new_betas, last = [], 1.0
    for i in kept:  # keep abar at the kept steps: beta'_i = 1 - abar_{k_i} / abar_{k_{i-1}}
        new_betas.append(1.0 - alphas_cumprod[i] / last)
        last = alphas_cumprod[i]
    return GaussianDiffusion(np.array(new_betas), learn_sigma=learn_sigma, timestep_map=kept)
