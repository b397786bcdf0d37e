"""Embeddings of DiT: patches, fixed 2-D sine-cosine positions, timesteps and class labels.

Parameter names and shapes follow the official DiT release so its checkpoints load strictly.
"""
import math

import numpy as np
import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Linear embedding of non-overlapping p x p patches (a strided convolution), DiT Sec. 3.2."""

    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = input_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (N, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2).contiguous()  # (N, T, D), T = HW/p^2, row-major


def sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """Sine-cosine embedding of 1-D positions: [sin(pos * w_k), cos(pos * w_k)], w_k = 10000^(-2k/D)."""
    assert embed_dim % 2 == 0
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    angles = np.outer(positions.reshape(-1), omega)  # (M, D/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (M, D)


def sincos_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sine-cosine position embedding of a grid_size x grid_size token grid (row-major).

    The first half of each vector encodes the column index, the second half the row index, as in
    the official release (its meshgrid puts the width axis first).
    """
    assert embed_dim % 4 == 0, "2-D sine-cosine embedding needs a width divisible by 4"
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    emb_cols = sincos_1d(embed_dim // 2, cols.astype(np.float64))  # (T, D/2)
    emb_rows = sincos_1d(embed_dim // 2, rows.astype(np.float64))  # (T, D/2)
    return np.concatenate([emb_cols, emb_rows], axis=1)  # (T, D)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: [cos(t * f_k), sin(t * f_k)].

    f_k = max_period^(-k / (dim/2)) for k < dim/2; an odd dim gets a zero last column.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (N, dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2*(dim/2))
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb  # (N, dim)


class TimestepEmbedder(nn.Module):
    """Embeds scalar timesteps: sinusoidal frequencies followed by a two-layer SiLU MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_embedding(t, self.frequency_embedding_size)  # (N, F)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Embeds class labels; row `num_classes` is the learned null class used for guidance.

    During training a label is replaced by the null class with probability `dropout_prob`
    (classifier-free guidance, Ho & Salimans 2022).
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        has_null = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + has_null, hidden_size)

    def drop_labels(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.drop_labels(labels, force_drop_ids)
        return self.embedding_table(labels)  # (N, D)
