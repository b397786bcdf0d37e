"""Learning-rate range test (Smith 2017): raise the rate exponentially over a short run and watch the loss.

The loss falls while the rate is useful and shoots up where training becomes unstable; the
largest safe rate sits well below that point. A DiT trained on CelebA, for example, is stable at
1e-4 and diverges midway through training at 3e-4: the test shows where such a limit lies.
"""
import math

import torch

from dit import distributed
from dit.config import TrainConfig
from dit.data import make_loader
from dit.progress import progress_bar
from dit.train import build_training, set_lr, step_inputs, train_step

SUGGESTION_MARGIN = 10.0  # suggest the rate at the smoothed loss's minimum divided by this


def exponential_rates(min_lr: float, max_lr: float, num_steps: int) -> list[float]:
    return [min_lr * (max_lr / min_lr) ** (i / max(1, num_steps - 1)) for i in range(num_steps)]


def smooth(values: list[float], beta: float) -> list[float]:
    """Exponential moving average with bias correction (as Adam's moments)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def lr_range_test(config: TrainConfig, *, min_lr: float = 1e-6, max_lr: float = 1e-2, num_steps: int = 200,
                  smoothing: float = 0.9, divergence: float = 4.0, progress: bool = True) -> dict:
    """Train `config`'s model from scratch with lr rising from min_lr to max_lr; stop once the smoothed
    loss exceeds `divergence` x its minimum. Returns the rates, raw and smoothed losses, the rate where
    the loss diverged (or None) and a suggested maximum rate."""
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr (got {min_lr}, {max_lr})")
    dist = distributed.setup(config.device)
    torch.manual_seed(config.seed)
    parts = build_training(config, dist.device)
    parts.model.train()
    batches = iter(make_loader(parts.dataset, config, dist, 0))
    rates, losses, smoothed, diverged_at = [], [], [], None
    for step, lr in enumerate(
        progress_bar(exponential_rates(min_lr, max_lr, num_steps), desc="lr range test", enabled=progress)
    ):
        set_lr(parts.opt, lr)
        inputs = step_inputs(next(batches), parts, config, step, dist)
        loss = train_step(parts, parts.model, inputs, config)[0].item()
        rates.append(lr)
        losses.append(loss if math.isfinite(loss) else float("inf"))
        smoothed = smooth([min(v, 1e6) for v in losses], smoothing)
        if not math.isfinite(loss) or smoothed[-1] > divergence * min(smoothed):
            diverged_at = lr
            break
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    return {"lr": rates, "loss": losses, "smoothed": smoothed, "min_loss_lr": rates[best],
            "diverged_lr": diverged_at, "suggested_lr": rates[best] / SUGGESTION_MARGIN}
