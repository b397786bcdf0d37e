import numpy as np
import pytest


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    """Random weights of torch-fidelity's InceptionV3 in a temporary file (no download possible here)."""
    from eval.features.inception import random_inception_weights

    return random_inception_weights(tmp_path_factory.mktemp("inception") / "inception-random.pth", seed=0)


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The user cache (MNIST classifier, torch hub) in a temporary folder for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("cache")
        mp.setenv("XDG_CACHE_HOME", str(cache))
        mp.setenv("TORCH_HOME", str(cache / "torch"))
        mp.delenv("DIT_INCEPTION_WEIGHTS", raising=False)
        yield cache


@pytest.fixture(scope="session")
def mnist_extractor(user_cache):
    from eval.features import get_extractor

    return get_extractor("mnist")


@pytest.fixture(scope="session")
def digits():
    """All 5,000 MNIST-32 digits, uint8 (N, 32, 32, 1), and their labels."""
    from dit.data import mnist32_arrays

    return mnist32_arrays()


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 RGB images (n, size, size, 3): random low-frequency patterns, unlike white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, 4, 4, 3))
    return np.kron(coarse, np.ones((1, size // 4, size // 4, 1))).round().astype(np.uint8)


def numpy_fid(x1: np.ndarray, x2: np.ndarray) -> float:
    """FID of two feature sets in plain numpy: tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), via eigh."""
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
