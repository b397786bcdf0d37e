"""How a DiT's weights scale with its width: the standard parametrization (the paper's) or μP.

μP (maximal update parametrization; Yang et al., "Tensor Programs V", 2021, Table 3 for Adam; for DiT
Zheng et al., "Scaling Diffusion Transformers Efficiently via μP", 2025) keeps every activation and
its update of the same size at every width, so a learning rate tuned on a narrow model transfers to
a wide one. Widths are measured against a base width W0, m = width / W0:

| group | DiT parameters | init | Adam lr | multiplier |
| --- | --- | --- | --- | --- |
| input | patch embedding, timestep MLP input, label table, every bias and norm gain | SP's at width W0 | lr | 1 |
| hidden | attention, MLP, timestep MLP output, adaLN modulations | SP's (variance ~ 1/fan_in) | lr / m | 1 |
| readout | final linear layer | zero (as SP) | lr | 1 / m on its input |
| attention | softmax logits | | | sqrt(d0) / d, d0 = W0 / heads, instead of 1 / sqrt(d) |

At m = 1 every rule is the standard one, so μP at the base width is SP. Weight decay in a hidden
group is multiplied by m, so the per-step shrink lr x decay is the same at every width.
"""
import dataclasses

import torch
from torch import nn

from study.registry import Registry

PARAMETRIZATIONS = Registry("parametrization", ("sp", "mup"))
# Matrices whose fan-in is fixed by the data (or the frequency embedding), not by the width.
INPUT_WEIGHTS = ("x_embedder.proj.weight", "t_embedder.mlp.0.weight", "y_embedder.embedding_table.weight")
READOUT_WEIGHTS = ("final_layer.linear.weight",)
TIMESTEP_STD = 0.02  # SP's std of the timestep MLP and label table (dit.models)


def check_parametrization(parametrization: str, base_width: int | None, width: int):
    """ValueError in one line for an unknown parametrization or a base width the model cannot have."""
    PARAMETRIZATIONS.check(parametrization, what="parametrization")
    if base_width is not None and not 1 <= base_width <= width:
        raise ValueError(f"base_width {base_width} is not in 1..{width}, the model's width; give the width of the "
                         f"narrowest model the learning rate was tuned on (at most {width})")


def width_mult(width: int, base_width: int) -> float:
    """m = width / base width."""
    return width / base_width


def attention_scale(width: int, num_heads: int, base_width: int) -> float:
    """μP's attention logit scale sqrt(d0) / d: 1 / d in the head dimension d, equal to the standard
    1 / sqrt(d) at the base width (d0 = base_width / num_heads)."""
    return (base_width / num_heads) ** 0.5 / (width / num_heads)


def param_role(name: str, param: torch.Tensor) -> str:
    """'input', 'hidden' or 'readout' (the table above); vectors (biases, norm gains) are 'input'."""
    if name in READOUT_WEIGHTS:
        return "readout"
    if name in INPUT_WEIGHTS or param.ndim < 2:
        return "input"
    return "hidden"


@torch.no_grad()
def mup_init_(model: nn.Module, width: int, base_width: int):
    """Rescale SP's initialisation (already drawn) to μP's, drawing nothing more: the patch embedding's
    xavier-uniform bound to its value at the base width (input weights keep their size at every width), the
    N(0, 0.02) hidden matrix of the timestep MLP to std 0.02 / sqrt(m). Xavier-uniform hidden matrices already
    have variance ~ 1/fan_in and the readout is zero. At m = 1 nothing changes."""
    w = model.x_embedder.proj.weight  # (D, C, p, p)
    fan_in = w[0].numel()
    w.mul_(((fan_in + width) / (fan_in + base_width)) ** 0.5)  # xavier bound sqrt(6 / (fan_in + fan_out))
    model.t_embedder.mlp[2].weight.mul_(width_mult(width, base_width) ** -0.5)


def param_groups(model: nn.Module, lr: float, weight_decay: float, width: int, base_width: int) -> list[dict]:
    """AdamW parameter groups of μP: input and readout parameters at `lr`, hidden matrices at lr / m (weight
    decay x m). Each group's `lr_mult` is what `dit.train.set_lr` multiplies the schedule's lr by."""
    m = width_mult(width, base_width)
    roles = {"input": [], "readout": [], "hidden": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            roles[param_role(name, p)].append(p)
    groups = [
        {"params": roles["input"] + roles["readout"], "lr_mult": 1.0, "weight_decay": weight_decay},
        {"params": roles["hidden"], "lr_mult": 1.0 / m, "weight_decay": weight_decay * m},
    ]
    return [dict(g, lr=lr * g["lr_mult"]) for g in groups if g["params"]]


@torch.no_grad()
def fold_into_standard(model: nn.Module) -> nn.Module:
    """An SP model with the same outputs as a μP `model`: the readout multiplier folded into the final linear
    weight, the attention scale into the query rows (a standard 1 / sqrt(d) then gives sqrt(d0) / d)."""
    c = model.config
    if c.parametrization == "sp":
        return model
    standard = type(model)(dataclasses.replace(c, parametrization="sp", base_width=None))
    state = {k: v.clone() for k, v in model.state_dict().items()}  # (out, in) weights, (out,) biases
    state["final_layer.linear.weight"] *= c.readout_mult
    q_factor = c.attention_scale * (c.hidden_size / c.num_heads) ** 0.5
    D = c.hidden_size
    for name in state:
        if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
            state[name][:D] *= q_factor  # rows [0, D) of the fused projection are the queries
        elif name.endswith(("cross_attn.q.weight", "cross_attn.q.bias")):
            state[name] *= q_factor
    standard.load_state_dict(state)
    return standard.train(model.training)
