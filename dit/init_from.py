"""Training from given weights (`scaling train --init`): model and EMA start from another checkpoint's EMA."""
import dataclasses

from dit.checkpoint import load_model, read_checkpoint
from dit.models import DiT

ARCH_FREE = ("size", "attention", "class_dropout_prob")  # fields that do not change the parameters' meaning


def initialise_from(model: DiT, ema: DiT, source, model_name: str | None = None):
    """`scaling train --init`: model and EMA both start from the (EMA) weights of `source` at step 0."""
    init = load_model(read_checkpoint(source, model_name=model_name), use_ema=True)
    ours, theirs = dataclasses.asdict(model.config), dataclasses.asdict(init.config)
    differ = [k for k in ours if k not in ARCH_FREE and ours[k] != theirs[k]]
    if differ:
        k = differ[0]
        raise ValueError(
            f"--init {source} holds a model with {k}={theirs[k]!r}, but the model trained here has {k}={ours[k]!r}; "
            f"give matching options or other weights"
        )
    try:
        model.load_state_dict(init.state_dict())
    except RuntimeError as exc:
        raise ValueError(
            f"--init {source} does not fit {model.config.name}: {str(exc).splitlines()[-1].strip()}"
        ) from None
    ema.load_state_dict(init.state_dict())
