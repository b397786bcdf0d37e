"""What every feature extractor returns, and the input conversions they share."""
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Features(NamedTuple):
    """Per-image features: `pool` for FID and Precision/Recall, `spatial` for sFID, `logits` for IS."""

    pool: torch.Tensor  # (N, D) float32
    spatial: torch.Tensor  # (N, Ds) float32, flattened (H, W, C) as ADM flattens NHWC maps
    logits: torch.Tensor  # (N, K) float32

    @classmethod
    def cat(cls, parts: list["Features"]) -> "Features":
        return cls(*(torch.cat(tensors) for tensors in zip(*parts)))


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, C, H, W) with C in {1, 3} -> `channels` channels: grey repeated to RGB, or RGB averaged to grey."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1)
    return x.float().mean(1, keepdim=True).round().to(x.dtype)


def flatten_spatial(x: torch.Tensor, channels: int) -> torch.Tensor:
    """The first `channels` channels of a map (N, C, H, W), flattened in (H, W, C) order -> (N, H*W*channels)."""
    return x[:, :channels].permute(0, 2, 3, 1).reshape(x.shape[0], -1).float()


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of float images (N, C, H, W) to size x size; a no-op at that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
