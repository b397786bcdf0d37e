"""The training configuration: one frozen dataclass, saved as config.json in every run directory.

Defaults are the paper's recipe (Sec. 4): AdamW, lr 1e-4, no weight decay, global batch 256,
EMA decay 0.9999, label dropout 0.1, T = 1000 with the linear schedule, learned sigma.
"""
import dataclasses
import json
from pathlib import Path

import yaml

from dit.blocks import ATTENTION_IMPLS, BLOCKS
from dit.diffusion import NOISE_SCHEDULES, NUM_TRAIN_TIMESTEPS
from dit.latents import CODECS
from dit.schedules import LR_SCHEDULES

PRECISIONS = ("fp32", "bf16")
DEFAULT_VAE = "stabilityai/sd-vae-ft-ema"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # model
    model: str = "DiT-XL/2"
    block: str = "adaln-zero"
    depth: int | None = None  # overrides of the named size, needed for DiT-custom/<p>
    hidden_size: int | None = None
    num_heads: int | None = None
    attention: str = "sdpa"
    # data: "mnist32", an image folder (class_name/*.JPEG) or a latent cache from `scaling encode`
    data: str = "mnist32"
    resolution: int | None = None  # image side; None = the data set's own
    codec: str = "identity"  # "sd-vae" encodes images on the fly (a latent cache needs "identity")
    vae: str = DEFAULT_VAE
    # diffusion
    noise_schedule: str = "linear"
    diffusion_steps: int = NUM_TRAIN_TIMESTEPS
    learn_sigma: bool = True
    class_dropout_prob: float = 0.1
    # optimisation
    steps: int = 400_000
    batch_size: int = 256  # global, split across ranks
    lr: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # the paper does not clip
    ema_decay: float = 0.9999
    seed: int = 0
    # bookkeeping
    log_every: int = 100
    ckpt_every: int = 50_000
    keep_last: int = 2  # most recent checkpoints kept ...
    keep_every: int | None = None  # ... plus every checkpoint at a multiple of this (evaluation points)
    sample_every: int | None = None  # EMA sample grid every N steps (None: at checkpoints)
    sample_images: int = 16
    sample_steps: int = 50
    sample_cfg_scale: float = 4.0
    # speed (each switchable; defaults are the fast path, all no-ops on CPU except bf16)
    device: str = "auto"
    precision: str = "fp32"
    tf32: bool = True
    compile: bool = False
    fused_optimizer: bool = True
    fused_ema: bool = True
    grad_checkpointing: bool = False
    num_workers: int = 4

    def __post_init__(self):
        choices = {
            "block": BLOCKS, "attention": ATTENTION_IMPLS, "codec": CODECS, "precision": PRECISIONS,
            "noise_schedule": NOISE_SCHEDULES, "lr_schedule": LR_SCHEDULES,
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(valid)}")
        positive = ("steps", "batch_size", "log_every", "ckpt_every", "keep_last", "diffusion_steps", "sample_images", "sample_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr {self.lr} is outside (0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay {self.ema_decay} is outside [0, 1)")
        if not 0 <= self.class_dropout_prob < 1:
            raise ValueError(f"class_dropout_prob {self.class_dropout_prob} is outside [0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def config_from_dict(fields: dict) -> TrainConfig:
    """TrainConfig from a dict, naming unknown keys and the valid ones."""
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(f"unknown training option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}")
    return TrainConfig(**fields)


def read_options(path) -> dict:
    """The training options in a JSON or YAML file (a run's config.json keeps them under "train")."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        fields = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path} must hold a mapping of training options")
    fields = fields.get("train", fields)
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(f"{path}: unknown training option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}")
    return fields

