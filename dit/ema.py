"""Power-function EMA profiles (EDM2: Karras et al., "Analyzing and Improving the Training Dynamics of
Diffusion Models", CVPR 2024, Sec. 3 and App. C), tracked during training beside the classic EMA.

A profile of exponent gamma averages the weights theta_1..theta_t of the first t optimiser steps with
beta_t = (1 - 1/t)^(gamma + 1): theta_hat_t = beta_t theta_hat_{t-1} + (1 - beta_t) theta_t. Unrolled, step i
weighs (i^(gamma+1) - (i-1)^(gamma+1)) / t^(gamma+1), the integral over (i-1, i] of the continuous profile

    p(tau; t, gamma) = (gamma + 1) tau^gamma / t^(gamma + 1),  0 <= tau <= t,

so the average is scale-free: its width relative to t does not change as training goes on. EDM2 names a
profile by that relative width, the standard deviation of p over t:

    sigma_rel = sqrt(gamma + 1) / ((gamma + 2) sqrt(gamma + 3)),

which falls from 1/sqrt(12) = 0.2887 at gamma = 0 (a plain mean) towards 0 as gamma grows.
"""
import math

import numpy as np
import torch

SIGMA_REL_MAX = 1 / math.sqrt(12)  # gamma = 0: the uniform average of every step
DEFAULT_SIGMA_RELS = (0.05, 0.10)  # EDM2's two stored profiles
SNAPSHOT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def sigma_rel_of(gamma: float) -> float:
    """The relative standard deviation of the power profile of exponent gamma (EDM2 Eq. 3)."""
    return math.sqrt(gamma + 1) / ((gamma + 2) * math.sqrt(gamma + 3))


def check_sigma_rel(sigma_rel: float):
    """ValueError for a length no power profile with gamma >= 0 reaches."""
    if not 0 < sigma_rel <= SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel {sigma_rel:g} is outside (0, {SIGMA_REL_MAX:.4f}], the lengths a power-function "
                         f"EMA reaches (gamma >= 0); choose one inside, e.g. 0.05 or 0.10")


def gamma_of(sigma_rel: float) -> float:
    """The exponent gamma of the profile with `sigma_rel`: the largest real root of
    gamma^3 + 7 gamma^2 + (16 - 1/s^2) gamma + (12 - 1/s^2) = 0 (sigma_rel_of squared, cleared of fractions)."""
    check_sigma_rel(sigma_rel)
    inv = 1 / sigma_rel**2
    roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
    return max(0.0, float(max(r.real for r in roots if abs(r.imag) < 1e-9)))


def power_beta(t: int, gamma: float) -> float:
    """The decay of step t (1-based: the step just taken): (1 - 1/t)^(gamma + 1); 0 at t = 1."""
    return (1 - 1 / t) ** (gamma + 1)


def profile_inner_product(t_a, gamma_a, t_b, gamma_b):
    """<p(.; t_a, gamma_a), p(.; t_b, gamma_b)> = integral over tau of their product, in closed form:
    (ga + 1)(gb + 1) T^(ga + gb + 1) / ((ga + gb + 1) t_a^(ga + 1) t_b^(gb + 1)), T = min(t_a, t_b).
    Broadcasts over numpy arrays; written with ratios so large t and gamma do not overflow."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    low = np.minimum(t_a, t_b)
    ratio = (low / t_a) ** (g_a + 1) * (low / t_b) ** (g_b + 1)
    return (g_a + 1) * (g_b + 1) * ratio / ((g_a + g_b + 1) * low)


def exponential_sigma_rel(decay: float, steps: int) -> float:
    """sigma_rel of the classic EMA (decay `decay`, started from the initial weights) after `steps` steps:
    the standard deviation of its weights over steps 0..t (step i weighs (1 - decay) decay^(t - i), step 0
    decay^t), relative to t. About 1 / ((1 - decay) t) when the average is short."""
    i = np.arange(steps + 1, dtype=np.float64)
    w = (1 - decay) * decay ** (steps - i)
    w[0] = decay**steps
    mean = float((w * i).sum())
    return math.sqrt(float((w * (i - mean) ** 2).sum())) / steps


class PowerEMA:
    """The power-function EMA profiles of one model: one float32 copy of its parameters per sigma_rel, updated
    after every optimiser step (`update`), saved whole in checkpoints (`state_dict`) and as half-precision
    snapshots (`snapshot`) for post-hoc reconstruction (`dit.posthoc_ema`)."""

    def __init__(self, model: torch.nn.Module, sigma_rels):
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(gamma_of(s) for s in self.sigma_rels)
        self.names = [name for name, _ in model.named_parameters()]
        self.profiles = [[p.detach().clone() for p in model.parameters()] for _ in self.sigma_rels]
        self.t = 0  # optimiser steps averaged so far

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        """Average in the weights of the step just taken: profile <- beta_t profile + (1 - beta_t) theta_t."""
        self.t += 1
        params = [p.detach() for p in model.parameters()]
        for profile, gamma in zip(self.profiles, self.gammas, strict=True):
            torch._foreach_lerp_(profile, params, 1.0 - power_beta(self.t, gamma))

    def profile_state(self, index: int, dtype: torch.dtype = torch.float32) -> dict:
        """The state dict of profile `index` (loadable into the model), in `dtype`."""
        pairs = zip(self.names, self.profiles[index], strict=True)
        return {name: p.to(dtype=dtype, device="cpu", copy=True) for name, p in pairs}

    def state_dict(self) -> dict:
        """Everything a resumed run needs to go on to the bit: t, the lengths and the float32 profiles."""
        return {"t": self.t, "sigma_rels": list(self.sigma_rels),
                "profiles": [self.profile_state(i) for i in range(len(self.profiles))]}

    def load_state_dict(self, state: dict):
        """Restore `state_dict`'s; refuses profiles of other lengths (the run changed its recipe)."""
        if [float(s) for s in state["sigma_rels"]] != list(self.sigma_rels):
            raise ValueError(f"the checkpoint's EMA profiles have sigma_rel {state['sigma_rels']}, not "
                             f"{list(self.sigma_rels)}; resume with the run's own ema_sigma_rels")
        self.t = int(state["t"])
        for profile, stored in zip(self.profiles, state["profiles"], strict=True):
            for p, name in zip(profile, self.names, strict=True):
                p.copy_(stored[name])

    def restore(self, state: dict | None, model: torch.nn.Module, step: int):
        """Resume from a checkpoint's `state_dict`, or, for a checkpoint written without profiles, restart every
        profile from the model's weights at `step` (its earlier steps then weigh nothing)."""
        if state is not None:
            self.load_state_dict(state)
            return
        self.t = step
        for profile in self.profiles:
            for p, q in zip(profile, model.parameters(), strict=True):
                p.copy_(q.detach())

    def snapshot(self, dtype: torch.dtype) -> dict:
        """What a snapshot file holds: the step, each profile's sigma_rel and gamma, and its weights in `dtype`."""
        return {"step": self.t, "sigma_rels": list(self.sigma_rels), "gammas": list(self.gammas),
                "profiles": [self.profile_state(i, dtype) for i in range(len(self.profiles))]}
