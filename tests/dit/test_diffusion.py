import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from dit.diffusion import (
    create_diffusion,
    discretized_gaussian_log_likelihood,
    make_betas,
    normal_kl,
    space_timesteps,
)
from dit.samplers import get_sampler, sample_ddim, sample_ddpm


def test_linear_schedule_is_the_papers():
    betas = make_betas("linear", 1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(2e-2)
    assert np.allclose(np.diff(betas), (2e-2 - 1e-4) / 999)


def test_cosine_schedule_follows_alpha_bar():
    betas = make_betas("cosine", 1000)

    def f(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    abar = np.cumprod(1 - betas)
    assert abar[499] == pytest.approx(f(500 / 1000) / f(0), rel=1e-9)
    assert betas.max() <= 0.999


def test_q_sample_statistics():
    d = create_diffusion()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7)
    for step in (0, 300, 999):
        t = torch.full((len(x0),), step)
        xt = d.q_sample(x0, t, noise=torch.randn(x0.shape, generator=gen))
        abar = np.prod(1 - make_betas("linear")[: step + 1])
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=5e-3)
        assert xt.var().item() == pytest.approx(1 - abar, rel=2e-2, abs=1e-4)


def test_posterior_mean_and_variance_match_bayes_rule():
    d = create_diffusion()
    betas = make_betas("linear")
    abar = np.cumprod(1 - betas)
    x0, xt = torch.tensor([[0.3], [-0.8]]), torch.tensor([[1.1], [0.2]])
    for step in (1, 17, 640, 999):
        t = torch.full((2,), step)
        mean, var, _ = d.q_posterior_mean_variance(x0, xt, t)
        # x_{t-1} | x_0 ~ N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1});  x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t)
        a_prev, alpha, beta = abar[step - 1], 1 - betas[step], betas[step]
        precision = 1 / (1 - a_prev) + alpha / beta
        expect_mean = (math.sqrt(a_prev) * x0 / (1 - a_prev) + math.sqrt(alpha) * xt / beta) / precision
        torch.testing.assert_close(mean, expect_mean.float(), rtol=1e-5, atol=1e-6)
        assert var[0].item() == pytest.approx(1 / precision, rel=1e-5)


def test_normal_kl_matches_numerical_integration():
    for m1, v1, m2, v2 in [(0.0, 1.0, 0.0, 1.0), (0.5, 0.3, -0.2, 2.0), (1.0, 0.01, 1.1, 0.02)]:
        p, q = scipy.stats.norm(m1, math.sqrt(v1)), scipy.stats.norm(m2, math.sqrt(v2))
        expect, _ = scipy.integrate.quad(
            lambda x, p=p, q=q: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), m1 - 12 * math.sqrt(v1), m1 + 12 * math.sqrt(v1)
        )
        got = normal_kl(torch.tensor(m1), torch.tensor(math.log(v1)), torch.tensor(m2), torch.tensor(math.log(v2)))
        assert got.item() == pytest.approx(expect, rel=1e-4, abs=1e-6)


def test_discretized_log_likelihood_matches_scipy():
    x = torch.tensor([-1.0, -0.5, 0.0, 127 / 127.5 - 1, 1.0], dtype=torch.float64)
    means = torch.tensor([-0.9, -0.45, 0.1, 0.0, 0.95], dtype=torch.float64)
    sigma = 0.05
    got = discretized_gaussian_log_likelihood(x, means, torch.full_like(x, math.log(sigma)))
    for i, (xi, mi) in enumerate(zip(x.tolist(), means.tolist(), strict=True)):
        dist = scipy.stats.norm(mi, sigma)
        if xi < -0.999:
            expect = dist.logcdf(xi + 1 / 255)
        elif xi > 0.999:
            expect = dist.logsf(xi - 1 / 255)
        else:
            expect = math.log(dist.cdf(xi + 1 / 255) - dist.cdf(xi - 1 / 255))
        assert got[i].item() == pytest.approx(expect, rel=1e-6)


def test_respaced_betas_keep_alpha_bar_at_the_kept_steps():
    abar = np.cumprod(1 - make_betas("linear"))
    kept = space_timesteps(1000, "250")
    # 250 steps strided evenly over 0..999 with both ends kept: round(j * 999 / 249)
    assert kept == sorted({round(j * 999 / 249) for j in range(250)}) and kept[0] == 0 and kept[-1] == 999
    d = create_diffusion("250")
    assert d.num_timesteps == 250
    np.testing.assert_allclose(np.cumprod(1 - d.betas), abar[kept], rtol=1e-12)
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    with pytest.raises(ValueError, match="cannot take"):
        space_timesteps(1000, "2000")


def _optimal_gaussian_model(mu: float, s: float, diffusion):
    """The exact model for data x0 ~ N(mu, s^2) per dimension, written from Gaussian conditioning.

    eps = E[eps | x_t]; the variance output v makes the reverse variance the true Var[x_{t-1} | x_t]
    = beta~_t + coef1_t^2 Var[x0 | x_t] on the diffusion's (respaced) grid.
    """
    abar_orig = torch.from_numpy(np.cumprod(1 - make_betas("linear")))
    index_of = torch.zeros(len(abar_orig), dtype=torch.long)
    index_of[torch.from_numpy(diffusion.timestep_map)] = torch.arange(diffusion.num_timesteps)
    abar_prev = torch.from_numpy(diffusion.alphas_cumprod_prev)
    betas = torch.from_numpy(diffusion.betas)

    def model_fn(x, t):
        i = index_of[t]
        a, a_prev, beta = (v.reshape(-1, 1, 1, 1) for v in (abar_orig[t], abar_prev[i], betas[i]))
        eps = (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * s**2 + 1 - a)
        post_var = beta * (1 - a_prev) / (1 - a)
        coef1 = beta * a_prev.sqrt() / (1 - a)
        true_var = post_var + coef1**2 * s**2 * (1 - a) / (a * s**2 + 1 - a)
        lo = torch.log(
            torch.where(
                i.reshape(-1, 1, 1, 1) == 0,
                betas[1] * (1 - abar_prev[1]) / (1 - torch.from_numpy(diffusion.alphas_cumprod)[1]),
                post_var,
            )
        )
        v = 2 * (torch.log(true_var) - lo) / (torch.log(beta) - lo) - 1
        return torch.cat([eps, v.expand_as(x)], dim=1).float()

    return model_fn


@pytest.mark.parametrize("sampler,steps", [("ddpm", "250"), ("ddim", "250")])
def test_samplers_recover_a_known_gaussian(sampler, steps):
    mu, s = 0.4, 0.3
    d = create_diffusion(steps)
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn((20_000, 1, 1, 1), generator=gen)
    x0 = get_sampler(sampler)(d, _optimal_gaussian_model(mu, s, d), x_T, generator=gen)
    assert x0.mean().item() == pytest.approx(mu, abs=0.01)
    assert x0.std().item() == pytest.approx(s, rel=0.03)


def test_samplers_are_deterministic_under_a_seeded_generator():
    d = create_diffusion("20")
    model_fn = _optimal_gaussian_model(0.0, 1.0, d)
    runs = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(7)
        runs.append(sample_ddpm(d, model_fn, torch.randn((8, 1, 2, 2), generator=gen), generator=gen))
    assert torch.equal(runs[0], runs[1])
    gen = torch.Generator().manual_seed(7)
    x_T = torch.randn((8, 1, 2, 2), generator=gen)
    a = sample_ddim(d, model_fn, x_T, eta=0.0)
    b = sample_ddim(d, model_fn, x_T, eta=0.0)
    assert torch.equal(a, b) and not torch.equal(a, runs[0])


def test_training_losses_are_mse_plus_vb_and_vb_does_not_train_the_mean():
    torch.manual_seed(0)
    d = create_diffusion()
    net = torch.nn.Conv2d(1, 2, 3, padding=1)

    def model(x, t, y=None):
        return net(x)

    x0, t = torch.rand(4, 1, 6, 6) * 2 - 1, torch.tensor([0, 1, 500, 999])
    noise = torch.randn_like(x0)
    terms = d.training_losses(model, x0, t, noise=noise)
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    eps = net(d.q_sample(x0, t, noise))[:, :1]
    torch.testing.assert_close(terms["mse"], ((noise - eps) ** 2).mean(dim=(1, 2, 3)))
    # the vb term's gradient reaches only the variance channel's weights
    terms["vb"].sum().backward()
    assert net.weight.grad[0].abs().sum() == 0 and net.weight.grad[1].abs().sum() > 0


def test_losses_under_bf16_autocast_stay_close_to_fp32():
    torch.manual_seed(0)
    d = create_diffusion()
    net = torch.nn.Conv2d(1, 2, 3, padding=1)

    def model(x, t):
        return net(x)

    x0, t, noise = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([3, 10, 500, 999]), torch.randn(4, 1, 8, 8)
    ref = d.training_losses(model, x0, t, noise=noise)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = d.training_losses(model, x0, t, noise=noise)["loss"]
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=3e-2, atol=3e-2)
