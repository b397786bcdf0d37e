"""Experiment tracking: TensorBoard and Weights & Biases mirror what a run writes to its own files.

`train-log.jsonl` stays the source of truth; a logger gets every record of it (under `train/`), each
evaluation record's metrics at their training step (under `eval/<setting>/`) and the EMA sample grids
(`samples/ema`). A logger that fails is warned about once and dropped: it never stops training.

    loggers = open_loggers(("tensorboard",), RunLayout(run_dir), run_config, step=0)
    loggers.log_train(record)  # one train-log.jsonl record
    loggers.log_image(step, grid)  # a PIL image
    loggers.close()

TensorBoard writes event files to RUN_DIR/tensorboard/; W&B writes RUN_DIR/wandb/, offline unless
WANDB_MODE is set or an API key is configured (`wandb login` or WANDB_API_KEY), and a resumed run
continues the same W&B run (its id comes from the run directory's path).
"""
import hashlib
import json
import math
import netrc
import os
import sys
import urllib.parse
from pathlib import Path

import numpy as np

from study.layout import RunLayout
from study.registry import Registry

WANDB_PROJECT = "dit-scaling"  # WANDB_PROJECT in the environment overrides it


def scalars(record: dict, prefix: str) -> dict[str, float]:
    """The record's numbers (not its step, its strings and flags or NaNs: metrics that do not apply) as
    {prefix/name: value}."""
    return {f"{prefix}/{k}": float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)}


class TensorBoardLogger:
    """Scalars and images as TensorBoard event files in RUN_DIR/tensorboard/ (flushed at every write, so a killed
    run loses nothing); a resumed run drops the earlier events after its checkpoint, as train-log.jsonl does."""

    def __init__(self, run: RunLayout, run_config: dict, step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run.tensorboard_dir), purge_step=step + 1 if step else None)

    def log_scalars(self, step: int, values: dict[str, float]):
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def log_image(self, step: int, tag: str, image):
        self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")  # (H, W, 3) uint8
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandbLogger:
    """One W&B run per run directory (name: the directory's, id: a hash of its path, so resuming continues it).
    Each section has its own step axis (`train/step`, `eval/step`), so evaluation records logged after training
    land at their own steps instead of being dropped as out of order."""

    def __init__(self, run: RunLayout, run_config: dict, step: int):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=run.root.name, id=wandb_run_id(run.root),
            resume="allow", dir=str(run.root), config=run_config, mode=wandb_mode(),
        )
        for section in ("train", "eval", "samples"):
            self.run.define_metric(f"{section}/step")
            self.run.define_metric(f"{section}/*", step_metric=f"{section}/step")

    def log_scalars(self, step: int, values: dict[str, float]):
        for section in sorted({tag.split("/")[0] for tag in values}):
            self.run.log({f"{section}/step": step, **{k: v for k, v in values.items() if k.startswith(f"{section}/")}})

    def log_image(self, step: int, tag: str, image):
        self.run.log({f"{tag.split('/')[0]}/step": step, tag: self.wandb.Image(image)})

    def close(self):
        self.run.finish()


def wandb_run_id(run_dir: Path) -> str:
    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def wandb_mode() -> str:
    """WANDB_MODE if set; else online when the user has configured an API key, offline otherwise."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_configured() else "offline"


def wandb_configured() -> bool:
    """Whether the user gave W&B an API key: WANDB_API_KEY, or the entry `wandb login` writes to ~/.netrc ($NETRC)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


LOGGERS = Registry("logger", {"tensorboard": TensorBoardLogger, "wandb": WandbLogger})
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # logger -> the package (and extra) it needs


class Loggers:
    """The run's loggers behind one call each; a logger that raises is warned about once and dropped."""

    def __init__(self, loggers: dict):
        self.active = dict(loggers)

    def log_train(self, record: dict):
        """One record of train-log.jsonl, under train/."""
        self.log_scalars(record["step"], scalars(record, "train"))

    def log_eval(self, step: int, setting: str, record: dict):
        """One evaluation record's metrics, under eval/<setting>/."""
        self.log_scalars(step, scalars(record, f"eval/{setting}"))

    def log_scalars(self, step: int, values: dict[str, float]):
        self._each("log", lambda logger: logger.log_scalars(step, values))

    def log_image(self, step: int, image, tag: str = "samples/ema"):
        self._each("log an image", lambda logger: logger.log_image(step, tag, image))

    def close(self):
        self._each("close", lambda logger: logger.close())
        self.active = {}

    def _each(self, action: str, call):
        for name, logger in list(self.active.items()):
            try:
                call(logger)
            except Exception as exc:  # noqa: BLE001 -- a logger's failure never stops training
                warn(f"logger {name} failed to {action} ({type(exc).__name__}: {exc}); it is off for the rest of "
                     f"this run (train-log.jsonl keeps every record)")
                del self.active[name]


def warn(message: str):
    print(f"warning: {message}", file=sys.stderr)


def open_loggers(names, run: RunLayout, run_config: dict, step: int = 0) -> Loggers:
    """The named loggers of the run in `run` resumed at `step`. A logger whose package is missing is the user's
    error (ValueError naming the extra); one that fails to start for another reason is warned about and left out."""
    opened = {}
    for name in names:
        try:
            opened[name] = LOGGERS[name](run, run_config, step)
        except ImportError:
            Loggers(opened).close()
            raise ValueError(f"logger {name} needs the {PACKAGES[name]} package; install it with "
                             f"pip install \"dit-scaling[{PACKAGES[name]}]\"") from None
        except Exception as exc:  # noqa: BLE001 -- a logger's failure never stops training
            warn(f"logger {name} did not start ({type(exc).__name__}: {exc}); training goes on without it")
    return Loggers(opened)


def log_eval(run: RunLayout, step: int, setting: str, record: dict):
    """Log an evaluation record's metrics to the loggers the run trained with (its config.json), then close them."""
    names = json.loads(run.config.read_text())["train"].get("loggers", []) if run.config.exists() else []
    if names:
        loggers = open_loggers(names, run, {}, step=0)
        loggers.log_eval(step, setting, record)
        loggers.close()
