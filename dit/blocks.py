"""The four DiT block designs of the paper (Sec. 3.2, Fig. 3) and the two final layers.

Every block takes `(x, cond)` and says through its `conditioning` attribute what `cond` is:
- "tokens":   t and c were appended to the sequence as two tokens; `cond` is unused (in-context).
- "sequence": `cond` is the length-2 sequence [t, c], attended to by cross-attention.
- "vector":   `cond` is t + c, from which LayerNorm scales and shifts are regressed (adaLN).
"""
import torch
import torch.nn.functional as F
from torch import nn

from study.blocks import ADALN_ZERO
from study.registry import Registry

ATTENTION_IMPLS = Registry("attention", ("sdpa", "math"))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str, scale: float | None = None) -> torch.Tensor:
    """Multi-head attention softmax(q k^T * scale) v on (N, H, T, d) tensors; scale None is 1 / sqrt(d)
    (μP's is dit.parametrization.attention_scale).

    "sdpa" dispatches to PyTorch's fused kernels (flash / memory-efficient on GPU); "math" writes
    the two matmuls out, which is what the Gflops counter sees and what a debugger can step into.
    """
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    scores = (q * (q.shape[-1] ** -0.5 if scale is None else scale)) @ k.transpose(-2, -1)  # (N, H, Tq, Tk)
    return scores.softmax(dim=-1) @ v  # (N, H, Tq, d)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (names as timm's, which DiT used)."""

    def __init__(self, dim: int, num_heads: int, impl: str = "sdpa", scale: float | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.impl = impl
        self.scale = scale
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, T, D = x.shape
        qkv = self.qkv(x).reshape(N, T, 3, self.num_heads, D // self.num_heads)  # (N, T, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, T, d)
        out = attend(q, k, v, self.impl, self.scale)  # (N, H, T, d)
        return self.proj(out.transpose(1, 2).reshape(N, T, D))  # (N, T, D)


class CrossAttention(nn.Module):
    """Multi-head attention from the image tokens (queries) to a conditioning sequence."""

    def __init__(self, dim: int, num_heads: int, impl: str = "sdpa", scale: float | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.impl = impl
        self.scale = scale
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        N, T, D = x.shape
        S, H = context.shape[1], self.num_heads
        q = self.q(x).reshape(N, T, H, D // H).transpose(1, 2)  # (N, H, T, d)
        kv = self.kv(context).reshape(N, S, 2, H, D // H)  # (N, S, 2, H, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, H, S, d)
        out = attend(q, k, v, self.impl, self.scale)  # (N, H, T, d)
        return self.proj(out.transpose(1, 2).reshape(N, T, D))  # (N, T, D)


class Mlp(nn.Module):
    """Pointwise feed-forward network with tanh-approximated GELU, as DiT's."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine step: x * (1 + scale) + shift, per sample."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (N, T, D)


class InContextBlock(nn.Module):
    """A standard ViT block; t and c enter as two extra tokens of the sequence (in-context conditioning)."""

    conditioning = "tokens"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attention: str = "sdpa",
                 attn_scale: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attention, attn_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (N, T+2, D)
        return x + self.mlp(self.norm2(x))  # (N, T+2, D)


class CrossAttentionBlock(nn.Module):
    """Self-attention, then cross-attention over the length-2 sequence [t, c], then the MLP."""

    conditioning = "sequence"

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attention: str = "sdpa",
                 attn_scale: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attention, attn_scale)
        self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads, attention, attn_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (N, T, D)
        x = x + self.cross_attn(self.norm_cross(x), cond)  # (N, T, D); cond (N, 2, D)
        return x + self.mlp(self.norm2(x))  # (N, T, D)


class AdaLNBlock(nn.Module):
    """Adaptive LayerNorm block: scale and shift of both LayerNorms regressed from t + c."""

    conditioning = "vector"
    num_modulations = 4

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attention: str = "sdpa",
                 attn_scale: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads, attention, attn_scale)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, self.num_modulations * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(cond).chunk(4, dim=1)  # each (N, D)
        x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, T, D)
        return x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, T, D)


class AdaLNZeroBlock(AdaLNBlock):
    """adaLN-Zero block: adaLN plus per-channel gates alpha before each residual sum.

    The modulation layer is zero-initialised, so every block starts as the identity function.
    Parameter names match the official `DiTBlock`.
    """

    num_modulations = 6

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN_modulation(cond).chunk(6, dim=1)  # each (N, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (N, T, D)
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (N, T, D)


BLOCKS = Registry("block", {
    "in-context": InContextBlock,
    "cross-attn": CrossAttentionBlock,
    "adaln": AdaLNBlock,
    ADALN_ZERO: AdaLNZeroBlock,
})


def readout(x: torch.Tensor, mult: float) -> torch.Tensor:
    """The final layer's input times μP's readout multiplier; untouched at 1 (SP), so SP stays bit-identical."""
    return x if mult == 1.0 else x * mult


class AdaptiveFinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear decoder to p*p*C_out values per token (official `FinalLayer`)."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, readout_mult: float = 1.0):
        super().__init__()
        self.readout_mult = readout_mult  # μP's 1 / m on the linear layer's input (1 in SP: no multiply)
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(cond).chunk(2, dim=1)  # each (N, D)
        return self.linear(readout(modulate(self.norm_final(x), shift, scale), self.readout_mult))  # (N, T, p*p*C_out)


class PlainFinalLayer(nn.Module):
    """LayerNorm and a linear decoder, for blocks whose conditioning is not adaptive normalisation."""

    def __init__(self, dim: int, patch_size: int, out_channels: int, readout_mult: float = 1.0):
        super().__init__()
        self.readout_mult = readout_mult  # μP's 1 / m on the linear layer's input (1 in SP: no multiply)
        self.norm_final = nn.LayerNorm(dim, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(readout(self.norm_final(x), self.readout_mult))  # (N, T, p*p*C_out)
