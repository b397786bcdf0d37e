"""Latent codecs and the latent cache, checked against diffusers' own AutoencoderKL calls.

The VAE is a randomly initialised, tiny AutoencoderKL (the real SD-VAE weights cannot be downloaded
here) saved with save_pretrained, so the real loading code runs. 0.18215 is written out here as the
paper's number, not imported.
"""
import json
import pickle
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from dit import latent_cache, latents
from dit.data import build_dataset
from scaling.cli import main

SCALE = 0.18215  # DiT Sec. 3.1 / LDM: the SD-VAE latent scale
SIDE = 16  # image side; the tiny VAE halves it once


class Images(torch.utils.data.Dataset):
    """A few fixed images whose left and right halves differ strongly, so an image and its mirror encode apart."""

    class_names = ["left", "right"]
    num_classes = 2

    def __init__(self, n=5, seed=0, fail_at=None):
        g = torch.Generator().manual_seed(seed)
        ramp = torch.linspace(-0.8, 0.8, SIDE)  # dark on the left, bright on the right
        self.x = (ramp + 0.2 * torch.randn(n, 3, SIDE, SIDE, generator=g)).clamp(-1, 1)  # (n, 3, H, W)
        self.fail_at, self.read = fail_at, []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError("killed")
        self.read.append(i)
        return self.x[i], i % 2


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=SIDE,
    )
    with torch.no_grad():  # a narrow posterior (std ~ 0.05) like the trained SD-VAE's, so draws show their mirror
        vae.quant_conv.bias[4:] = -6.0  # the log-variance half of the moments
    folder = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(vae_dir):
    """diffusers' own posterior of each image and of its mirror: mean, std of shape (N, 2 flips, C, h, w)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    x = Images().x
    with torch.no_grad():
        dists = [vae.encode(v).latent_dist for v in (x, torch.flip(x, dims=[3]))]
    return vae, torch.stack([d.mean for d in dists], 1), torch.stack([d.std for d in dists], 1)


@pytest.fixture(scope="module")
def cache(vae_dir, tmp_path_factory):
    codec = latents.get_codec("sd-vae", vae=str(vae_dir))
    return latent_cache.encode_dataset(
        Images(), codec, tmp_path_factory.mktemp("c") / "cache", batch_size=2, progress=False
    )


def test_cache_holds_the_vae_posterior_of_each_image_and_its_mirror(cache, reference):
    _, mean, std = reference
    moments = np.load(cache / "moments.npy")
    assert moments.dtype == np.float16 and moments.shape == (5, 2, 2, 4, SIDE // 2, SIDE // 2)
    np.testing.assert_allclose(moments[:, :, 0], mean.numpy(), rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(moments[:, :, 1], std.numpy(), rtol=2e-3, atol=2e-3)
    assert (mean[:, 0] - mean[:, 1]).abs().mean() > 0.1  # the mirror is a different latent, not a copy
    np.testing.assert_array_equal(np.load(cache / "labels.npy"), [0, 1, 0, 1, 0])
    meta = json.loads((cache / "meta.json").read_text())
    assert (meta["scale"], meta["count"], meta["class_names"], meta["resolution"]) == (
        SCALE,
        5,
        ["left", "right"],
        SIDE,
    )


def test_stored_means_decode_like_the_vae_decodes_its_own_encoding(cache, reference, vae_dir):
    vae, mean, _ = reference
    codec = latents.get_codec("sd-vae", vae=str(vae_dir))
    stored = torch.from_numpy(np.load(cache / "moments.npy")[:, :, 0].astype(np.float32))  # (N, 2, C, h, w)
    for flip in (0, 1):
        with torch.no_grad():
            expected = vae.decode(mean[:, flip]).sample.clamp(-1, 1)  # (N, 3, H, W)
        decoded = codec.decode(SCALE * stored[:, flip])
        assert decoded.shape == (5, 3, SIDE, SIDE)
        torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-2)


def test_each_read_draws_a_fresh_flip_and_posterior_sample(cache, reference):
    _, mean, std = reference
    data = pickle.loads(pickle.dumps(latent_cache.LatentCacheDataset(cache)))  # as DataLoader workers get it
    assert (len(data), data.in_channels, data.image_size, data.num_classes, data.class_names) == (
        5,
        4,
        SIDE // 2,
        2,
        ["left", "right"],
    )
    torch.manual_seed(0)
    draws = torch.stack([data[3][0] for _ in range(400)]) / SCALE  # (400, C, h, w), unscaled
    # which mirror each draw came from: the Gaussian log-likelihood ratio of the two posteriors
    loglik = [(-0.5 * ((draws - mean[3, f]) / std[3, f]) ** 2 - std[3, f].log()).sum((1, 2, 3)) for f in (0, 1)]
    flip = (loglik[1] > loglik[0]).long()
    assert (loglik[1] - loglik[0]).abs().min() > 20  # every draw is unambiguously one of the two
    assert 0.35 < flip.float().mean() < 0.65
    z = (draws - mean[3][flip]) / std[3][flip]  # standardised under the chosen posterior: N(0, 1) if drawn right
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert not torch.equal(draws[flip == 0][0], draws[flip == 0][1])  # same flip, a new posterior sample
    torch.manual_seed(0)
    assert torch.equal(data[3][0] / SCALE, draws[0])  # draws come from torch's (seedable, per-worker) RNG


def test_identity_codec_round_trips_pixels():
    codec = latents.get_codec("identity")
    x = Images().x
    mean, std = codec.encode_moments(x)
    assert torch.equal(mean, x) and torch.equal(std, torch.zeros_like(x))
    assert torch.equal(codec.decode(codec.sample_latent(mean, std)), x)
    assert (codec.downsample, codec.scale, codec.latent_shape(3, SIDE)) == (1, 1.0, (3, SIDE, SIDE))


@pytest.mark.parametrize("flip", [True, False])
def test_identity_cache_reads_are_the_image_or_its_mirror(tmp_path, flip):
    images = Images()
    out = latent_cache.encode_dataset(
        images, latents.get_codec("identity"), tmp_path / "px", batch_size=2, progress=False, flip=flip
    )
    data = latent_cache.LatentCacheDataset(out)
    x = images.x[2].half().float()
    draws = [data[2][0] for _ in range(60)]
    mirrored = [torch.equal(d, torch.flip(x, dims=[2])) for d in draws]
    assert all(m or torch.equal(d, x) for m, d in zip(mirrored, draws, strict=True))
    assert sum(mirrored) in (range(10, 51) if flip else [0])


def test_killed_encode_leaves_no_cache_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(latent_cache, "FLUSH_SECONDS", 0.0)  # progress durable after every batch
    codec, out = latents.get_codec("identity"), tmp_path / "px"
    with pytest.raises(RuntimeError):
        latent_cache.encode_dataset(Images(fail_at=3), codec, out, batch_size=2, progress=False)
    assert not out.exists() and not latent_cache.is_latent_cache(out)
    assert not latent_cache.is_latent_cache(tmp_path / "px.partial")
    with pytest.raises(ValueError, match="other settings"):
        latent_cache.encode_dataset(Images(fail_at=3), codec, out, batch_size=2, progress=False, flip=False)
    resumed = Images()
    latent_cache.encode_dataset(resumed, codec, out, batch_size=2, progress=False)
    assert sorted(set(resumed.read)) == [0, 2, 3, 4]  # item 0 for the shapes, then from the last durable batch
    fresh = latent_cache.encode_dataset(Images(), codec, tmp_path / "fresh", batch_size=2, progress=False)
    np.testing.assert_array_equal(np.load(out / "moments.npy"), np.load(fresh / "moments.npy"))
    assert latent_cache.is_latent_cache(out) and not (tmp_path / "px.partial").exists()
    with pytest.raises(ValueError, match="already exists"):
        latent_cache.encode_dataset(Images(), codec, out, batch_size=2, progress=False)


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup is recorded and refused: loading must not reach for the network (it would retry for ~25 s)."""
    lookups = []

    def refuse(host, *args, **kwargs):
        lookups.append(host)
        raise OSError(f"network touched: {host}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return lookups


def test_a_hub_id_not_cached_fails_in_one_line_naming_the_fix(no_network):
    with pytest.raises(ValueError) as err:
        latents.get_codec("sd-vae", vae="nobody-here/not-a-cached-vae")
    assert no_network == []
    message = str(err.value)
    assert "\n" not in message and "nobody-here/not-a-cached-vae" in message and "--vae DIR" in message
    with pytest.raises(ValueError, match="choose one of identity, sd-vae"):
        latents.get_codec("sd-vea", vae="x")


def write_image_folder(root):
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_cli_writes_a_cache_that_build_dataset_loads(tmp_path, vae_dir, capsys):
    write_image_folder(tmp_path / "data")
    out = tmp_path / "latents"
    args = [
        "encode",
        "--data",
        str(tmp_path / "data"),
        "--vae",
        str(vae_dir),
        "--out",
        str(out),
        "--resolution",
        str(SIDE),
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args) == 0
    data = build_dataset(str(out))
    assert isinstance(data, latent_cache.LatentCacheDataset)
    assert (len(data), data.class_names, data.in_channels, data.image_size) == (6, ["cats", "dogs"], 4, SIDE // 2)
    x, y = data[4]
    assert x.shape == (4, SIDE // 2, SIDE // 2) and y == 1
    before = (out / "moments.npy").read_bytes()
    capsys.readouterr()
    assert main(args) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err and (out / "moments.npy").read_bytes() == before


@pytest.mark.parametrize("problem, expected",
                         [("missing", "does not exist"), ("empty", "holds no images"), ("hub", "--vae DIR")])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, vae_dir, capsys, no_network, problem, expected):
    write_image_folder(tmp_path / "data")
    if problem == "empty":
        (tmp_path / "data" / "birds").mkdir()
    data = tmp_path / ("nowhere" if problem == "missing" else "data")
    vae = "nobody-here/not-a-cached-vae" if problem == "hub" else str(vae_dir)
    assert main(["encode", "--data", str(data), "--vae", vae, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err and err.startswith("scaling encode: error:")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
