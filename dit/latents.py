"""Latent codecs: pixels as they are, or the Stable Diffusion VAE.

DiT (Peebles & Xie, Sec. 3.1 "Latent diffusion") trains in the latent space of the off-the-shelf
Stable Diffusion VAE: a 256 x 256 x 3 image becomes a 32 x 32 x 4 latent z = 0.18215 * (mean + std * eps)
drawn from the encoder's diagonal Gaussian posterior. The official training code encodes every image
(randomly flipped) at every step; `dit.latent_cache` stores the posterior instead.
"""
import contextlib
import warnings
from pathlib import Path

import torch

from study.registry import Registry

SD_VAE_SCALE = 0.18215  # latents = SD_VAE_SCALE * z gives roughly unit variance (LDM, Rombach et al.; DiT Sec. 3.1)

# The Stable Diffusion VAE (stabilityai/sd-vae-ft-ema and -mse share it): 8x downsampling, 4 latent channels.
# Used for random-init weights of the right architecture where the real ones are absent (tests, benchmarks).
SD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256, scaling_factor=SD_VAE_SCALE,
)


def sample_posterior(
    mean: torch.Tensor, std: torch.Tensor, scale: float, generator: torch.Generator | None = None
) -> torch.Tensor:
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
            raise ValueError(
                f"the VAE encodes {expected}-channel images, the data has {channels}; use --codec identity for such "
                "data"
            )
        if size % self.downsample:
            raise ValueError(
                f"image side {size} does not divide by the VAE's downsampling {self.downsample}; choose one that does "
                "(e.g. 256)"
            )
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
            raise ValueError(
                f"VAE folder {vae} has no config.json; give a folder written by AutoencoderKL.save_pretrained"
            )
    try:
        with _quiet_load(offline=not download):
            return AutoencoderKL.from_pretrained(
                path if path.is_dir() else vae, local_files_only=not download, low_cpu_mem_usage=False
            )
    except (OSError, ValueError) as exc:
        if path.is_dir():
            raise ValueError(f"cannot load the VAE in {path}: {str(exc).splitlines()[0]}") from None
        where = (
            "could not be downloaded"
            if download
            else "is not in the Hugging Face cache (only `scaling encode --download` downloads one)"
        )
        raise ValueError(
            f"VAE {vae!r} is not a local folder and {where}; run `huggingface-cli download {vae} --local-dir DIR` "
            f"where there is network and pass --vae DIR"
        ) from None


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

