"""The latent cache that `scaling encode` writes, and the data set that reads it.

The official DiT training code encodes every image (randomly flipped) through the VAE at every step
(`dit.latents`). The latent cache keeps that randomness at the cost of pre-extracted
features: it stores the posterior mean and std of every image AND of its horizontal flip, and each
read draws a fresh flip and a fresh posterior sample.

Cache layout (a folder; it only exists once complete, see `encode_dataset`):
    moments.npy  float16 (N, F, 2, C, h, w): [image, flip (0 = as is, 1 = mirrored), (mean, std), C, h, w],
                 the VAE's *unscaled* posterior; F = 2, or 1 for data that must not be mirrored (digits);
                 memory-mapped when read
    labels.npy   int64 (N,)
    meta.json    codec, vae, scale, resolution (pixel side), latent shape, class names, count
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dit.io import atomic_write_text, fsync_dir
from dit.latents import sample_posterior

CACHE_FORMAT = "dit-latent-cache/1"
CACHE_DTYPE = np.float16  # |mean| stays far below fp16's 65504 and std <= exp(10) (logvar clamped to 20): fp16's
# 10 mantissa bits beat bf16's 7; tiny stds fall to fp16 subnormals, an absolute error < 6e-8, far below the mean's own
FLUSH_SECONDS = 10.0  # how often encode_dataset makes its progress durable (fsync + progress.json)
PARTIAL_SUFFIX = ".partial"



def is_latent_cache(path) -> bool:
    """Whether `path` is a complete latent cache written by `encode_dataset` (a partial one is not)."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT and (Path(path) / "moments.npy").is_file()


def read_cache_meta(path) -> dict:
    if not is_latent_cache(path):
        raise ValueError(
            f"{path} is not a complete latent cache; write one with `scaling encode --data DIR --vae ID_OR_PATH --out "
            f"{path}`"
        )
    return json.loads((Path(path) / "meta.json").read_text())


class LatentCacheDataset(Dataset):
    """A latent cache read through a memory map. Each item draws a fresh horizontal flip (one of the two
    stored, unless the cache was written without flips) and a fresh posterior sample scale * (mean + std * eps),
    so training sees the randomness of on-the-fly encoding (the official train.py) at the speed of
    pre-extracted features. Draws use torch's RNG, which DataLoader seeds per worker (numpy's would repeat
    across workers) and a trainer's checkpoint restores.

    Attributes like dit.data's datasets: num_classes, in_channels (latent channels), image_size (latent
    side), class_names; plus codec, vae, scale and meta (meta.json) to decode samples the same way.
    """

    def __init__(self, path):
        self.path, self.meta = Path(path), read_cache_meta(path)
        self.labels = np.load(self.path / "labels.npy")  # (N,)
        self.class_names, self.num_classes = self.meta["class_names"], len(self.meta["class_names"])
        self.in_channels, self.image_size = self.meta["latent_channels"], self.meta["latent_size"]
        self.codec, self.vae, self.scale, self.flips = (self.meta[k] for k in ("codec", "vae", "scale", "flips"))
        self._moments = None  # opened lazily, so each DataLoader worker maps the file itself

    @property
    def moments(self) -> np.ndarray:
        if self._moments is None:
            self._moments = np.load(self.path / "moments.npy", mmap_mode="r")  # (N, F, 2, C, h, w)
        return self._moments

    def __getstate__(self):
        return {**self.__dict__, "_moments": None}

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        flip = int(torch.randint(self.flips, ()))
        mean, std = torch.from_numpy(self.moments[i, flip].astype(np.float32))  # (C, h, w) each
        return sample_posterior(mean, std, self.scale), int(self.labels[i])


def encode_dataset(dataset, codec, out_dir, *, batch_size: int = 64, num_workers: int = 0, progress: bool = True,
                   flip: bool = True, source: str | None = None) -> Path:
    """Encode every image of `dataset` and (when `flip`) its horizontal flip into a latent cache at `out_dir`.

    `dataset` yields unflipped (x (C, H, W) in [-1, 1], label) and has `class_names`; `source` (the data's
    name or folder) is recorded in meta.json; `flip=False` is for data whose mirror is not a valid sample.
    The cache is built in `out_dir.partial` and renamed to `out_dir` when complete, so a kill never leaves
    a cache that loads; re-running the same call resumes from the last durable batch. An existing
    `out_dir` is never overwritten.
    """
    out = Path(out_dir)
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out or delete it (nothing was overwritten)")
    if getattr(dataset, "flip", False):
        raise ValueError("encode_dataset stores both flips itself; give a dataset without random flips")
    header = _cache_header(dataset, codec, flip, source)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    done = _open_partial(partial, header)
    _encode_into(
        dataset, codec, partial, done, header, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    atomic_write_text(partial / "meta.json", json.dumps(header, indent=1))
    os.replace(partial, out)
    fsync_dir(out.parent)
    (out / "progress.json").unlink(missing_ok=True)
    return out


def _cache_header(dataset, codec, flip, source) -> dict:
    """meta.json's content, known before encoding (also the fingerprint a resumed encode must match)."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty; nothing to encode")
    x, _ = dataset[0]
    channels, size = x.shape[0], x.shape[-1]
    if x.shape[-2] != size:
        raise ValueError(f"images must be square to be encoded, got {tuple(x.shape[-2:])}")
    latent_channels, latent_size, _ = codec.latent_shape(channels, size)
    class_names = getattr(dataset, "class_names", None)
    if class_names is None:
        raise ValueError("the dataset has no class_names; give one built by dit.data.build_dataset")
    return dict(format=CACHE_FORMAT, codec=codec.name, vae=codec.vae, scale=codec.scale, source=source,
                count=len(dataset), flips=2 if flip else 1, resolution=size, image_channels=channels,
                latent_channels=latent_channels, latent_size=latent_size, class_names=list(class_names),
                dtype=np.dtype(CACHE_DTYPE).name,
                layout="moments.npy (count, flips, [mean, std], latent_channels, latent_size, latent_size), unscaled")


def _open_partial(partial: Path, header: dict) -> int:
    """Create the partial cache folder, or check that an existing one is this encode's; returns images done."""
    progress = partial / "progress.json"
    if partial.exists():
        state = json.loads(progress.read_text()) if progress.is_file() else {}
        if state.get("header") != header:
            raise ValueError(
                f"{partial} holds an unfinished encode with other settings or data; delete it to start over"
            )
        return state["done"]
    tmp = partial.with_name(partial.name + ".new")  # the folder appears whole, with its progress file
    tmp.mkdir(parents=True, exist_ok=True)
    c, s = header["latent_channels"], header["latent_size"]
    shape = (header["count"], header["flips"], 2, c, s, s)
    np.lib.format.open_memmap(
        tmp / "moments.npy", mode="w+", dtype=CACHE_DTYPE, shape=shape
    ).flush()  # sparse, final size
    np.save(tmp / "labels.npy", np.zeros(header["count"], dtype=np.int64))
    atomic_write_text(tmp / "progress.json", json.dumps({"header": header, "done": 0}))
    os.replace(tmp, partial)
    return 0


def _encode_into(dataset, codec, partial: Path, done: int, header: dict, *, batch_size, num_workers, progress):
    """Encode images done..count-1 (and their flips) into the partial cache, making progress durable
    (fsync, then progress.json) every FLUSH_SECONDS and at the end."""
    from dit.progress import progress_bar

    count = header["count"]
    moments = np.load(partial / "moments.npy", mmap_mode="r+")  # (N, F, 2, C, h, w)
    labels = np.load(partial / "labels.npy", mmap_mode="r+")  # (N,)
    loader = DataLoader(Subset(dataset, range(done, count)), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=getattr(codec, "device", torch.device("cpu")).type == "cuda")
    bar = progress_bar(total=count, initial=done, unit="img", desc="encode", enabled=progress)
    last_flush = time.monotonic()
    for x, y in loader:
        lo, hi = done, done + len(y)
        moments[lo:hi] = _encode_moments(codec, x, header["flips"], lo)
        labels[lo:hi] = y.numpy()
        done = hi
        bar.update(len(y))
        if done == count or time.monotonic() - last_flush > FLUSH_SECONDS:
            _make_durable(partial, moments, labels, header, done)
            last_flush = time.monotonic()
    bar.close()


def _encode_moments(codec, x: torch.Tensor, flips: int, first: int) -> np.ndarray:
    """(B, C, H, W) images -> (B, F, 2, C, h, w) posterior [mean, std] of each image (and its mirror when F = 2)."""
    views = torch.cat([x, x.flip(-1)]) if flips == 2 else x  # (F * B, C, H, W), all images then all mirrors
    mean, std = codec.encode_moments(views)  # (F * B, C, h, w) each
    both = torch.stack([mean, std], dim=1).unflatten(0, (flips, len(x))).transpose(0, 1)  # (B, F, 2, C, h, w)
    both = both.to("cpu", torch.float16)
    if not torch.isfinite(both).all():
        raise ValueError(
            f"the VAE gave non-finite moments for images {first}..{first + len(x) - 1}; encode in fp32 (--precision "
            "fp32)"
        )
    return both.numpy()


def _make_durable(partial: Path, moments: np.memmap, labels: np.memmap, header: dict, done: int):
    moments.flush()
    labels.flush()
    atomic_write_text(partial / "progress.json", json.dumps({"header": header, "done": done}))
