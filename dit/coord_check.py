"""The coordinate check of μP (Yang et al., "Tensor Programs V", 2021, Fig. 5): train the same small DiT at
several widths for a few Adam steps and record the mean |activation| of each layer at every step.

Under a parametrization whose learning rate transfers across widths (μP) the curves stay flat in width;
under the standard one the layers whose updates sum over the width (attention, MLP, readout) grow with it.
The batch, timesteps and noise are fixed and synthetic, so the check needs no data and every width sees
the same inputs.
"""
import dataclasses

import torch

from dit.config import TrainConfig
from dit.diffusion import create_diffusion
from dit.models import DiT, create_dit
from dit.train import make_optimizer, set_lr


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoordCheck:
    """One coordinate check: a tiny DiT-custom at each width (heads fixed, so the head dimension grows)."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    parametrizations: tuple[str, ...] = ("sp", "mup")
    steps: int = 5
    lr: float = 1e-2
    depth: int = 2
    num_heads: int = 2
    patch_size: int = 4
    input_size: int = 16
    in_channels: int = 1
    num_classes: int = 10
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths {list(self.widths)}: give at least two positive widths")
        bad = [w for w in self.widths if w % (4 * self.num_heads)]
        if bad:
            raise ValueError(f"width {bad[0]} does not divide into {self.num_heads} heads of a multiple of 4; "
                             f"choose widths that are multiples of {4 * self.num_heads}")
        if self.steps < 1 or not 0 < self.lr < 1:
            raise ValueError(f"steps {self.steps} and lr {self.lr}: give steps >= 1 and lr in (0, 1)")


def layer_modules(model: DiT) -> dict[str, torch.nn.Module]:
    """The layers the check watches: patch embedding, each block's attention and MLP, the final layer."""
    layers = {"patch embedding": model.x_embedder}
    for i, block in enumerate(model.blocks):
        layers[f"block {i} attention"] = block.attn
        layers[f"block {i} mlp"] = block.mlp
    layers["final layer"] = model.final_layer
    return layers


def fixed_batch(check: CoordCheck) -> tuple[torch.Tensor, ...]:
    """x (N, C, H, W), y (N,), t (N,), noise (N, C, H, W): the same at every width and step."""
    gen = torch.Generator().manual_seed(check.seed)
    shape = (check.batch_size, check.in_channels, check.input_size, check.input_size)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, check.num_classes, (check.batch_size,), generator=gen)
    t = torch.randint(0, 1000, (check.batch_size,), generator=gen)
    return x, y, t, torch.randn(shape, generator=gen)


def measure_width(check: CoordCheck, parametrization: str, width: int) -> list[dict]:
    """Records {parametrization, width, step, layer, mean_abs}: each layer's mean |output| in the forward pass
    of each step (step 0 at initialisation, step k after k Adam updates)."""
    torch.manual_seed(check.seed)
    model = create_dit(f"DiT-custom/{check.patch_size}", input_size=check.input_size,
                       in_channels=check.in_channels, num_classes=check.num_classes, depth=check.depth,
                       hidden_size=width, num_heads=check.num_heads, parametrization=parametrization,
                       base_width=min(check.widths) if parametrization == "mup" else None).train()
    config = TrainConfig(lr=check.lr, parametrization=parametrization)
    opt = make_optimizer(model, config, torch.device("cpu"))
    set_lr(opt, check.lr)
    diffusion = create_diffusion("")
    x, y, t, noise = fixed_batch(check)
    seen, records = {}, []
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out.abs().mean().item()))
             for name, m in layer_modules(model).items()]
    for step in range(check.steps):
        opt.zero_grad(set_to_none=True)
        loss = diffusion.training_losses(model, x, t, dict(y=y), noise)["loss"].mean()
        loss.backward()
        opt.step()
        records += [dict(parametrization=parametrization, width=width, step=step, layer=name, mean_abs=value)
                    for name, value in seen.items()]
    for hook in hooks:
        hook.remove()
    return records


def coord_check(check: CoordCheck) -> list[dict]:
    """The records of every parametrization x width (see measure_width)."""
    return [r for p in check.parametrizations for w in check.widths for r in measure_width(check, p, w)]


def spread(records: list[dict], parametrization: str) -> dict[str, float]:
    """Per layer, at the last step: max / min over widths of the mean |activation| (1 = flat in width)."""
    last = max(r["step"] for r in records)
    values: dict[str, list[float]] = {}
    for r in records:
        if r["parametrization"] == parametrization and r["step"] == last:
            values.setdefault(r["layer"], []).append(r["mean_abs"])
    return {layer: max(v) / min(v) for layer, v in values.items()}
