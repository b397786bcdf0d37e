"""Numeric precision: the one autocast of the project ("bf16" runs the block in bfloat16 autocast, "fp32" (or any
other) as is) and the TF32 switch of CUDA matmuls and convolutions."""
import torch


def autocast_for(device, precision: str) -> torch.autocast:
    """torch.autocast on `device`'s type in bfloat16, enabled only for precision "bf16"."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def set_tf32(device, enabled: bool):
    """TF32 CUDA matmuls and convolutions on (as the official release trains) or off; nothing on other devices."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
