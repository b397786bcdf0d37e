"""Reference statistics in the ADM evaluator's `.npz` layout.

An ADM reference batch (e.g. `VIRTUAL_imagenet256_labeled.npz`) holds `mu`, `sigma` (pool_3
mean and covariance), `mu_s`, `sigma_s` (the same for the spatial features) and `arr_0`, uint8
reference images (N, H, W, C) for Precision/Recall. Files written here add `features`, the
extractor's name, which ADM's evaluator ignores. A file with only `arr_0` is also a reference:
its statistics are computed from the images, as ADM does.
"""
import dataclasses
from pathlib import Path

import numpy as np

from dit.io import atomic_path
from eval.images import IMAGES_KEY, NpzImages, npz_keys

STAT_KEYS = ("mu", "sigma", "mu_s", "sigma_s")
FEATURES_KEY = "features"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReferenceStats:
    """Mean and covariance of the pool features (mu, sigma) and of the spatial features (mu_s, sigma_s)."""

    mu: np.ndarray  # (D,)
    sigma: np.ndarray  # (D, D)
    mu_s: np.ndarray  # (Ds,)
    sigma_s: np.ndarray  # (Ds, Ds)
    features: str | None = None  # extractor name; None in ADM's own files

    def __post_init__(self):
        for mu, sigma in ((self.mu, self.sigma), (self.mu_s, self.sigma_s)):
            if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
                raise ValueError(
                    f"reference statistics have a mean of shape {mu.shape} and a covariance of shape {sigma.shape}"
                )
            if not (np.issubdtype(mu.dtype, np.number) and np.issubdtype(sigma.dtype, np.number)):
                raise ValueError(f"reference statistics are of type {mu.dtype} and {sigma.dtype}, not numbers")
            if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
                raise ValueError("reference statistics hold NaN or infinite values")


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a reference `.npz` holds: statistics, images, or both."""

    path: Path
    stats: ReferenceStats | None
    images: NpzImages | None


def read_reference(path) -> Reference:
    """Open a reference `.npz` (ADM's or ours); ValueError when it has neither statistics nor images."""
    path, name = Path(path), f"reference file {path}"
    keys = npz_keys(path, name)
    present = [k for k in STAT_KEYS if k in keys]
    if present and len(present) < len(STAT_KEYS):
        missing = [k for k in STAT_KEYS if k not in keys]
        raise ValueError(f"{name} has {', '.join(present)} but not {', '.join(missing)}; "
                         f"remake it with `scaling ref-stats`")
    if not present and IMAGES_KEY not in keys:
        raise ValueError(f"{name} has neither statistics ({', '.join(STAT_KEYS)}) nor images (arr_0); "
                         f"make one with `scaling ref-stats --data DIR_OR_NPZ --out {path.name}`")
    stats = None
    if present:
        stats = read_stats(path, name, keys)
    images = NpzImages(path, what="reference") if IMAGES_KEY in keys else None
    return Reference(path, stats, images)


def features_to_use(features: str | None, stats: ReferenceStats | None) -> str:
    """The features asked for, else the reference's own, else inception; ValueError, before any network loads,
    when the asked and the recorded differ."""
    recorded = stats.features if stats is not None else None
    if features is not None and recorded is not None and features != recorded:
        raise ValueError(f"the reference statistics were made with --features {recorded}, not {features}; "
                         f"evaluate with --features {recorded} (or leave --features out) or remake the reference")
    return features or recorded or "inception"


def read_stats(path: Path, name: str, keys) -> ReferenceStats:
    """The statistics of a reference `.npz`, checked (numbers, shapes, finite) as they are read."""
    try:
        with np.load(path) as f:
            features = str(f[FEATURES_KEY]) if FEATURES_KEY in keys else None
            return ReferenceStats(**{k: f[k] for k in STAT_KEYS}, features=features)
    except ValueError as exc:  # object arrays (refused unread), wrong shapes, NaN
        raise ValueError(f"{name}: {exc}; remake it with `scaling ref-stats` or give ADM's reference batch") from None


def write_reference(path, stats: ReferenceStats, images: np.ndarray | None = None) -> Path:
    """Write `stats` (and reference images, uint8 (N, H, W, C)) atomically in ADM's layout."""
    arrays = {k: getattr(stats, k) for k in STAT_KEYS}
    if stats.features is not None:
        arrays[FEATURES_KEY] = np.array(stats.features)
    if images is not None:
        arrays[IMAGES_KEY] = images
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def stats_from_features(features, name: str | None = None) -> ReferenceStats:
    """ReferenceStats of extracted Features (pool -> mu, sigma; spatial -> mu_s, sigma_s)."""
    from eval.metrics import feature_statistics

    (mu, sigma), (mu_s, sigma_s) = feature_statistics(features.pool), feature_statistics(features.spatial)
    return ReferenceStats(mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s, features=name)


def make_reference(data: str, out, features: str = "inception", *, resolution: int | None = None,
                   num_images: int = 10_000, seed: int = 0, device=None, batch_size: int | None = None,
                   inception_weights=None, precision: str | None = None, progress: bool = True) -> Path:
    """Statistics of every image in `data` plus `num_images` of them picked at random (arr_0, for
    Precision/Recall), written to `out`. `data`: 'mnist32', an .npz with arr_0, or an image folder
    (centre-cropped to `resolution`, default 256); see eval.images.open_source. Runs in this process
    alone, also under torchrun (call it on one rank)."""
    from eval.extract import check_batch_size, default_precision, extract_features, resolve_device
    from eval.features import get_extractor
    from eval.images import check_value_range, open_source

    check_batch_size(batch_size)
    device = resolve_device(device)
    source = open_source(data, resolution, what="data")
    check_value_range(source)
    keep = np.sort(np.random.default_rng(seed).permutation(source.num)[:num_images])
    kept = np.empty((len(keep), *source.shape), dtype=np.uint8)

    def keep_rows(start: int, batch: np.ndarray):
        lo, hi = np.searchsorted(keep, [start, start + len(batch)])
        kept[lo:hi] = batch[keep[lo:hi] - start]

    extractor = get_extractor(
        features, device, weights=inception_weights, precision=precision or default_precision(device)
    )
    feats = extract_features(source, extractor, batch_size=batch_size, progress=progress, desc="reference",
                             on_batch=keep_rows, shard=False)  # one process: it writes the file
    return write_reference(out, stats_from_features(feats, features), kept)
