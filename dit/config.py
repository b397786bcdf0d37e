"""The training configuration: one frozen dataclass, saved as config.json in every run directory.

Defaults are the paper's recipe (Sec. 4): AdamW, lr 1e-4, no weight decay, global batch 256,
EMA decay 0.9999, label dropout 0.1, T = 1000 with the linear schedule, learned sigma.
"""
import dataclasses
import math
from pathlib import Path

from dit.blocks import ATTENTION_IMPLS, BLOCKS
from dit.diffusion import NOISE_SCHEDULES, NUM_TRAIN_TIMESTEPS
from dit.ema import DEFAULT_SIGMA_RELS, SNAPSHOT_DTYPES, check_sigma_rel
from dit.io import read_text
from dit.latents import CODECS
from dit.loggers import LOGGERS
from dit.parametrization import PARAMETRIZATIONS
from dit.schedules import LR_SCHEDULES
from study.blocks import DEFAULT_BLOCK
from study.registry import Registry
from study.typed import TypedReader, mapping_keys

PRECISIONS = Registry("precision", ("fp32", "bf16"))  # of training and sampling (bf16: autocast)
SNAPSHOT_PRECISIONS = Registry("EMA snapshot precision", tuple(SNAPSHOT_DTYPES))
DEFAULT_VAE = "stabilityai/sd-vae-ft-ema"
MAX_IMAGE_SIDE = 8192  # pixels or latents: one 8192 px RGB image is already 768 MiB of float32 activations

# Options that may differ when a run is resumed: they change speed or bookkeeping, not the result.
RESUMABLE_CHANGES = {
    "steps", "device", "num_workers", "compile", "log_every", "ckpt_every", "keep_last", "keep_every",
    "sample_every", "fused_optimizer", "fused_ema", "grad_checkpointing", "tf32", "loggers",
    "checkpoint_blocks", "micro_batch_size", "ema_snapshot_every", "ema_snapshot_precision",
}

# The valid range of each numeric option (TrainConfig.__post_init__ checks them all).
AT_LEAST = {
    "steps": 1, "batch_size": 1, "log_every": 1, "ckpt_every": 1, "keep_last": 1, "diffusion_steps": 1,
    "sample_images": 1, "sample_steps": 1, "warmup_steps": 0, "num_workers": 0, "seed": 0, "sample_cfg_scale": 1,
    "ema_snapshot_every": 1,
}
AT_LEAST_ONE_OR_UNSET = {  # option -> what leaving it out means
    "depth": "the named size's", "hidden_size": "the named size's", "num_heads": "the named size's",
    "resolution": "the data set's own", "keep_every": "no checkpoints kept beyond keep_last",
    "sample_every": "a sample grid at each checkpoint", "micro_batch_size": "each rank's batch in one pass",
    "base_width": "the model's own width (μP)",
}
INTERVALS = {  # option -> (test, the interval it tests)
    "lr": (lambda v: 0 < v < 1, "(0, 1)"),
    "ema_decay": (lambda v: 0 <= v < 1, "[0, 1)"),
    "class_dropout_prob": (lambda v: 0 <= v < 1, "[0, 1)"),
    "weight_decay": (lambda v: 0 <= v <= 1, "[0, 1]"),  # AdamW multiplies weights by 1 - lr * weight_decay each step
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # model
    model: str = "DiT-XL/2"
    block: str = DEFAULT_BLOCK
    depth: int | None = None  # overrides of the named size, needed for DiT-custom/<p>
    hidden_size: int | None = None
    num_heads: int | None = None
    attention: str = "sdpa"
    init: str | None = None  # start from these weights at step 0 (any checkpoint, diffusers folder or .safetensors)
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
    micro_batch_size: int | None = None  # gradient accumulation: each rank's rows in chunks of this many (same result)
    lr: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # the paper does not clip
    ema_decay: float = 0.9999  # the classic EMA: the model sampled and evaluated
    # power-function EMA profiles tracked beside it (EDM2), snapshotted for `scaling ema`; () for none
    ema_sigma_rels: tuple[float, ...] = DEFAULT_SIGMA_RELS
    ema_snapshot_every: int = 10_000  # steps between snapshots of the profiles (and one at the last step)
    ema_snapshot_precision: str = "fp16"  # of the snapshots (the profiles themselves stay float32)
    seed: int = 0
    parametrization: str = "sp"  # "sp" (the paper's) or "mup": μP, whose lr transfers across widths
    base_width: int | None = None  # μP's base width: the width the lr was tuned at (None: the model's own)
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
    grad_checkpointing: bool = False  # recompute every block's activations in backward ...
    checkpoint_blocks: int | None = None  # ... or only the first K blocks' (given, it wins)
    num_workers: int = 4
    # experiment tracking beside train-log.jsonl: "tensorboard", "wandb" (extras: pip install "dit-scaling[wandb]")
    loggers: tuple[str, ...] = ()

    def __post_init__(self):
        names = (self.loggers,) if isinstance(self.loggers, str) else self.loggers  # a YAML/JSON list, or one name
        object.__setattr__(self, "loggers", tuple(dict.fromkeys(LOGGERS.check(n) for n in names)))  # in order, once
        object.__setattr__(self, "ema_sigma_rels", tuple(float(s) for s in self.ema_sigma_rels))
        for sigma_rel in self.ema_sigma_rels:
            check_sigma_rel(sigma_rel)
        if len(set(self.ema_sigma_rels)) < len(self.ema_sigma_rels):
            raise ValueError(f"ema_sigma_rels {list(self.ema_sigma_rels)} repeat a length; list distinct ones")
        registries = {
            "block": BLOCKS, "attention": ATTENTION_IMPLS, "codec": CODECS, "precision": PRECISIONS,
            "noise_schedule": NOISE_SCHEDULES, "lr_schedule": LR_SCHEDULES, "parametrization": PARAMETRIZATIONS,
            "ema_snapshot_precision": SNAPSHOT_PRECISIONS,
        }
        for name, registry in registries.items():
            registry.check(getattr(self, name), what=name)
        self._check_finite_and_sizes()
        self._check_ranges()

    def _check_finite_and_sizes(self):
        """Refuse NaN or infinite numbers (no range check can see them) and images too large for any GPU."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number (got {value}); give a number or leave it out")
        if self.resolution is not None and self.resolution > MAX_IMAGE_SIDE:
            raise ValueError(f"resolution {self.resolution} is above the {MAX_IMAGE_SIDE} px that fit a GPU; choose a "
                             f"smaller one, e.g. 256")

    def _check_ranges(self):
        """Refuse numbers outside what training can use, with the fix in the message."""
        for name, low in AT_LEAST.items():
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low} (got {getattr(self, name)})")
        for name, unset in AT_LEAST_ONE_OR_UNSET.items():
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (got {getattr(self, name)}); leave it out for {unset}")
        for name, (inside, interval) in INTERVALS.items():
            if not inside(getattr(self, name)):
                raise ValueError(f"{name} {getattr(self, name)} is outside {interval}")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(f"micro_batch_size {self.micro_batch_size} does not divide batch_size {self.batch_size}; "
                             f"choose a divisor of each process's share of the batch")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be above 0 (got {self.max_grad_norm}: below 0 the clip would reverse "
                             f"the gradient); leave it out for no clipping, as the paper")
        if self.checkpoint_blocks is not None and self.checkpoint_blocks < 0:
            raise ValueError(f"checkpoint_blocks must be at least 0 (got {self.checkpoint_blocks}); leave it out "
                             f"for grad_checkpointing's all or none")

    def checkpointed_blocks(self, depth: int) -> int:
        """How many of a `depth`-block model's first blocks recompute their activations in backward
        (checkpoint_blocks when given, else all or none as grad_checkpointing says)."""
        if self.checkpoint_blocks is None:
            return depth if self.grad_checkpointing else 0
        return self.checkpoint_blocks

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def recipe_difference(stored: dict, new: dict) -> str | None:
    """The first training option, in both and not resumable, that differs ("seed=7, not 0"); None when none does."""
    changed = [k for k in new if k not in RESUMABLE_CHANGES and k in stored and stored[k] != new[k]]
    return f"{changed[0]}={stored[changed[0]]!r}, not {new[changed[0]]!r}" if changed else None


def run_identity(train: dict, model: dict) -> str:
    """A hash of what makes a run itself: its model and every training option a resume may not change."""
    import hashlib
    import json

    recipe = {k: v for k, v in train.items() if k not in RESUMABLE_CHANGES}
    text = json.dumps({"train": recipe, "model": model}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_from_dict(fields: dict) -> TrainConfig:
    """TrainConfig from a dict, naming unknown keys and the valid ones."""
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(fields) - valid)
    if unknown:
        raise ValueError(f"unknown training option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}")
    return TrainConfig(**fields)


def read_options(path) -> dict:
    """The training options in a JSON or YAML file (a run's config.json keeps them under "train"), each of its
    field's type, read as grid files are: a wrong value fails in one line naming the file, its line and the key."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"config file {path} {problem}; give a JSON or YAML file of training options")
    reader = TypedReader(f"config file {path}")
    root = reader.compose(read_text(path, what="config file", expected="a JSON or YAML file of training options"))
    if root is None:
        raise ValueError(f"config file {path} is empty; give training options such as `steps: 1000`")
    section = mapping_keys(root).get("train")
    node = section[1] if section else root
    return reader.fields(TrainConfig, node, "train" if section else "")[0]
