"""Gflops as the paper counts them: its table, a closed-form count, SDPA vs math attention.

Speed: scaling.flops traces a depth-1 model and counts its block `depth` times (blocks are alike),
so the paper's 13 models trace in seconds; `test_whole_model_trace_*` checks that shortcut against
tracing whole models, and `expected_flops` below recounts every model independently by hand.
"""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis

from dit.blocks import BLOCKS
from dit.models import create_dit, dit_config
from scaling.flops import SDPA_HANDLES, count_flops, flop_analysis, gflops, params
from study.schema import train_compute_gflops

# The paper's Gflops of one forward pass at 256 px (latent 32 x 32 x 4, 1000 classes) for its 12
# models, and of DiT-XL/2 at 512 px (latent 64 x 64 x 4).
PAPER_GFLOPS = {
    ("DiT-S/8", 32): 0.36, ("DiT-S/4", 32): 1.41, ("DiT-S/2", 32): 6.06,
    ("DiT-B/8", 32): 1.42, ("DiT-B/4", 32): 5.56, ("DiT-B/2", 32): 23.01,
    ("DiT-L/8", 32): 5.01, ("DiT-L/4", 32): 19.70, ("DiT-L/2", 32): 80.71,
    ("DiT-XL/8", 32): 7.39, ("DiT-XL/4", 32): 29.05, ("DiT-XL/2", 32): 118.64,
    ("DiT-XL/2", 64): 524.60,
}
TIMESTEP_FREQUENCIES = 256  # the sinusoidal timestep embedding's width, before its MLP


def expected_flops(c) -> float:
    """fvcore's count of a DiT written out by hand: one multiply-add per weight use in linear
    layers, the patch convolution and the two attention matmuls; LayerNorm 4 flops per element,
    5 with an affine transform; elementwise ops free. Not counted here: fvcore's estimate for the
    final einsum (a permutation), under one flop per output element; the caller allows for it."""
    D, L, p, T = c.hidden_size, c.depth, c.patch_size, (c.input_size // c.patch_size) ** 2
    mlp = int(D * c.mlp_ratio)
    flops = T * D * c.in_channels * p * p  # patch embedding (conv)
    flops += TIMESTEP_FREQUENCIES * D + D * D  # timestep MLP
    S = T + 2 if c.block == "in-context" else T  # tokens inside the blocks

    def self_attention(n):
        return n * 3 * D * D + 2 * n * n * D + n * D * D  # qkv, q k^T and attn v, proj

    block = self_attention(S) + 2 * S * D * mlp
    if c.block in ("adaln", "adaln-zero"):
        block += (6 if c.block == "adaln-zero" else 4) * D * D + 2 * 4 * S * D  # modulation MLP, 2 plain LNs
    elif c.block == "in-context":
        block += 2 * 5 * S * D  # 2 affine LNs
    else:  # cross-attn: q on T tokens, k and v on the 2 condition tokens, 2 matmuls, proj, 3 affine LNs
        block += T * D * D + 2 * 2 * D * D + 2 * T * 2 * D + T * D * D + 3 * 5 * T * D
    flops += L * block
    flops += T * D * p * p * c.out_channels  # final linear
    adaptive = c.block in ("adaln", "adaln-zero")
    flops += 2 * D * D + 4 * T * D if adaptive else 5 * T * D  # final modulation + plain LN, or affine LN
    return flops


def einsum_allowance(c) -> int:
    return (c.input_size**2) * c.out_channels


@pytest.mark.parametrize("name,input_size", PAPER_GFLOPS)
def test_paper_table_within_half_a_percent(name, input_size):
    config = dit_config(name, input_size=input_size)
    measured = gflops(config)
    assert measured == pytest.approx(PAPER_GFLOPS[name, input_size], rel=0.005)
    assert abs(measured * 1e9 - expected_flops(config)) <= einsum_allowance(config)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_every_block_matches_the_closed_form(block):
    config = dit_config("DiT-S/4", block=block)
    assert abs(gflops(config) * 1e9 - expected_flops(config)) <= einsum_allowance(config)


SMALL = dict(input_size=16, in_channels=1, num_classes=10)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_whole_model_trace_equals_the_depth_shortcut_and_closed_form(block):
    model = create_dit("DiT-T/4", block=block, **SMALL)  # depth 4
    traced = count_flops(model)
    assert traced == pytest.approx(gflops(model.config) * 1e9, abs=0.5)
    assert abs(traced - expected_flops(model.config)) <= einsum_allowance(model.config)


@pytest.mark.parametrize("block", list(BLOCKS))
def test_sdpa_and_math_attention_count_the_same(block):
    counts = {}
    for impl in ("sdpa", "math"):
        model = create_dit("DiT-custom/2", block=block, attention=impl, depth=2, hidden_size=64, num_heads=4, **SMALL)
        analysis = flop_analysis(model)
        counts[impl] = analysis.total()
        assert not [op for op in analysis.unsupported_ops() if "attention" in op]
    assert counts["sdpa"] == counts["math"] > 0


class _SDPA(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_counts_both_matmuls_for_unequal_shapes():
    N, H, Tq, Tk, d, dv = 2, 3, 5, 7, 8, 4
    q, k, v = torch.randn(N, H, Tq, d), torch.randn(N, H, Tk, d), torch.randn(N, H, Tk, dv)
    analysis = FlopCountAnalysis(_SDPA(), (q, k, v)).set_op_handle(**SDPA_HANDLES)
    assert analysis.total() == N * H * (Tq * d * Tk + Tq * Tk * dv)


def test_gflops_accepts_a_model_and_caches_per_config():
    model = create_dit("DiT-T/8", **SMALL)
    first = gflops(model.config)
    assert gflops(model) == first
    assert gflops(dataclasses.replace(model.config, attention="sdpa")) == first
    assert gflops(dit_config("DiT-T/8", input_size=32, in_channels=1, num_classes=10)) > first
    with pytest.raises(TypeError):
        gflops("DiT-T/8")


def test_params_match_the_built_model():
    model = create_dit("DiT-M/4", **SMALL)
    assert params(model.config) == sum(p.numel() for p in model.parameters())


def test_training_compute_is_gflops_times_batch_steps_and_three():
    # The paper's definition, for DiT-XL/2 at batch 256 for 400K steps.
    g = gflops(dit_config("DiT-XL/2"))
    assert train_compute_gflops(g, 256, 400_000) == pytest.approx(g * 256 * 400_000 * 3, rel=1e-12)
    assert train_compute_gflops(g, 256, 400_000) == pytest.approx(3.646e10, rel=1e-3)
