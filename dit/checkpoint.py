"""DiT weights and training checkpoints: loading the official release's plain state dicts and this
project's checkpoints, and writing, listing, pruning and restoring a run directory's checkpoints.

This project's checkpoint is a dict with keys `model`, `ema` (state dicts), `opt`, `config`
(the training config, with the model's under `config["model"]`), `step`, `rng` and `data`.
The official release ships a plain (EMA) state dict, e.g. `DiT-XL-2-256x256.pt`.
"""
import dataclasses
import random
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from dit import distributed
from dit.config import recipe_difference
from dit.foreign import read_foreign
from dit.io import atomic_torch_save, load_tensors
from dit.models import MODEL_SIZES, DiT, DiTConfig, dit_config
from study.blocks import ADALN_ZERO
from study.layout import RunLayout, steps_in

PROJECT_KEYS = ("model", "ema", "config")
PLAIN_KEY = "x_embedder.proj.weight"
EXPECTED = "a .pt file of `scaling train` (RUN_DIR/checkpoints/step_NNNNNNN.pt) or an official DiT release"


def read_checkpoint(path_or_state, model_name: str | None = None) -> dict:
    """torch.load with weights_only=True; ValueError with one clear line for a missing or unreadable file.

    A diffusers DiT folder or a .safetensors file is read by dit.foreign (`model_name` for one without our metadata).
    """
    if isinstance(path_or_state, dict):
        return path_or_state
    path = Path(path_or_state)
    if path.is_dir() or path.suffix == ".safetensors":
        return check_checkpoint(read_foreign(path, model_name), path)
    return check_checkpoint(load_tensors(path, what="checkpoint", expected=EXPECTED), path)


def check_checkpoint(ckpt, source) -> dict:
    """`ckpt` when it is a DiT checkpoint with finite weights: this project's or an official plain state dict.
    Anything else ends in one ValueError line naming `source`, what is wrong and what to give."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {source} holds a {type(ckpt).__name__}, not a DiT checkpoint; give {EXPECTED}")
    if is_project_checkpoint(ckpt):
        stored_model_config(ckpt, source)
        for key in ("model", "ema"):
            check_weights(ckpt[key], f"checkpoint {source} ({key} weights)")
    elif PLAIN_KEY in ckpt and "pos_embed" in ckpt:
        check_weights(ckpt, f"checkpoint {source}")
    else:
        raise ValueError(f"checkpoint {source} is {not_a_checkpoint(ckpt)}; give {EXPECTED}")
    return ckpt


def not_a_checkpoint(ckpt: dict) -> str:
    found = ", ".join(map(str, list(ckpt)[:6])) + (", ..." if len(ckpt) > 6 else "") if ckpt else "none"
    return (f"not a DiT checkpoint: expected a plain state dict (keys like {PLAIN_KEY!r}) or this project's "
            f"checkpoint (keys {', '.join(PROJECT_KEYS)}); found keys: {found}")


def stored_model_config(ckpt: dict, source) -> DiTConfig:
    """The DiTConfig stored in a project checkpoint; ValueError naming the problem when it is not one."""
    config = ckpt["config"]
    fields = config.get("model") if isinstance(config, dict) else None
    if not isinstance(fields, dict):
        raise ValueError(f"checkpoint {source} has no model config (config.model); give {EXPECTED}")
    known = {f.name for f in dataclasses.fields(DiTConfig)}
    unknown = sorted(map(str, set(fields) - known))
    if unknown:
        raise ValueError(f"checkpoint {source} has unknown model option(s) {', '.join(unknown)} (written by another "
                         f"version or edited); give {EXPECTED}")
    try:
        return DiTConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {source} has an unusable model config ({exc}); give {EXPECTED}") from None


def check_weights(state, what: str):
    """ValueError unless `state` maps names to tensors that are all finite (NaN weights sample noise, silently)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} are not a state dict of tensors; give {EXPECTED}")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ValueError(f"{what} hold NaN or infinite values (first in {bad}), as a diverged run leaves them; "
                         f"give an earlier checkpoint")


def is_project_checkpoint(ckpt: dict) -> bool:
    return all(k in ckpt for k in PROJECT_KEYS)


def infer_config(state: dict, **overrides) -> DiTConfig:
    """The DiTConfig of a plain state dict, read from its tensor shapes.

    The head count is not in the shapes: it comes from the size whose (depth, width) match, or
    from `num_heads=` in overrides.
    """
    hidden, patch = state[PLAIN_KEY].shape[0], state[PLAIN_KEY].shape[-1]
    in_channels = state[PLAIN_KEY].shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    num_tokens = state["pos_embed"].shape[1]
    out_dim = state["final_layer.linear.weight"].shape[0] // (patch * patch)
    table_rows = state["y_embedder.embedding_table.weight"].shape[0]
    if any(".cross_attn." in k for k in state):
        block = "cross-attn"
    elif "blocks.0.adaLN_modulation.1.weight" in state:
        block = ADALN_ZERO if state["blocks.0.adaLN_modulation.1.weight"].shape[0] == 6 * hidden else "adaln"
    else:
        block = "in-context"
    size = next((name for name, (d, w, _) in MODEL_SIZES.items() if (d, w) == (depth, hidden)), "custom")
    arch = dict(depth=depth, hidden_size=hidden)
    if size == "custom":
        arch["num_heads"] = overrides.pop("num_heads", None)
    learn_sigma = out_dim == 2 * in_channels
    class_dropout = overrides.pop("class_dropout_prob", 0.1)
    return dit_config(
        f"DiT-{size}/{patch}",
        input_size=int(num_tokens**0.5) * patch,
        in_channels=in_channels,
        num_classes=table_rows - int(class_dropout > 0),
        block=block,
        learn_sigma=learn_sigma,
        class_dropout_prob=class_dropout,
        **arch,
        **overrides,
    )


def plain_config(state: dict, overrides: dict) -> DiTConfig:
    """infer_config, with weights whose names or shapes are not a DiT's named in one ValueError line."""
    try:
        return infer_config(state, **overrides)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:  # a key or a dimension a DiT has is missing
        raise ValueError(f"weights with DiT's first keys but not its layout ({type(exc).__name__}: {exc}); give "
                         f"{EXPECTED}") from None
    except ValueError as exc:  # max() of no blocks, or a size dit_config refuses
        raise ValueError(f"weights that do not make a DiT ({exc}); give {EXPECTED}") from None


def load_model(path_or_state, *, use_ema: bool = True, **overrides) -> DiT:
    """A DiT with the weights of an official plain state dict or of this project's checkpoint.

    use_ema picks the EMA weights of a project checkpoint (the official files are EMA already).
    overrides (e.g. attention="math") replace fields of the stored or inferred config.
    """
    ckpt = read_checkpoint(path_or_state)
    if is_project_checkpoint(ckpt):
        config = dataclasses.replace(stored_model_config(ckpt, "given"), **overrides)
        state = ckpt["ema" if use_ema else "model"]
    elif PLAIN_KEY in ckpt and "pos_embed" in ckpt:
        config, state = plain_config(ckpt, overrides), ckpt
    else:
        raise ValueError(not_a_checkpoint(ckpt))
    model = DiT(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ValueError(f"checkpoint does not fit {config.name} ({config.block}): {first}") from None
    return model.eval()


def check_fits(ckpt: dict, model: DiT, run_dir):
    """ValueError when the weights of run_dir's checkpoint do not fit `model` (another size, patch or block)."""
    own, stored = model.state_dict(), ckpt["model"]
    if set(own) == set(stored) and all(own[k].shape == stored[k].shape for k in own):
        return
    found = DiTConfig(**ckpt["config"]["model"]).name
    raise ValueError(f"{run_dir} holds a checkpoint of {found}, which does not fit {model.config.name}; "
                     f"resume it with its own options, or train {model.config.name} in another --run-dir")


def check_same_identity(ckpt: dict, run_config: dict, run_dir):
    """ValueError when run_dir's newest checkpoint records another run than `run_config` (one copied in from
    elsewhere): its identity differs in an option both know (options added since it was written do not count)."""
    stored = ckpt["config"]
    if stored.get("run_id") == run_config["run_id"]:
        return
    changed = recipe_difference(stored.get("train", {}), run_config["train"]) or recipe_difference(
        stored.get("model", {}), run_config["model"])
    if changed:
        raise ValueError(f"checkpoint {checkpoint_path(run_dir, ckpt['step'])} belongs to another run ({changed}); "
                         f"move it out of {RunLayout(run_dir).checkpoints_dir} or train in another --run-dir")


def model_config_dict(config: DiTConfig) -> dict:
    return dataclasses.asdict(config)


# ---- checkpoints of a run directory -----------------------------------------------------------
def checkpoint_path(run_dir, step: int) -> Path:
    return RunLayout(run_dir).checkpoint(step)


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in run_dir, oldest first."""
    return steps_in(RunLayout(run_dir).checkpoints_dir, ".pt")


def newest_readable_checkpoint(run_dir) -> tuple[dict | None, list[Path]]:
    """The newest checkpoint of run_dir that reads back whole, and the newer ones that do not."""
    unreadable = []
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            ckpt = read_checkpoint(path)
        except ValueError:
            ckpt = None
        if ckpt is not None and is_project_checkpoint(ckpt):
            return ckpt, unreadable
        unreadable.append(path)
    return None, unreadable


def warn_unreadable(unreadable: list[Path], outcome: str):
    if unreadable:
        print(f"warning: unreadable checkpoint(s) in {unreadable[0].parent} skipped (truncated or damaged): "
              f"{', '.join(p.name for p in unreadable)}; {outcome}", file=sys.stderr, flush=True)


def is_whole_file(path: Path) -> bool:
    """Whether a checkpoint file ends whole (torch.save writes a zip archive; a cut one lost its directory).

    Cheap (no tensor is read); a file that cannot be opened counts as whole, so nothing is deleted on a doubt."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except zipfile.BadZipFile:
        return False
    except OSError:
        return True
    return True


def prune_checkpoints(run_dir, keep_last: int, keep_every: int | None):
    """Delete old checkpoints, keeping the newest `keep_last` whole ones and every whole one at a multiple of
    `keep_every`; cut (unreadable) files are never counted as kept and are deleted."""
    checkpoints = list_checkpoints(run_dir)
    whole = [(step, path) for step, path in checkpoints if is_whole_file(path)]
    kept = {path for _, path in whole[-keep_last:]} | {
        path for step, path in whole if keep_every and step % keep_every == 0
    }
    for _, path in checkpoints:
        if path not in kept:
            path.unlink(missing_ok=True)


def save_checkpoint(run_dir, model, ema, opt, run_config: dict, step: int, wall: float, dist: distributed.DistInfo,
                    *, log_window: dict | None = None, profiles=None):
    """Rank 0 writes model, EMA, optimiser, the run's config, step, every rank's RNG state, the training
    loop's unlogged window (`log_window`) and the power-function EMA profiles (`profiles`), atomically."""
    train_config = run_config["train"]
    rngs = distributed.all_gather_objects(rng_state())
    if dist.is_main:
        state = {
            "model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
            "config": run_config,
            "step": step, "wall_seconds": wall, "rng": rngs, "log_window": log_window,
            "data": {"images_seen": step * train_config["batch_size"]},
            "ema_profiles": profiles.state_dict() if profiles is not None else None,
        }
        atomic_torch_save(state, checkpoint_path(run_dir, step))
        prune_checkpoints(run_dir, train_config["keep_last"], train_config["keep_every"])
    distributed.barrier()


def load_training_state(
    run_dir, model, ema, opt, rank: int, *, restart: bool = False, run_config: dict | None = None, profiles=None
) -> tuple[int, float, dict | None]:
    """Restore model, EMA, optimiser, power-function EMA `profiles` (dit.ema.PowerEMA; a checkpoint from before
    them restarts them from its weights) and this rank's RNG state from run_dir's latest readable checkpoint; returns
    its (step, training wall seconds, unlogged window), or (0, 0.0, None) when there is none (the modules are
    left as they are). Checkpoints that all fail to read are refused unless `restart` (then step 0), and so is
    one of another run than `run_config`'s."""
    ckpt, unreadable = newest_readable_checkpoint(run_dir)
    if rank == 0:
        warn_unreadable(unreadable, f"resuming from step {ckpt['step']}" if ckpt else "none reads back")
    if ckpt is None:
        if unreadable and not restart:
            raise ValueError(f"no checkpoint in {RunLayout(run_dir).checkpoints_dir} reads back (all "
                             f"{len(unreadable)} are truncated or damaged); restore one, or re-run with --restart "
                             f"to train from step 0")
        return 0, 0.0, None
    check_fits(ckpt, model, run_dir)
    if run_config is not None:
        check_same_identity(ckpt, run_config, run_dir)
    model.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    opt.load_state_dict(ckpt["opt"])
    if profiles is not None:
        profiles.restore(ckpt.get("ema_profiles"), model, ckpt["step"])
    set_rng_state(ckpt["rng"][min(rank, len(ckpt["rng"]) - 1)])  # a run resumed on more ranks than it had
    return ckpt["step"], ckpt.get("wall_seconds", 0.0), ckpt.get("log_window")


# ---- RNG state ------------------------------------------------------------------------------------
def rng_state() -> dict:
    """This process's RNG states as plain Python values (they travel between ranks and into checkpoints)."""
    name, keys, *rest = np.random.get_state()
    state = {
        "torch": bytes(torch.get_rng_state().numpy()),
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), *rest],
    }
    if torch.cuda.is_available():
        state["cuda"] = [bytes(s.numpy()) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict):
    """Restore what `rng_state` returned (CUDA states only where CUDA is available)."""

    def as_tensor(b):
        return torch.frombuffer(bytearray(b), dtype=torch.uint8)

    torch.set_rng_state(as_tensor(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([as_tensor(s) for s in state["cuda"]])
