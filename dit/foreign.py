"""Foreign checkpoints: diffusers' DiT folders and plain safetensors files, their layout and reading them.

diffusers' `DiTTransformer2DModel` is the adaLN-Zero DiT with other parameter names. The official
(and our) names map onto it one to one, except that
- the fused `attn.qkv` projection is split into `attn1.to_q`, `to_k`, `to_v` (rows in that order);
- every diffusers block owns a copy of the timestep and label embedders (`norm1.emb`); the official
  model has one, so it is copied into every block on export and read from block 0 on import (all
  blocks must hold the same copy);
- the fixed sine-cosine `pos_embed` is not stored by diffusers (it recomputes it).
diffusers embeds timesteps with frequencies exp(-ln(10^4) k / 127) where the official DiT uses k / 128
(`downscale_freq_shift=1`): at t = 0 the two models agree, elsewhere diffusers runs a slightly
different model on the same weights (README "diffusers and safetensors" gives the measured effect).
Importing a diffusers folder into our DiT gives the official model's behaviour.

A safetensors file holds the official-layout state dict (EMA weights) and, under the metadata key
`dit_scaling`, our run config as JSON (`{"model": DiTConfig fields, "train": ..., "class_names": ...}`).
"""
import dataclasses
import json
from pathlib import Path

import torch

from dit.config import DEFAULT_VAE
from dit.embeddings import sincos_2d
from dit.io import load_tensors, read_json
from dit.models import MODEL_SIZES, DiTConfig
from study.blocks import ADALN_ZERO

METADATA_KEY = "dit_scaling"  # safetensors metadata entry, and the JSON file beside a diffusers config.json
RUN_CONFIG_NAME = f"{METADATA_KEY}.json"
DIFFUSERS_CLASSES = ("DiTTransformer2DModel", "Transformer2DModel")  # the released folders name the generic class
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DIFFUSERS_NORM_EPS = 1e-6  # the LayerNorm before each MLP; diffusers' default 1e-5 differs from DiT's 1e-6

# Our (official) parameter prefix -> diffusers' prefix; "{i}" is the block index.
RENAMES = {
    "x_embedder.proj": "pos_embed.proj",
    "final_layer.linear": "proj_out_2",
    "final_layer.adaLN_modulation.1": "proj_out_1",
    "blocks.{i}.attn.proj": "transformer_blocks.{i}.attn1.to_out.0",
    "blocks.{i}.mlp.fc1": "transformer_blocks.{i}.ff.net.0.proj",
    "blocks.{i}.mlp.fc2": "transformer_blocks.{i}.ff.net.2",
    "blocks.{i}.adaLN_modulation.1": "transformer_blocks.{i}.norm1.linear",
}
# Shared embedders of the official model -> the copy inside every diffusers block.
EMBEDDERS = {
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
    "y_embedder.embedding_table": "norm1.emb.class_embedder.embedding_table",
}
QKV_SPLIT = ("to_q", "to_k", "to_v")
# diffusers options that DiT fixes (a folder may omit them: these are also diffusers' defaults).
DIT_FIXED = {"activation_fn": "gelu-approximate", "attention_bias": True, "norm_elementwise_affine": False}


# ---- configs -----------------------------------------------------------------------------------
def check_expressible(config: DiTConfig):
    """ValueError in one line when diffusers' DiTTransformer2DModel cannot hold this model."""
    if config.block != ADALN_ZERO:
        raise ValueError(
            f"diffusers has no class for the {config.block} block (DiTTransformer2DModel is adaLN-Zero only); "
            f"export this model with --format safetensors"
        )
    if config.mlp_ratio != 4.0:
        raise ValueError(
            f"diffusers' DiT has MLP ratio 4, this model {config.mlp_ratio:g}; export it with --format safetensors"
        )
    if config.class_dropout_prob <= 0:
        raise ValueError("diffusers' DiT always has a null-class row (label dropout > 0), this model has none; "
                         "export it with --format safetensors")


def diffusers_config(config: DiTConfig) -> dict:
    """The DiTTransformer2DModel arguments of an (expressible) adaLN-Zero DiT."""
    return dict(
        num_attention_heads=config.num_heads, attention_head_dim=config.hidden_size // config.num_heads,
        in_channels=config.in_channels, out_channels=config.out_channels, num_layers=config.depth,
        sample_size=config.input_size, patch_size=config.patch_size, num_embeds_ada_norm=config.num_classes,
        dropout=0.0, norm_type="ada_norm_zero", norm_eps=DIFFUSERS_NORM_EPS, upcast_attention=False, **DIT_FIXED,
    )


DIFFUSERS_KEYS = ("num_attention_heads", "attention_head_dim", "in_channels", "num_layers", "patch_size",
                  "sample_size", "num_embeds_ada_norm")  # what config_from_diffusers reads


def config_from_diffusers(cfg: dict, where) -> DiTConfig:
    """Our DiTConfig of a diffusers transformer config.json; ValueError naming the model type otherwise."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: its config.json holds a {type(cfg).__name__}, not a model config; give a DiT "
                         f"folder such as facebook/DiT-XL-2-256's")
    kind = cfg.get("_class_name")
    if kind not in DIFFUSERS_CLASSES or cfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
        raise ValueError(
            f"{where} holds a diffusers {kind} ({cfg.get('norm_type')}), not a DiT (DiTTransformer2DModel, "
            f"norm_type ada_norm_zero); give a DiT folder such as facebook/DiT-XL-2-256's"
        )
    variant = {k: cfg.get(k, v) for k, v in DIT_FIXED.items()}
    if variant != DIT_FIXED:
        raise ValueError(f"{where}: a DiT variant with {variant} has no counterpart here (DiT: {DIT_FIXED})")
    missing = [k for k in DIFFUSERS_KEYS if not isinstance(cfg.get(k), int)]
    if missing:
        raise ValueError(f"{where}: its config.json lacks {', '.join(missing)} (whole numbers); give a folder that "
                         f"save_pretrained wrote whole")
    heads, in_channels = cfg["num_attention_heads"], cfg["in_channels"]
    hidden, depth = heads * cfg["attention_head_dim"], cfg["num_layers"]
    out_channels = cfg.get("out_channels") or in_channels
    if out_channels not in (in_channels, 2 * in_channels):
        raise ValueError(f"{where}: {out_channels} output channels for {in_channels} input channels; DiT has C or 2C")
    size = next((name for name, dims in MODEL_SIZES.items() if dims == (depth, hidden, heads)), "custom")
    return DiTConfig(size=size, patch_size=cfg["patch_size"], depth=depth, hidden_size=hidden, num_heads=heads,
                     input_size=cfg["sample_size"], in_channels=in_channels, num_classes=cfg["num_embeds_ada_norm"],
                     learn_sigma=out_channels == 2 * in_channels)


def official_run_config(config: DiTConfig, vae: str = DEFAULT_VAE, class_names=()) -> dict:
    """The run config of weights that come without one: an SD-VAE latent model, linear schedule (the paper's)."""
    train = {"codec": "sd-vae", "vae": vae, "noise_schedule": "linear"}
    return {"model": dataclasses.asdict(config), "train": train, "class_names": list(class_names)}


# ---- state dicts -------------------------------------------------------------------------------
def _renames(depth: int) -> list[tuple[str, str]]:
    pairs = [(a, b) for a, b in RENAMES.items() if "{i}" not in a]
    return pairs + [(a.format(i=i), b.format(i=i)) for i in range(depth) for a, b in RENAMES.items() if "{i}" in a]


def _under(state: dict, prefix: str) -> dict:
    """{suffix: tensor} of the parameters under `prefix.`."""
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def to_diffusers_state(state: dict, config: DiTConfig) -> dict:
    """Official-layout state dict -> DiTTransformer2DModel's (tensors cloned, none shared)."""
    check_expressible(config)
    expected_pos = torch.from_numpy(sincos_2d(config.hidden_size, config.input_size // config.patch_size)).float()
    if not torch.equal(state["pos_embed"].cpu().reshape(expected_pos.shape), expected_pos):
        raise ValueError(
            "pos_embed is not DiT's fixed sine-cosine table, which diffusers recomputes; export with --format "
            "safetensors"
        )
    out = {}
    for ours, theirs in _renames(config.depth):
        out.update({f"{theirs}.{s}": v.clone() for s, v in _under(state, ours).items()})
    for i in range(config.depth):
        for ours, theirs in EMBEDDERS.items():
            out.update({f"transformer_blocks.{i}.{theirs}.{s}": v.clone() for s, v in _under(state, ours).items()})
        for s, fused in _under(state, f"blocks.{i}.attn.qkv").items():
            for name, part in zip(QKV_SPLIT, fused.chunk(3, dim=0), strict=True):
                out[f"transformer_blocks.{i}.attn1.{name}.{s}"] = part.clone()
    return out


def from_diffusers_state(state: dict, config: DiTConfig) -> dict:
    """DiTTransformer2DModel's state dict -> the official layout; ValueError if the blocks' embedders differ."""
    out = {}
    for ours, theirs in _renames(config.depth):
        out.update({f"{ours}.{s}": v for s, v in _under(state, theirs).items()})
    for ours, theirs in EMBEDDERS.items():
        first = _under(state, f"transformer_blocks.0.{theirs}")
        for i in range(1, config.depth):
            copy = _under(state, f"transformer_blocks.{i}.{theirs}")
            if copy.keys() != first.keys() or not all(torch.equal(copy[s], first[s]) for s in first):
                raise ValueError(f"block {i} of this diffusers DiT has its own {theirs}; the official DiT shares one "
                                 f"embedder, so these weights cannot be imported")
        out.update({f"{ours}.{s}": v for s, v in first.items()})
    for i in range(config.depth):
        for s in ("weight", "bias"):
            parts = [state[f"transformer_blocks.{i}.attn1.{name}.{s}"] for name in QKV_SPLIT]
            out[f"blocks.{i}.attn.qkv.{s}"] = torch.cat(parts, dim=0)
    grid = config.input_size // config.patch_size
    out["pos_embed"] = torch.from_numpy(sincos_2d(config.hidden_size, grid)).float().unsqueeze(0)
    return out


# ---- reading: what read_checkpoint gives for a diffusers folder or a safetensors file ------------
def read_foreign(path, model_name: str | None = None) -> dict:
    """A diffusers DiT folder or a safetensors file as this project's checkpoint dict (`ema` and `model`
    both hold the exported weights), or, for a safetensors file without our metadata read under
    `model_name`, the plain official state dict."""
    path = Path(path)
    if path.is_dir():
        return read_diffusers(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist; give a .pt or .safetensors file or a diffusers folder")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(METADATA_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read {path} as safetensors: {exc}") from None
    if meta is None:
        if model_name is None:
            raise ValueError(f"{path} has no {METADATA_KEY!r} metadata (it was not written by `scaling export`); "
                             f"give --model (e.g. --model DiT-XL/2) to read it as an official DiT state dict")
        return state
    try:
        config = json.loads(meta)
    except json.JSONDecodeError:
        raise ValueError(f"{path}: its {METADATA_KEY!r} metadata is damaged (not JSON); export the checkpoint "
                         f"again") from None
    return {"model": state, "ema": state, "config": config}


def _transformer_folder(path: Path) -> tuple[Path, Path | None]:
    """(folder of the transformer's config.json, the pipeline root or None)."""
    index = path / "model_index.json"
    if index.is_file():
        kind = json.loads(index.read_text()).get("_class_name")
        if kind != "DiTPipeline":
            raise ValueError(
                f"{path} holds a diffusers {kind}, not a DiTPipeline; give a DiT folder such as facebook/DiT-XL-2-256's"
            )
        return path / "transformer", path
    if (path / "config.json").is_file():
        return path, None
    raise ValueError(f"{path} is a folder but not a diffusers DiT (no model_index.json or config.json); "
                     f"give a DiTPipeline or DiTTransformer2DModel folder, a .pt or a .safetensors file")


def _diffusers_weights(folder: Path) -> dict:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(folder / name))
            return load_tensors(folder / name, what="diffusers weights", expected=f"a DiT folder's {name}")
    raise ValueError(f"{folder} has no {' or '.join(WEIGHT_FILES)}")


def read_diffusers(path: Path) -> dict:
    """A DiTPipeline or DiTTransformer2DModel folder as this project's checkpoint dict.

    The run config is ours where `scaling export` wrote one (dit_scaling.json), else the official
    model's (SD-VAE latents, linear schedule; class names from the pipeline's id2label); a pipeline
    decodes through its own vae/ folder.
    """
    folder, root = _transformer_folder(path)
    fix = "give a folder that `scaling export` or save_pretrained wrote whole"
    config = config_from_diffusers(read_json(folder / "config.json", what="diffusers config", fix=fix), path)
    stored = read_json(folder / RUN_CONFIG_NAME, what="run config", fix=fix) if (folder / RUN_CONFIG_NAME).is_file() \
        else None
    if stored is None:
        labels = json.loads((root / "model_index.json").read_text()).get("id2label") or {} if root else {}
        stored = official_run_config(config, class_names=[labels[k] for k in sorted(labels, key=int)])
    kept = {k: stored["model"][k] for k in ("size", "class_dropout_prob", "attention") if k in stored["model"]}
    config = dataclasses.replace(config, **kept)
    if root is not None and (root / "vae" / "config.json").is_file():
        stored["train"] = {**stored.get("train", {}), "codec": "sd-vae", "vae": str(root / "vae")}
    state = from_diffusers_state(_diffusers_weights(folder), config)
    return {"model": state, "ema": state, "config": {**stored, "model": dataclasses.asdict(config)}}
