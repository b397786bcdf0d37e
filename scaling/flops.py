"""Gflops of a DiT as the paper counts them (Peebles & Xie, "Scalable Diffusion Models with Transformers").

The paper's model complexity is fvcore's `FlopCountAnalysis` of one forward pass of one sample:
one fused multiply-add is one flop, and the attention matmuls are included. We keep fvcore's
default set of counted operators, which is what reproduces the paper's table (every entry within
0.4%): linear layers, matmuls, the patch convolution, einsum and LayerNorm (4 flops per element,
5 with an affine transform). Elementwise operators (residual adds, modulation, GELU, SiLU,
softmax, the attention scale) are skipped, as fvcore skips them by default. Counting no LayerNorm
instead misses the table by 0.56% at DiT-S/8, so LayerNorm stays in.

fvcore has no handle for `F.scaled_dot_product_attention`; `SDPA_HANDLES` counts its two matmuls
exactly as fvcore counts them when written out (attention="math"), so both paths give one number.

The API: `gflops(config_or_model)` and `params(config_or_model)` of a DiTConfig or a DiT, cached per
config; a config's count traces one block on a blank (meta-built, zeroed) model and counts it `depth`
times, which is exact. `count_flops(model)` traces a whole model, and `flop_analysis(model)` gives
fvcore's analysis itself (per module, per operator). Training compute (Gflops x batch x steps x 3) is
`study.schema.train_compute_gflops`.
"""
import contextlib
import dataclasses
import functools
import logging
import warnings
from math import prod

import torch
from torch import nn

from dit.models import DiT, DiTConfig, count_params

# The aten operators that F.scaled_dot_product_attention traces to: the public op (what
# torch.jit.trace records on CPU) and the fused kernels it may dispatch to on other backends.
# All take (query, key, value, ...) first.
SDPA_OPS = (
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
)


def sdpa_flop_jit(inputs, outputs) -> int:
    """Flops of softmax(q k^T / sqrt(d)) v as its two matmuls, one multiply-add = one flop.

    q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv): q k^T costs prod(q) * Tk and the product
    with v costs prod(q[:-1]) * Tk * dv, the same as fvcore's matmul handle on the math path.
    Scale, softmax and masking are elementwise and skipped, as fvcore skips them there.
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(value) for value in inputs[:3])
    queries, tk, dv = prod(q[:-1]), k[-2], v[-1]
    return queries * q[-1] * tk + queries * tk * dv


SDPA_HANDLES = {op: sdpa_flop_jit for op in SDPA_OPS}


def example_inputs(config: DiTConfig, device=None, dtype=torch.float32) -> tuple[torch.Tensor, ...]:
    """One sample (x, t, y) of the shapes the model takes: x (1, C, H, W), t (1,), y (1,)."""
    x = torch.zeros(1, config.in_channels, config.input_size, config.input_size, device=device, dtype=dtype)
    t = torch.zeros(1, dtype=torch.long, device=device)
    y = torch.zeros(1, dtype=torch.long, device=device)
    return x, t, y


@contextlib.contextmanager
def _quiet():
    """Silence fvcore's per-operator notes and torch.jit's deprecation warnings while tracing."""
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def flop_analysis(model: DiT):
    """fvcore's FlopCountAnalysis of one forward pass of one sample, SDPA handled (eval mode)."""
    with _quiet():  # fvcore scripts a loss function at import, which torch.jit warns about
        from fvcore.nn import FlopCountAnalysis

    param = next(model.parameters())
    inputs = example_inputs(model.config, device=param.device, dtype=param.dtype)
    analysis = FlopCountAnalysis(model.eval(), inputs).set_op_handle(**SDPA_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    return analysis


def count_flops(model: DiT) -> int:
    """Flops of one forward pass of one sample by tracing this model whole."""
    with _quiet(), torch.no_grad():
        return round(flop_analysis(model).total())


def _blank_model(config: DiTConfig) -> DiT:
    """A DiT of this config with all-zero weights: built on the meta device, so no initialisation runs."""
    with torch.device("meta"):
        model = DiT(config)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.zero_()
    return model


@functools.cache
def _config_flops(config: DiTConfig) -> int:
    """Flops of a config: one block traced, counted `depth` times.

    All blocks of a DiT are the same, so flops = (flops of a depth-1 model) + (depth - 1) x (flops
    inside its block): exact, and it keeps DiT-XL/2 at 512 px to a second or two and ~100 MB of
    CPU memory instead of a 675M-parameter model (tests/scaling/test_flops.py checks it against
    whole-model traces). fvcore counts an operator to a module when it runs inside its __call__.
    """
    with _quiet(), torch.no_grad():
        analysis = flop_analysis(_blank_model(dataclasses.replace(config, depth=1)))
        total, block = analysis.total(), analysis.total("blocks.0")
    return round(total + (config.depth - 1) * block)


def _config_of(config_or_model) -> DiTConfig:
    if isinstance(config_or_model, DiTConfig):
        return config_or_model
    if isinstance(config_or_model, nn.Module) and isinstance(getattr(config_or_model, "config", None), DiTConfig):
        return config_or_model.config
    raise TypeError(f"expected a DiTConfig or a DiT model, got {type(config_or_model).__name__}")


def gflops(config_or_model) -> float:
    """Forward Gflops of one sample of a DiT (config or model), as the paper counts them; cached per config.

    gflops(dit_config("DiT-XL/2")) -> 118.69 (the paper: 118.64).
    The attention implementation does not change the count, so the cache ignores it.
    """
    config = dataclasses.replace(_config_of(config_or_model), attention="math")
    return _config_flops(config) / 1e9


@functools.cache
def _config_params(config: DiTConfig) -> int:
    with torch.device("meta"):
        return count_params(DiT(config))


def params(config_or_model) -> int:
    """Parameter count of a DiT (config or model), built on the meta device for a config; cached."""
    return _config_params(_config_of(config_or_model))
