"""Latent codecs (pixels or the Stable Diffusion VAE) and the latent cache that `scaling encode` writes.

DiT (Peebles & Xie, Sec. 3.1 "Latent diffusion") trains in the latent space of the off-the-shelf
Stable Diffusion VAE: a 256 x 256 x 3 image becomes a 32 x 32 x 4 latent z = 0.18215 * (mean + std * eps)
drawn from the encoder's diagonal Gaussian posterior. The official training code encodes every image
(randomly flipped) at every step. The latent cache keeps that randomness at the cost of pre-extracted
features: it stores the posterior mean and std of every image AND of its horizontal flip, and each
read draws a fresh flip and a fresh posterior sample.

Cache layout (a folder; it only exists once complete, see `encode_dataset`):
    moments.npy  float16 (N, F, 2, C, h, w): [image, flip (0 = as is, 1 = mirrored), (mean, std), C, h, w],
                 the VAE's *unscaled* posterior; F = 2, or 1 for data that must not be mirrored (digits);
                 memory-mapped when read
    labels.npy   int64 (N,)
    meta.json    codec, vae, scale, resolution (pixel side), latent shape, class names, count
"""
import contextlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dit.io import atomic_write_text, fsync_dir
from study.registry import Registry

SD_VAE_SCALE = 0.18215  # latents = SD_VAE_SCALE * z gives roughly unit variance (LDM, Rombach et al.; DiT Sec. 3.1)
CACHE_FORMAT = "dit-latent-cache/1"
CACHE_DTYPE = np.float16  # |mean| stays far below fp16's 65504 and std <= exp(10) (logvar clamped to 20): fp16's
# 10 mantissa bits beat bf16's 7; tiny stds fall to fp16 subnormals, an absolute error < 6e-8, far below the mean's own
FLUSH_SECONDS = 10.0  # how often encode_dataset makes its progress durable (fsync + progress.json)
PARTIAL_SUFFIX = ".partial"

# The Stable Diffusion VAE (stabilityai/sd-vae-ft-ema and -mse share it): 8x downsampling, 4 latent channels.
# Used for random-init weights of the right architecture where the real ones are absent (tests, benchmarks).
SD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256, scaling_factor=SD_VAE_SCALE,
)


def sample_posterior(mean: torch.Tensor, std: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """scale * (mean + std * eps), eps ~ N(0, I): one draw from the VAE posterior, scaled for the diffusion model."""
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return scale * (mean + std * eps)


class IdentityCodec:
    """Pixel space: the 'posterior' of x is a point mass at x (mean = x, std = 0); decode clamps to [-1, 1]."""

    name, vae, scale, downsample = "identity", None, 1.0, 1
    latent_channels = None  # the images' own channels

    def latent_shape(self, channels: int, size: int) -> tuple[int, int, int]:
        return channels, size, size

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float()  # (N, C, H, W)
        return x, torch.zeros_like(x)

    def sample_latent(self, mean, std, generator=None) -> torch.Tensor:
        return mean.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.float().clamp(-1, 1)


class SDVAECodec:
    """The Stable Diffusion VAE (diffusers AutoencoderKL), as DiT uses it (Sec. 3.1).

    `encode_moments` returns the VAE's unscaled posterior (mean, std) in float32; `sample_latent`
    draws from it and multiplies by `scale` (0.18215); `decode` divides by `scale` and returns
    images in [-1, 1]. The VAE runs on `device` in `dtype` (bf16 is the fast path on GPUs).
    """

    name = "sd-vae"

    def __init__(self, model, *, source: str | None = None, device="cpu", dtype=torch.float32):
        self.vae = source  # what the weights were loaded from (hub id or folder), recorded in caches
        # nn.Module.to: diffusers' own .to warns about fp32-pinned modules on any dtype cast; AutoencoderKL has none
        self.model = torch.nn.Module.to(model, device=device, dtype=dtype).eval().requires_grad_(False)
        self.device, self.dtype, self.scale = torch.device(device), dtype, SD_VAE_SCALE
        self.latent_channels = model.config.latent_channels
        self.downsample = 2 ** (len(model.config.block_out_channels) - 1)

    def latent_shape(self, channels: int, size: int) -> tuple[int, int, int]:
        expected = self.model.config.in_channels
        if channels != expected:
            raise ValueError(f"the VAE encodes {expected}-channel images, the data has {channels}; use --codec identity for such data")
        if size % self.downsample:
            raise ValueError(f"image side {size} does not divide by the VAE's downsampling {self.downsample}; choose one that does (e.g. 256)")
        return self.latent_channels, size // self.downsample, size // self.downsample

    @torch.inference_mode()
    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, self.dtype, non_blocking=True)  # (N, 3, H, W) in [-1, 1]
        posterior = self.model.encode(x).latent_dist
        return posterior.mean.float(), posterior.std.float()  # (N, C, H/8, W/8) each

    def sample_latent(self, mean, std, generator=None) -> torch.Tensor:
        return sample_posterior(mean, std, self.scale, generator)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, self.dtype) / self.scale  # (N, C, h, w)
        return self.model.decode(z).sample.float().clamp(-1, 1)  # (N, 3, 8h, 8w)


def load_vae(vae: str, *, download: bool = False):
    """A diffusers AutoencoderKL from a local folder (save_pretrained layout, or a pipeline folder with a
    `vae/` sub-folder) or a Hugging Face hub id. Without `download` the hub library is put in offline mode
    (it would otherwise retry the network for ~25 s), so a hub id that is not in the local cache fails at
    once with a line that says how to give a local folder."""
    from diffusers import AutoencoderKL

    path = Path(vae).expanduser()
    if path.is_dir():
        path = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (path / "config.json").is_file():
            raise ValueError(f"VAE folder {vae} has no config.json; give a folder written by AutoencoderKL.save_pretrained")
    try:
        with _quiet_load(offline=not download):
            return AutoencoderKL.from_pretrained(path if path.is_dir() else vae, local_files_only=not download, low_cpu_mem_usage=False)
    except (OSError, ValueError) as exc:
        if path.is_dir():
            raise ValueError(f"cannot load the VAE in {path}: {str(exc).splitlines()[0]}") from None
        where = "could not be downloaded" if download else "is not in the Hugging Face cache (nothing is downloaded without --download)"
        raise ValueError(f"VAE {vae!r} is not a local folder and {where}; run `huggingface-cli download {vae} --local-dir DIR` "
                         f"where there is network and pass --vae DIR") from None


@contextlib.contextmanager
def _quiet_load(offline: bool):
    """For the duration of a load: huggingface_hub's offline mode (HF_HUB_OFFLINE, read once at its import)
    when `offline`, and no diffusers/hub chatter on stderr (our error is the one line a user sees)."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import constants

    saved, verbosity = constants.HF_HUB_OFFLINE, diffusers_logging.get_verbosity()
    constants.HF_HUB_OFFLINE = saved or offline
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # huggingface_hub warns about arguments diffusers passes it
            yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        diffusers_logging.set_verbosity(verbosity)


CODECS = Registry("codec", {"identity": IdentityCodec, "sd-vae": SDVAECodec})


def get_codec(name: str, *, vae: str | None = None, device="cpu", dtype=torch.float32, download: bool = False):
    """The latent codec `name` ('identity' for pixels, 'sd-vae' with `vae` a hub id or local folder)."""
    CODECS.check(name)
    if name == "identity":
        if vae:
            raise ValueError("the identity codec (pixel space) takes no VAE; drop --vae or use --codec sd-vae")
        return IdentityCodec()
    if not vae:
        raise ValueError("the sd-vae codec needs a VAE: a hub id such as stabilityai/sd-vae-ft-ema or a local folder")
    source = str(Path(vae).expanduser().resolve()) if Path(vae).expanduser().is_dir() else vae
    return SDVAECodec(load_vae(vae, download=download), source=source, device=device, dtype=dtype)


# ----------------------------------------------------------------------------- the latent cache

def is_latent_cache(path) -> bool:
    """Whether `path` is a complete latent cache written by `encode_dataset` (a partial one is not)."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text())
    except (OSError, ValueError, TypeError):
        return False
    return isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT and (Path(path) / "moments.npy").is_file()


def read_cache_meta(path) -> dict:
    if not is_latent_cache(path):
        raise ValueError(f"{path} is not a complete latent cache; write one with `scaling encode --data DIR --vae ID_OR_PATH --out {path}`")
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
    _encode_into(dataset, codec, partial, done, header, batch_size=batch_size, num_workers=num_workers, progress=progress)
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
            raise ValueError(f"{partial} holds an unfinished encode with other settings or data; delete it to start over")
        return state["done"]
    tmp = partial.with_name(partial.name + ".new")  # the folder appears whole, with its progress file
    tmp.mkdir(parents=True, exist_ok=True)
    c, s = header["latent_channels"], header["latent_size"]
    shape = (header["count"], header["flips"], 2, c, s, s)
    np.lib.format.open_memmap(tmp / "moments.npy", mode="w+", dtype=CACHE_DTYPE, shape=shape).flush()  # sparse, final size
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
        raise ValueError(f"the VAE gave non-finite moments for images {first}..{first + len(x) - 1}; encode in fp32 (--precision fp32)")
    return both.numpy()


def _make_durable(partial: Path, moments: np.memmap, labels: np.memmap, header: dict, done: int):
    moments.flush()
    labels.flush()
    atomic_write_text(partial / "progress.json", json.dumps({"header": header, "done": done}))
