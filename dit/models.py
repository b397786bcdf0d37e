"""Diffusion Transformer (DiT), Peebles & Xie, "Scalable Diffusion Models with Transformers" (2023).

The adaLN-Zero model keeps the official release's parameter names and shapes, so its checkpoints
(`DiT-XL-2-256x256.pt`, ...) load with `strict=True` and give the same outputs.
"""
import dataclasses
import re

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dit.blocks import ATTENTION_IMPLS, BLOCKS, AdaptiveFinalLayer, PlainFinalLayer
from dit.embeddings import LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_2d
from dit.parametrization import TIMESTEP_STD, attention_scale, check_parametrization, mup_init_, width_mult
from study.blocks import ADALN_ZERO, DEFAULT_BLOCK
from study.registry import Registry

# name -> (depth, hidden size, heads). S/B/L/XL are the paper's Table 1; T and M are tiny sizes
# for CPU work (the offline demo and the tests), listed beside them.
MODEL_SIZES = Registry("model size", {
    "T": (4, 128, 4),
    "M": (6, 192, 6),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
})
PAPER_SIZES = ("S", "B", "L", "XL")
PAPER_PATCH_SIZES = (2, 4, 8)
CUSTOM_SIZE = "custom"
MAX_TOKENS = 65_536  # 256 x 256 patches: beyond it the attention of one sample outgrows a GPU

_NAME_PATTERN = re.compile(r"^DiT-(?P<size>[A-Za-z]+)/(?P<patch>\d+)$")


def parse_model_name(name: str) -> tuple[str, int]:
    """'DiT-XL/2' -> ('XL', 2). Raises ValueError naming the valid choices."""
    match = _NAME_PATTERN.match(name.strip())
    if not match:
        raise ValueError(f"model name {name!r} is not of the form DiT-<size>/<patch> "
                         f"(sizes: {', '.join(MODEL_SIZES)}), e.g. DiT-XL/2")
    size, patch = match["size"], int(match["patch"])
    if size not in MODEL_SIZES and size != CUSTOM_SIZE:
        raise MODEL_SIZES.error(size, where=f" in {name!r}")
    return size, patch


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """Everything that fixes a DiT's architecture; saved with every checkpoint."""

    size: str = "XL"
    patch_size: int = 2
    depth: int = 28
    hidden_size: int = 1152
    num_heads: int = 16
    mlp_ratio: float = 4.0
    input_size: int = 32
    in_channels: int = 4
    num_classes: int = 1000
    block: str = DEFAULT_BLOCK
    learn_sigma: bool = True
    class_dropout_prob: float = 0.1
    attention: str = "sdpa"
    parametrization: str = "sp"  # or "mup" (dit.parametrization)
    base_width: int | None = None  # μP's base width; None: the model's own width (sp: unused, kept None)

    def __post_init__(self):
        BLOCKS.check(self.block)
        ATTENTION_IMPLS.check(self.attention)
        check_parametrization(self.parametrization, self.base_width, self.hidden_size)
        if self.parametrization == "mup" and self.base_width is None:
            object.__setattr__(self, "base_width", self.hidden_size)
        if self.input_size < 1:
            raise ValueError(f"input size must be at least 1 (got {self.input_size}); give the latent or pixel side, "
                             f"e.g. 32 (256 px through the SD VAE)")
        if self.patch_size < 1 or self.input_size % self.patch_size:
            raise ValueError(
                f"patch size {self.patch_size} does not divide input size {self.input_size}; "
                f"choose a patch size that divides it (the paper uses {PAPER_PATCH_SIZES})"
            )
        if min(self.depth, self.hidden_size, self.num_heads, self.in_channels, self.num_classes) < 1:
            raise ValueError("depth, hidden_size, num_heads, in_channels and num_classes must all be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"{self.num_heads} heads do not divide width {self.hidden_size}; "
                f"choose heads among the divisors of the width"
            )
        if self.num_tokens > MAX_TOKENS:
            raise ValueError(f"{self.name} at input size {self.input_size} has {self.num_tokens:,} tokens, more than "
                             f"the {MAX_TOKENS:,} a GPU's memory holds; choose a smaller input size or a larger patch")
        if self.hidden_size % 4:
            raise ValueError(
                f"width {self.hidden_size} must be divisible by 4 for the 2-D sine-cosine position embedding"
            )

    @property
    def name(self) -> str:
        return f"DiT-{self.size}/{self.patch_size}"

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def num_tokens(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @property
    def attention_scale(self) -> float | None:
        """μP's attention logit scale, or None for the standard 1 / sqrt(head dim)."""
        if self.parametrization == "sp":
            return None
        return attention_scale(self.hidden_size, self.num_heads, self.base_width)

    @property
    def readout_mult(self) -> float:
        """The multiplier of the final linear layer's input: 1 / m under μP, 1 in SP."""
        return 1.0 if self.parametrization == "sp" else 1.0 / width_mult(self.hidden_size, self.base_width)


def dit_config(name: str, **overrides) -> DiTConfig:
    """The config of a named model ('DiT-B/4'), with keyword overrides (input_size, block, depth, ...).

    'DiT-custom/<p>' needs depth, hidden_size and num_heads given explicitly.
    """
    size, patch = parse_model_name(name)
    if size == CUSTOM_SIZE:
        missing = [k for k in ("depth", "hidden_size", "num_heads") if overrides.get(k) is None]
        if missing:
            raise ValueError(f"{name} needs {', '.join(missing)} given explicitly")
        arch = {}
    else:
        depth, width, heads = MODEL_SIZES[size]
        arch = dict(depth=depth, hidden_size=width, num_heads=heads)
    arch.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name for f in dataclasses.fields(DiTConfig)}
    unknown = set(arch) - fields
    if unknown:
        raise ValueError(f"unknown DiT option(s) {sorted(unknown)}; valid: {sorted(fields)}")
    return DiTConfig(size=size, patch_size=patch, **arch)


class DiT(nn.Module):
    """Diffusion model with a Transformer backbone over patches of a (latent) image.

    forward(x, t, y): x (N, C, H, W) noisy input, t (N,) timesteps, y (N,) class labels
    -> (N, C_out, H, W): predicted noise, and with learned sigma the C variance interpolation values.
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c = config
        self.checkpoint_blocks = 0  # activation checkpointing of the first K blocks in training (set_checkpointing)
        self.x_embedder = PatchEmbed(c.input_size, c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        self.y_embedder = LabelEmbedder(c.num_classes, c.hidden_size, c.class_dropout_prob)
        # Fixed sine-cosine position embedding, kept as a frozen parameter as in the official release.
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_tokens, c.hidden_size), requires_grad=False)
        block_cls = BLOCKS[c.block]
        self.conditioning = block_cls.conditioning
        self.blocks = nn.ModuleList(
            [block_cls(c.hidden_size, c.num_heads, c.mlp_ratio, c.attention, c.attention_scale) for _ in range(c.depth)]
        )
        final_cls = AdaptiveFinalLayer if self.conditioning == "vector" else PlainFinalLayer
        self.final_layer = final_cls(c.hidden_size, c.patch_size, c.out_channels, c.readout_mult)
        self.initialize_weights()

    def initialize_weights(self):
        """The paper's initialisation (Sec. 3.2): xavier-uniform linears with zero biases, N(0, 0.02)
        label table and timestep MLP, zeroed adaLN modulation and final linear layer; rescaled to μP's
        (dit.parametrization) when the model is parametrized so."""

        def basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(basic_init)
        grid = int(self.config.num_tokens**0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_2d(self.config.hidden_size, grid)).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data  # (D, C, p, p): initialised like a linear layer
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=TIMESTEP_STD)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=TIMESTEP_STD)
        if self.config.block == ADALN_ZERO:
            for block in self.blocks:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
        if isinstance(self.final_layer, AdaptiveFinalLayer):
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.config.parametrization == "mup":
            mup_init_(self, self.config.hidden_size, self.config.base_width)

    def set_checkpointing(self, blocks: int):
        """Recompute the activations of the first `blocks` blocks in backward instead of keeping them
        (0: none, depth: all); the earliest blocks go first, so a count trades memory for time in even steps."""
        if not 0 <= blocks <= self.config.depth:
            raise ValueError(f"cannot checkpoint {blocks} blocks of a {self.config.depth}-block model; "
                             f"choose 0 to {self.config.depth}")
        self.checkpoint_blocks = blocks

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, p*p*C) -> (N, C, H, W)."""
        c, p = self.config.out_channels, self.config.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)  # (N, h, w, p, p, C)
        x = torch.einsum("nhwpqc->nchpwq", x)  # (N, C, h, p, w, p)
        return x.reshape(x.shape[0], c, h * p, w * p)  # (N, C, H, W)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """force_drop_ids (N,): 1 where the label is replaced by the null class, instead of random dropout."""
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        t_emb = self.t_embedder(t)  # (N, D)
        y_emb = self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
        c = t_emb + y_emb  # (N, D)
        cond = c
        if self.conditioning == "tokens":
            x = torch.cat([x, t_emb.unsqueeze(1), y_emb.unsqueeze(1)], dim=1)  # (N, T+2, D)
        elif self.conditioning == "sequence":
            cond = torch.stack([t_emb, y_emb], dim=1)  # (N, 2, D)
        for i, block in enumerate(self.blocks):
            if self.training and i < self.checkpoint_blocks:  # recomputed in backward: memory for time
                x = checkpoint(block, x, cond, use_reentrant=False)
            else:
                x = block(x, cond)  # (N, T, D)
        if self.conditioning == "tokens":
            x = x[:, :-2]  # (N, T, D): the two condition tokens are dropped after the last block
        x = self.final_layer(x, c)  # (N, T, p*p*C_out)
        return self.unpatchify(x)  # (N, C_out, H, W)

    def forward_with_cfg(self, x, t, y, cfg_scale: float, guidance_channels: int | None = None):
        """Classifier-free guidance in one batched pass (Ho & Salimans 2022).

        The batch is [x, x] with labels [y, null]: the first half conditional, the second unconditional.
        eps = eps_uncond + s * (eps_cond - eps_uncond) on the first `guidance_channels` noise
        channels (all of them by default; the official release guides only the first 3 of 4, pass
        guidance_channels=3 to reproduce its samples exactly). Variance channels come from each half.
        """
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)  # (N, C_out, H, W)
        k = self.config.in_channels if guidance_channels is None else guidance_channels
        eps, rest = out[:, :k], out[:, k:]
        cond_eps, uncond_eps = eps.split(len(eps) // 2, dim=0)
        guided = uncond_eps + cfg_scale * (cond_eps - uncond_eps)  # (N/2, k, H, W)
        return torch.cat([torch.cat([guided, guided], dim=0), rest], dim=1)  # (N, C_out, H, W)


def create_dit(
    name: str,
    *,
    input_size: int = 32,
    in_channels: int = 4,
    num_classes: int = 1000,
    block: str = DEFAULT_BLOCK,
    learn_sigma: bool = True,
    class_dropout_prob: float = 0.1,
    attention: str = "sdpa",
    parametrization: str = "sp",
    base_width: int | None = None,
    **arch,
) -> DiT:
    """Build a DiT by its paper name, e.g. create_dit("DiT-XL/2") for 256 px ImageNet latents.

    `arch` may override depth, hidden_size, num_heads or mlp_ratio (required for 'DiT-custom/<p>').
    """
    config = dit_config(
        name,
        input_size=input_size,
        in_channels=in_channels,
        num_classes=num_classes,
        block=block,
        learn_sigma=learn_sigma,
        class_dropout_prob=class_dropout_prob,
        attention=attention,
        parametrization=parametrization,
        base_width=base_width,
        **arch,
    )
    return DiT(config)


def count_params(model: nn.Module) -> int:
    """All parameters, the frozen position embedding included, as the paper's counts are."""
    return sum(p.numel() for p in model.parameters())
