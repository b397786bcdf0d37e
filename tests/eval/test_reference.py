"""Reference statistics in ADM's .npz layout: round trips, ADM's own files, and making one from data."""
import math

import numpy as np
import pytest

from eval import metrics
from eval.evaluate import DEFAULT_COLUMNS as METRICS
from eval.evaluate import evaluate_samples
from eval.extract import extract_features
from eval.images import ArrayImages
from eval.reference import STAT_KEYS, ReferenceStats, make_reference, read_reference, write_reference


def random_stats(d=6, ds=5, seed=0, features=None):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(40, d)), rng.normal(size=(40, ds))
    return ReferenceStats(
        mu=a.mean(0), sigma=np.cov(a, rowvar=False), mu_s=b.mean(0), sigma_s=np.cov(b, rowvar=False), features=features
    )


def test_round_trip_gives_identical_arrays_and_numbers(tmp_path):
    stats, other = random_stats(features="mnist"), random_stats(seed=1)
    images = np.random.default_rng(0).integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    ref = read_reference(write_reference(tmp_path / "ref.npz", stats, images))
    for key in STAT_KEYS:
        assert np.array_equal(getattr(ref.stats, key), getattr(stats, key))
    assert ref.stats.features == "mnist"
    assert np.array_equal(np.concatenate(list(ref.images.batches(3))), images)
    before = metrics.frechet_distance(other.mu, other.sigma, stats.mu, stats.sigma)
    assert metrics.frechet_distance(other.mu, other.sigma, ref.stats.mu, ref.stats.sigma) == before
    with np.load(tmp_path / "ref.npz") as f:
        assert sorted(f.keys()) == sorted([*STAT_KEYS, "arr_0", "features"])


def test_adm_reference_batch_loads_as_it_is(tmp_path):
    """ADM's files (e.g. VIRTUAL_imagenet256_labeled.npz) hold exactly arr_0, mu, sigma, mu_s, sigma_s."""
    stats = random_stats()
    images = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    np.savez(
        tmp_path / "adm.npz",
        arr_0=images,
        mu=stats.mu.astype(np.float32),
        sigma=stats.sigma,
        mu_s=stats.mu_s,
        sigma_s=stats.sigma_s,
    )
    ref = read_reference(tmp_path / "adm.npz")
    assert ref.stats.features is None and ref.images.num == 4 and ref.images.shape == (16, 16, 3)
    assert np.array_equal(ref.stats.mu, stats.mu.astype(np.float32))


def test_incomplete_or_empty_references_are_refused(tmp_path):
    stats = random_stats()
    np.savez(tmp_path / "partial.npz", mu=stats.mu, sigma=stats.sigma)
    with pytest.raises(ValueError, match="not mu_s, sigma_s"):
        read_reference(tmp_path / "partial.npz")
    np.savez(tmp_path / "empty.npz", labels=np.zeros(3))
    with pytest.raises(ValueError, match="neither statistics"):
        read_reference(tmp_path / "empty.npz")


def test_make_reference_from_npz_keeps_a_random_subset(tmp_path, digits, mnist_extractor):
    images = digits[0][:300]
    np.savez(tmp_path / "data.npz", arr_0=images)
    ref = read_reference(
        make_reference(str(tmp_path / "data.npz"), tmp_path / "ref.npz", "mnist", num_images=50, progress=False)
    )
    kept = np.concatenate(list(ref.images.batches(100)))
    assert kept.shape == (50, 32, 32, 1)
    flat = {im.tobytes(): i for i, im in enumerate(images)}
    positions = [flat[im.tobytes()] for im in kept]
    assert positions == sorted(positions) and positions != list(range(50))  # a random subset, in data order
    features = extract_features(ArrayImages(images), mnist_extractor, progress=False).pool.double().numpy()
    np.testing.assert_allclose(ref.stats.mu, features.mean(0), rtol=1e-5, atol=1e-5)  # float32 features
    np.testing.assert_allclose(ref.stats.sigma, np.cov(features, rowvar=False), rtol=1e-5, atol=1e-5)
    assert ref.stats.features == "mnist"


def test_reference_with_only_images_gives_the_same_metrics_as_its_statistics(tmp_path, digits):
    images = digits[0]
    np.savez(tmp_path / "samples.npz", arr_0=images[:600])
    np.savez(tmp_path / "ref_images.npz", arr_0=images[1000:1600])
    make_reference(str(tmp_path / "ref_images.npz"), tmp_path / "ref_stats.npz", "mnist", progress=False)
    with_stats = evaluate_samples(tmp_path / "samples.npz", tmp_path / "ref_stats.npz", "mnist", progress=False)
    images_only = evaluate_samples(tmp_path / "samples.npz", tmp_path / "ref_images.npz", "mnist", progress=False)
    for key in METRICS:
        assert with_stats[key] == pytest.approx(images_only[key], rel=1e-6, nan_ok=True)
    assert math.isnan(with_stats["class_accuracy"])  # these samples carry no labels (arr_1)
    assert with_stats["num_samples"] == 600 and with_stats["features"] == "mnist"
