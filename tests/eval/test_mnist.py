"""The `mnist` evaluator: a cached digit classifier whose features separate real digits from noise."""
import numpy as np
import pytest
import torch

from eval import metrics
from eval.extract import extract_features
from eval.features import mnist
from eval.images import ArrayImages
from tests.eval.conftest import numpy_fid


@pytest.fixture(scope="module")
def feature_sets(mnist_extractor, digits):
    """Features of two disjoint halves of the real digits, of uniform noise, and of pixel-shuffled digits."""
    images, _ = digits
    rng = np.random.default_rng(0)
    half = len(images) // 2
    noise = rng.integers(0, 256, size=images[half:].shape, dtype=np.uint8)
    shuffled = np.stack([im.reshape(-1)[rng.permutation(im.size)].reshape(im.shape) for im in images[half:]])
    sets = {"real_a": images[:half], "real_b": images[half:], "noise": noise, "shuffled": shuffled}
    return {k: extract_features(ArrayImages(v), mnist_extractor, progress=False) for k, v in sets.items()}


def fid_of(a, b, part="pool"):
    return numpy_fid(getattr(a, part).double().numpy(), getattr(b, part).double().numpy())


def test_classifier_is_accurate_and_cached(mnist_extractor, user_cache, monkeypatch):
    assert mnist_extractor.test_accuracy >= 0.95
    recipe = mnist.Recipe()
    path = user_cache / "dit-scaling" / f"mnist-classifier-{recipe.key()}.pt"
    assert path.is_file()
    monkeypatch.setattr(mnist, "train_classifier", lambda recipe: pytest.fail("retrained despite the cache"))
    model, accuracy = mnist.load_classifier(recipe)
    assert accuracy == mnist_extractor.test_accuracy
    for p, q in zip(model.parameters(), mnist_extractor.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_recipe_key_follows_the_recipe():
    assert mnist.Recipe().key() == mnist.Recipe().key()
    assert mnist.Recipe(epochs=3).key() != mnist.Recipe().key()


def test_real_digits_are_close_and_noise_is_far(feature_sets):
    real = fid_of(feature_sets["real_a"], feature_sets["real_b"])
    assert real < 10  # measured about 1.5
    for fake in ("noise", "shuffled"):
        assert fid_of(feature_sets["real_a"], feature_sets[fake]) > 100  # measured about 800
        assert fid_of(feature_sets["real_a"], feature_sets[fake], "spatial") > 10 * fid_of(
            feature_sets["real_a"], feature_sets["real_b"], "spatial"
        )


def test_inception_score_and_precision_recall_mean_something(feature_sets):
    assert metrics.inception_score(feature_sets["real_b"].logits) > 8  # 10 classes, about 9.2 measured
    assert metrics.inception_score(feature_sets["noise"].logits) < 3
    precision, recall = metrics.precision_recall(feature_sets["real_a"].pool, feature_sets["real_b"].pool)
    assert precision > 0.8 and recall > 0.8
    precision, recall = metrics.precision_recall(feature_sets["real_a"].pool, feature_sets["noise"].pool)
    assert precision < 0.1 and recall < 0.1


def test_features_have_the_documented_sizes_and_accept_rgb_and_other_sizes(mnist_extractor, digits):
    grey = torch.from_numpy(digits[0][:6]).permute(0, 3, 1, 2)  # (6, 1, 32, 32)
    features = mnist_extractor(grey)
    assert features.pool.shape == (6, 64) and features.logits.shape == (6, 10) and features.spatial.shape == (6, 512)
    assert mnist_extractor.dims == {"pool": 64, "spatial": 512, "logits": 10}
    rgb = mnist_extractor(grey.expand(-1, 3, -1, -1))
    torch.testing.assert_close(rgb.pool, features.pool)
    larger = mnist_extractor(grey.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))  # 64 x 64
    assert (larger.logits.argmax(1) == features.logits.argmax(1)).float().mean() > 0.8
