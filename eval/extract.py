"""Images -> features: uint8 batches streamed to the device, decoded and resized there, one pass.

A reader thread pulls uint8 (N, H, W, C) batches from the source into pinned memory while the
device works on the previous batch; the (N, C, H, W) view of an NHWC batch is channels-last, which
is what the convolutions want on a GPU. Under torchrun each rank takes one contiguous shard of the
images and the features are gathered back in order on every rank.
"""
import queue
import threading

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from dit.distributed import pick_device
from dit.progress import progress_bar
from eval.features import Features

PREFETCH = 3  # batches read ahead of the device


def default_device() -> torch.device:
    if dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return pick_device("auto")


def resolve_device(device=None) -> torch.device:
    """The named device (checked: it must exist here), else `default_device()`."""
    from dit.distributed import pick_device

    return pick_device(str(device)) if device else default_device()


def check_batch_size(batch_size: int | None):
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be at least 1 (got {batch_size}); leave --batch-size out for the default "
                         f"({default_batch_size('cuda')} on GPU, {default_batch_size('cpu')} on CPU)")


def default_precision(device) -> str:
    """tf32 on GPUs, fp32 elsewhere.

    TF32 convolutions are PyTorch's (and TensorFlow's) default on Ampere and newer GPUs, so also what
    torch-fidelity and ADM's evaluator run there. Emulated on CPU with random weights, TF32 moves
    pool_3 features by at most 5e-4 relative per image (the 2,023 spatial dims by 1.3e-3) and bf16 by
    4e-3: bf16 is offered, never the default. `--precision fp32` is exact.
    """
    return "tf32" if torch.device(device).type == "cuda" else "fp32"


def default_batch_size(device) -> int:
    return 250 if torch.device(device).type == "cuda" else 50


def extract_features(source, extractor, *, batch_size: int | None = None, progress: bool = True,
                     desc: str = "features", on_batch=None, shard: bool = True) -> Features:
    """Features of every image of `source` (see eval.images), in order, on the extractor's device.

    `on_batch(start_index, uint8 batch)` sees every numpy batch as it is read (e.g. to keep some images).
    With `shard` (and a process group) every rank extracts its share; without, this process does all.
    """
    device = next(extractor.parameters()).device
    batch_size = batch_size or default_batch_size(device)
    rank, world = _rank_world() if shard else (0, 1)
    bounds = np.linspace(0, source.num, world + 1).round().astype(int)
    start, stop = int(bounds[rank]), int(bounds[rank + 1])
    parts = []
    with progress_bar(total=stop - start, desc=desc, unit="img", enabled=progress and rank == 0) as bar:
        for images in _prefetch(source.batches(batch_size, start, stop), device, start, on_batch):
            parts.append(extractor(images.permute(0, 3, 1, 2)))  # (N, C, H, W) view, channels-last
            bar.update(len(images))
    features = Features.cat(parts)
    if world > 1:
        features = Features(*(_gather(t, np.diff(bounds).tolist()) for t in features))
    return features


def _prefetch(batches, device: torch.device, start: int, on_batch):
    """Yield uint8 (N, H, W, C) tensors on `device`, read and copied by a background thread."""
    pinned = device.type == "cuda"
    slots = queue.Queue(maxsize=PREFETCH)
    done = object()

    def reader():
        try:
            index = start
            for batch in batches:
                if on_batch is not None:
                    on_batch(index, batch)
                index += len(batch)
                tensor = torch.from_numpy(np.require(batch, requirements=["C", "W"]))
                slots.put(tensor.pin_memory() if pinned else tensor)
            slots.put(done)
        except BaseException as exc:  # hand errors (bad files, truncated arrays) to the caller
            slots.put(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    while (item := slots.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item.to(device, non_blocking=True)
    thread.join()


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(t: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's rows (rank r holds sizes[r] rows), in rank order, on every rank."""
    padded = F.pad(t, (0, 0, 0, max(sizes) - t.shape[0]))
    out = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([o[:n] for o, n in zip(out, sizes, strict=True)])
