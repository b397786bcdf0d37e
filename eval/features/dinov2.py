"""DINOv2 ViT/14 features for FD-DINOv2, the protocol EDM2 reports (Karras et al. 2024; Stein et al. 2023).

torch-fidelity 0.4.0 ships `FeatureExtractorDinoV2`, but it builds the network with
`torch.hub.load("facebookresearch/dinov2", ...)`, which fetches the model code from GitHub, and
raises NotImplementedError for a local weights file. So the network is written out here: the
DINOv2 vision transformer (Oquab et al. 2023) with the parameter names of Meta's checkpoints
(`dinov2_vitl14_pretrain.pth` loads as it is): patch embedding, class token, learned position
embeddings for 518 px (37 x 37 patches) interpolated bicubically to the input's grid with DINO's
+0.1 offset, pre-norm blocks with LayerScale, a final LayerNorm; the feature is the class token.

Input as EDM2's DINOv2 detector (its fast 'torch' mode): uint8 images resized to 224 x 224
(bicubic, antialiased), scaled to [0, 1] and normalised with ImageNet's mean and std.
(torch-fidelity resizes with TF1's bilinear kernel instead; EDM2's numbers come from bicubic.)

Weights: an explicit path, the `DIT_DINOV2_WEIGHTS` environment variable, or Meta's file in the
torch hub cache (downloaded there when the network allows), loaded with `weights_only=True`. The
architecture is read from the weights (ViT-S/B/L/14); FD-DINOv2 as EDM2 reports it is ViT-L/14.
"""
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eval.features.base import PRECISIONS, Features, find_weights, precision_context, register_extractor, to_channels

WEIGHTS_ENV = "DIT_DINOV2_WEIGHTS"
WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
PATCH_SIZE = 14
PRETRAIN_SIZE = 518  # the position embeddings' grid: 518 / 14 = 37 patches a side
INPUT_SIZE = 224  # EDM2 resizes every image to 224 x 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INTERPOLATE_OFFSET = 0.1  # DINO's offset on the position-embedding scale factor (kept by DINOv2's hub models)
LAYER_NORM_EPS = 1e-6
# width -> (depth, heads) of the ViT/14 sizes DINOv2 ships with an MLP (ViT-g/14 uses SwiGLU and is not built)
ARCHITECTURES = {384: (12, 6), 768: (12, 12), 1024: (24, 16)}
DEFAULT_WIDTH = 1024  # ViT-L/14


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = (
            self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )  # (N, H, T, d/H) each
        x = F.scaled_dot_product_attention(q, k, v)  # (N, H, T, d/H)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))  # (N, T, D)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2, 4x wide."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """A learned per-channel gain on a residual branch (Touvron et al. 2021)."""

    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.attn, self.ls1 = (
            nn.LayerNorm(width, eps=LAYER_NORM_EPS),
            Attention(width, heads),
            LayerScale(width),
        )
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS), Mlp(width), LayerScale(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))  # (N, T, D)
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """14 x 14 patches -> tokens by one strided convolution."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


class DinoVisionTransformer(nn.Module):
    """DINOv2's ViT/14 backbone: normalised float images (N, 3, H, W) -> class token (N, D) after the final norm."""

    def __init__(self, width: int = DEFAULT_WIDTH):
        super().__init__()
        if width not in ARCHITECTURES:
            raise ValueError(f"no DINOv2 ViT/14 of width {width}; widths: {', '.join(map(str, ARCHITECTURES))}")
        depth, heads = ARCHITECTURES[width]
        grid = PRETRAIN_SIZE // PATCH_SIZE
        self.patch_embed = PatchEmbed(width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, width))
        self.mask_token = nn.Parameter(torch.zeros(1, width))  # used in DINOv2's training only; in its checkpoints
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The class token's embedding and the 37 x 37 patch grid's, resized to h x w patches -> (1, 1 + h*w, D)."""
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:].float()  # (1, 1, D), (1, 37*37, D)
        grid, d = math.isqrt(patches.shape[1]), patches.shape[2]
        if (h, w) == (grid, grid):
            return self.pos_embed
        patches = patches.reshape(1, grid, grid, d).permute(0, 3, 1, 2)  # (1, D, 37, 37)
        scale = ((h + INTERPOLATE_OFFSET) / grid, (w + INTERPOLATE_OFFSET) / grid)
        patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", antialias=False)  # (1, D, h, w)
        patches = patches.permute(0, 2, 3, 1).reshape(1, h * w, d).to(cls.dtype)
        return torch.cat([cls, patches], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        x = self.patch_embed(x)  # (N, h*w, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (N, 1 + h*w, D)
        x = x + self.position_embedding(h, w)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]  # (N, D) the class token


class DINOv2Features(nn.Module):
    """uint8 images (N, C, H, W), any size, C in {1, 3} -> Features(pool = class token (N, D); no spatial, no
    logits)."""

    name, channels = "dinov2", 3
    classifies_labels = False

    def __init__(self, net: DinoVisionTransformer, precision: str = "fp32"):
        super().__init__()
        PRECISIONS.check(precision)
        self.net, self.precision = net, precision
        self.dims = {"pool": net.norm.normalized_shape[0], "spatial": 0, "logits": 0}
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Features:
        x = to_channels(x, 3).float()  # (N, 3, H, W) in [0, 255]
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bicubic", antialias=True)  # (N, 3, 224, 224)
        x = (x / 255 - self.mean) / self.std
        with precision_context(self.precision, x.device):
            pool = self.net(x).float()  # (N, D)
        empty = pool.new_zeros(pool.shape[0], 0)
        return Features(pool, empty, empty)


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    """The DINOv2 weights file: `path`, else $DIT_DINOV2_WEIGHTS, else the hub cache (downloading ViT-L/14's)."""
    return find_weights(path, env=WEIGHTS_ENV, url=WEIGHTS_URL, what="DINOv2", option="--dinov2-weights")


def load_network(weights: Path) -> DinoVisionTransformer:
    """The ViT whose width and depth the state dict in `weights` has, with those weights (weights_only=True)."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net = DinoVisionTransformer(state["cls_token"].shape[-1])
        net.load_state_dict(state)
    except Exception as exc:  # unpickling errors, truncated files, state dicts of other networks
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ValueError(f"cannot load DINOv2 weights {weights} ({type(exc).__name__}: {first}); "
                         f"expected Meta's {WEIGHTS_URL.rsplit('/', 1)[-1]}") from None
    return net


def random_dinov2_weights(path, width: int = DEFAULT_WIDTH, seed: int = 0) -> Path:
    """Save random weights of a DINOv2 ViT/14 of `width` to `path` (for tests and offline benchmarks)."""
    from dit.io import atomic_torch_save

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = DinoVisionTransformer(width)
        for name, p in net.named_parameters():
            if name.endswith("gamma") or "norm" in name:
                continue  # unit gains, zero biases
            nn.init.trunc_normal_(p, std=0.02)
    atomic_torch_save(net.state_dict(), path)
    return Path(path)


def build(device="cpu", *, weights=None, precision: str = "fp32") -> DINOv2Features:
    """The `dinov2` extractor on `device`, with weights from `resolve_weights(weights)`."""
    return DINOv2Features(load_network(resolve_weights(weights)), precision).to(device).eval()


register_extractor("dinov2", dims={"pool": DEFAULT_WIDTH, "spatial": 0, "logits": 0}, build=build)  # FD-DINOv2 (EDM2)
