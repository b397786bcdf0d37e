"""What every feature extractor returns, the registry they join, and the input conversions they share."""
import contextlib
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dit.precision import autocast_for
from study.registry import Registry

# fp32: exact; tf32: TF32 convolutions and matmuls on GPUs; bf16: autocast. Extractors that are small run in fp32.
PRECISIONS = Registry("precision", ("fp32", "tf32", "bf16"))


class Features(NamedTuple):
    """Per-image features: `pool` for FID and Precision/Recall, `spatial` for sFID, `logits` for IS."""

    pool: torch.Tensor  # (N, D) float32
    spatial: torch.Tensor  # (N, Ds) float32, flattened (H, W, C) as ADM flattens NHWC maps
    logits: torch.Tensor  # (N, K) float32

    @classmethod
    def cat(cls, parts: list["Features"]) -> "Features":
        return cls(*(torch.cat(tensors) for tensors in zip(*parts, strict=True)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Extractor:
    """A registered feature extractor: its dimensions, known without building it, and how to build it.

    `build(device, *, weights=None, precision="fp32")` returns an nn.Module taking uint8 images
    (N, C, H, W) and returning `Features`.
    """

    name: str
    dims: dict  # {"pool": D, "spatial": Ds, "logits": K}
    build: Callable[..., nn.Module]


EXTRACTORS: Registry[Extractor] = Registry("feature extractor")


def register_extractor(name: str, *, dims: dict, build: Callable[..., nn.Module]) -> Extractor:
    """Make an extractor known by `name` (each extractor's module calls this once)."""
    return EXTRACTORS.register(name, Extractor(name=name, dims=dict(dims), build=build))


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


def find_weights(path, *, env: str, url: str, what: str, option: str) -> Path:
    """A feature network's weights file: `path`, else $`env`, else the torch hub cache (downloading `url` there).

    The cached file is <torch hub dir>/checkpoints/<file name of the URL>, where torch.hub's own
    download puts it (torch-fidelity and EDM2 load through torch.hub), so one download serves all.
    """
    path = path or os.environ.get(env)
    if path:
        if Path(path).is_dir():
            raise ValueError(f"{what} weights {path} is a directory; give the path of {url.rsplit('/', 1)[-1]} in it")
        if not Path(path).is_file():
            raise ValueError(f"{what} weights {path} do not exist; download {url} and give its path")
        return Path(path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cached.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(cached), progress=False)
        except Exception as exc:  # offline: URLError, timeouts, HTTP errors
            raise ValueError(f"{what} weights missing and not downloadable ({type(exc).__name__}): "
                             f"put {url} at {cached}, or pass {option} PATH (or set {env})") from None
    return cached


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """fp32: exact (TF32 off); tf32: TF32 convolutions and matmuls (CUDA); bf16: autocast to bfloat16."""
    autocast = autocast_for(device, precision)
    if device.type != "cuda":
        with autocast:
            yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        with autocast:
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
