"""The one autocast of the project: "bf16" runs the block in bfloat16 autocast, "fp32" (or any other) as is."""
import torch


def autocast_for(device, precision: str) -> torch.autocast:
    """torch.autocast on `device`'s type in bfloat16, enabled only for precision "bf16"."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
