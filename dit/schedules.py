"""Learning-rate schedules: the paper's constant rate, and warmup / cosine / one-cycle beside it.

Each is a pure function lr(step, base_lr, total_steps, warmup_steps) -> float.
"""
import math

from study.registry import Registry


def constant(step, base_lr, total_steps, warmup_steps):
    """The paper's schedule (a constant 1e-4), with an optional linear warmup."""
    return base_lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else base_lr


def cosine(step, base_lr, total_steps, warmup_steps):
    """Linear warmup, then cosine decay to zero at total_steps (Loshchilov & Hutter 2017)."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def one_cycle(step, base_lr, total_steps, warmup_steps):
    """Smith's one-cycle: cosine rise from base_lr / 25 to base_lr over the first 30% (or the warmup
    steps, if given), then cosine decay to base_lr / 1e4."""
    rise = warmup_steps or max(1, int(0.3 * total_steps))
    start, end = base_lr / 25, base_lr / 1e4
    if step < rise:
        return start + (base_lr - start) * 0.5 * (1 - math.cos(math.pi * step / rise))
    progress = min(1.0, (step - rise) / max(1, total_steps - rise))
    return end + (base_lr - end) * 0.5 * (1 + math.cos(math.pi * progress))


LR_SCHEDULES = Registry("learning-rate schedule", {"constant": constant, "cosine": cosine, "one-cycle": one_cycle})
get_lr_schedule = LR_SCHEDULES.get
