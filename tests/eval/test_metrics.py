"""The metrics against closed forms and plain numpy implementations written here."""
import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from eval import metrics
from tests.eval.conftest import numpy_fid


def commuting_gaussians(d: int, seed: int):
    """Two Gaussians whose covariances share eigenvectors, so the Frechet distance has a closed form."""
    rng = np.random.default_rng(seed)
    q = ortho_group.rvs(d, random_state=seed)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    closed_form = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    return mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T, closed_form


@pytest.mark.parametrize("d", [1, 8, 64])
def test_fid_matches_closed_form_of_two_gaussians(d):
    mu1, s1, mu2, s2, expected = commuting_gaussians(d, seed=d)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_from_features_matches_numpy():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32))
    x2 = 0.5 + rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32))
    (mu1, s1), (mu2, s2) = (
        metrics.feature_statistics(torch.from_numpy(x1).float()),
        metrics.feature_statistics(torch.from_numpy(x2).float()),
    )
    np.testing.assert_allclose(mu1, x1.astype(np.float32).mean(0), rtol=1e-5)
    np.testing.assert_allclose(s1, np.cov(x1.astype(np.float32), rowvar=False), rtol=1e-5, atol=1e-6)
    expected = numpy_fid(x1.astype(np.float32).astype(np.float64), x2.astype(np.float32).astype(np.float64))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_fid_of_identical_statistics_is_zero():
    mu, s, *_ = commuting_gaussians(16, seed=3)
    assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-9


def test_fid_equals_scipy_sqrtm_on_full_rank_covariances():
    from scipy import linalg

    rng = np.random.default_rng(1)
    x1 = rng.normal(size=(3000, 128)) @ rng.normal(size=(128, 128))
    x2 = 0.3 + rng.normal(size=(2000, 128)) @ rng.normal(size=(128, 128))
    mu1, s1, mu2, s2 = x1.mean(0), np.cov(x1, rowvar=False), x2.mean(0), np.cov(x2, rowvar=False)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_a_singular_covariance_takes_adms_retry_with_its_offset(monkeypatch):
    rng = np.random.default_rng(2)
    a, b = np.r_[0.0, rng.uniform(0.1, 3.0, 3)], rng.uniform(0.1, 3.0, 4)  # S1 has a zero eigenvalue
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    seen = []

    def flaky_sqrtm(m):
        seen.append(m)
        return np.full_like(m, np.nan) if len(seen) == 1 else metrics.linalg.sqrtm(m)

    monkeypatch.setattr(metrics, "_sqrtm", flaky_sqrtm)
    with pytest.warns(UserWarning, match="not finite"):
        value = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    eps = metrics.FID_EPS
    np.testing.assert_allclose(seen[1], np.diag((a + eps) * (b + eps)))
    expected = np.sum((mu1 - mu2) ** 2) + a.sum() + b.sum() - 2 * np.sqrt((a + eps) * (b + eps)).sum()
    assert value == pytest.approx(expected, rel=1e-12)


def test_fid_refuses_a_large_imaginary_part():
    s1, s2 = np.diag([1.0, 1.0]), np.diag([1.0, -4.0])  # not a covariance: sqrtm(S1 S2) has 2i on its diagonal
    with pytest.raises(ValueError, match="imaginary"):
        metrics.frechet_distance(np.zeros(2), s1, np.zeros(2), s2)


def test_fid_refuses_statistics_of_different_sizes():
    with pytest.raises(ValueError, match="different"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def numpy_inception_score(logits: np.ndarray, split_size: int) -> float:
    """ADM's formula on softmax probabilities, split by split."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(p), split_size):
        part = p[i : i + split_size]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores))


def test_inception_score_matches_numpy_with_adm_splits():
    logits = np.random.default_rng(0).normal(scale=3.0, size=(12_000, 20))  # splits of 5,000, 5,000, 2,000
    expected = numpy_inception_score(logits, 5000)
    assert metrics.inception_score(torch.from_numpy(logits)) == pytest.approx(expected, rel=1e-10)
    assert metrics.inception_score(torch.from_numpy(logits)) != pytest.approx(
        numpy_inception_score(logits, 12_000), rel=1e-6
    )


def test_inception_score_bounds():
    confident = torch.eye(10).repeat(50, 1) * 100.0  # every class equally often, each with certainty
    assert metrics.inception_score(confident) == pytest.approx(10.0, rel=1e-6)
    assert metrics.inception_score(torch.zeros(100, 10)) == pytest.approx(1.0)


def numpy_precision_recall(ref: np.ndarray, samples: np.ndarray, k: int = 3):
    """Kynkaanniemi et al. by brute force: full distance matrices, k-th neighbour radii, ball membership."""
    def sq_dists(a, b):
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    ref_radii = np.sort(sq_dists(ref, ref), axis=1)[:, k]
    sample_radii = np.sort(sq_dists(samples, samples), axis=1)[:, k]
    d = sq_dists(ref, samples)  # (N_ref, N_samples)
    precision = (d <= ref_radii[:, None]).any(0).mean()
    recall = (d <= sample_radii[None, :]).any(1).mean()
    return precision, recall


@pytest.mark.parametrize("block", [10_000, 37])
def test_precision_recall_match_brute_force(block):
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(300, 8))
    samples = 0.3 + 1.3 * rng.normal(size=(250, 8))  # shifted and wider: precision and recall below 1
    precision, recall = metrics.precision_recall(torch.from_numpy(ref), torch.from_numpy(samples), block=block)
    expected = numpy_precision_recall(ref, samples)
    assert (precision, recall) == pytest.approx(expected, abs=1e-12)
    assert 0.1 < precision < 0.99 and 0.1 < recall < 0.99


def test_precision_recall_of_a_set_against_itself_is_one():
    x = torch.randn(200, 5, dtype=torch.float64)
    assert metrics.precision_recall(x, x) == (1.0, 1.0)


def numpy_kid(x: np.ndarray, y: np.ndarray, subsets: int, size: int, seed: int) -> tuple[float, float]:
    """KID written from its definition: for each subset pair, the mean of k over pairs i != j within x and
    within y, minus twice the mean of k over all pairs across; k(a, b) = (a.b / D + 1)^3."""
    rng = np.random.RandomState(seed)
    estimates = []
    for _ in range(subsets):
        xs, ys = x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)]
        kernel = lambda a, b: (a @ b.T / x.shape[1] + 1) ** 3  # noqa: E731
        off_diagonal = ~np.eye(size, dtype=bool)
        estimates.append(kernel(xs, xs)[off_diagonal].mean() + kernel(ys, ys)[off_diagonal].mean()
                         - 2 * kernel(xs, ys).mean())
    return float(np.mean(estimates)), float(np.std(estimates))


def kid_features(seed: int = 0, shift: float = 0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(260, 16)) @ rng.normal(size=(16, 16)) / 4
    y = shift + rng.normal(size=(230, 16)) @ rng.normal(size=(16, 16)) / 4
    return x, y


def test_kid_matches_numpy_from_its_definition():
    x, y = kid_features()
    mean, std = metrics.kernel_inception_distance(
        torch.from_numpy(x), torch.from_numpy(y), subsets=7, subset_size=100, seed=3
    )
    expected = numpy_kid(x, y, subsets=7, size=100, seed=3)
    assert (mean, std) == pytest.approx(expected, rel=1e-9)
    assert mean > 0.01  # shifted sets


def test_kid_matches_torch_fidelity_on_the_same_features():
    from torch_fidelity.metric_kid import kid_features_to_metric

    x, y = kid_features(seed=1)
    x, y = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    theirs = kid_features_to_metric(x, y, kid_subsets=5, kid_subset_size=200, rng_seed=metrics.KID_SEED, verbose=False,
                                    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                    kid_kernel_poly_coef0=1)
    mean, std = metrics.kernel_inception_distance(x, y, subsets=5, subset_size=200)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)


def test_kid_subsets_shrink_to_the_smaller_set_and_vanish_for_one_distribution():
    x, y = kid_features(seed=2, shift=1.0)
    same = metrics.kernel_inception_distance(
        torch.from_numpy(x[:130]), torch.from_numpy(x[130:]), subsets=3
    )  # 1,000 > 130
    assert same == pytest.approx(numpy_kid(x[:130], x[130:], subsets=3, size=130, seed=metrics.KID_SEED), rel=1e-9)
    shifted = metrics.kernel_inception_distance(torch.from_numpy(x[:130]), torch.from_numpy(y[:130]), subsets=3)
    assert abs(same[0]) < shifted[0] / 10
    with pytest.raises(ValueError, match="at least 2 images"):
        metrics.kernel_inception_distance(torch.zeros(1, 4), torch.zeros(5, 4))
