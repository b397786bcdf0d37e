"""FID, sFID, Inception Score and improved Precision/Recall, computed as the ADM evaluator does.

The DiT paper (Peebles & Xie, Sec. 5) reports FID-50K, sFID, IS and Precision/Recall from ADM's
TensorFlow evaluator (Dhariwal & Nichol, openai/guided-diffusion `evaluations/evaluator.py`).
Each function here follows that evaluator's arithmetic; features come from `eval.features`.

- FID (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)). With both
  covariances positive definite, tr(sqrtm(S1 S2)) comes from two symmetric eigen-solves (the same
  number as `scipy.linalg.sqrtm`'s, many times faster, on the GPU when the features are there);
  otherwise from `scipy.linalg.sqrtm` as ADM: a non-finite root is retried with 1e-6 on both
  diagonals, and an imaginary part is dropped when the diagonal's is below 1e-3 (otherwise an error).
- sFID (Nash et al. 2021): the same distance on spatial features.
- IS (Salimans et al. 2016): exp(E KL(p(y|x) || p(y))) on consecutive splits of 5,000, averaged.
- Precision/Recall (Kynkaanniemi et al. 2019): k = 3 nearest-neighbour balls on the reference
  and the sample features, distances in blocks of 10,000 rows.
- KID (Binkowski et al. 2018), not in the paper, as torch-fidelity defines it: the unbiased MMD^2
  with the polynomial kernel k(x, y) = (x.y / D + 1)^3, on 100 random subsets of 1,000 samples and
  1,000 reference features (fewer when either side has fewer), subsets drawn as torch-fidelity draws
  them (numpy RandomState(2020), samples first), so the same features give torch-fidelity's numbers.
"""
import warnings

import numpy as np
import torch
from scipy import linalg

FID_EPS = 1e-6  # ADM's diagonal offset when sqrtm(S1 S2) is not finite
IMAG_ATOL = 1e-3  # largest imaginary part on the diagonal of sqrtm(S1 S2) that ADM drops
SINGULAR_RTOL = 1e-10  # smallest/largest eigenvalue at or below which a covariance counts as singular
IS_SPLIT_SIZE = 5000  # ADM: IS on consecutive splits of 5,000 samples
PR_K = 3  # Kynkaanniemi et al.: the k-th nearest neighbour sets each ball's radius
PR_BLOCK = 10_000  # ADM's row/column batch for pairwise distances
KID_SUBSETS = 100  # torch-fidelity's kid_subsets
KID_SUBSET_SIZE = 1000  # torch-fidelity's kid_subset_size
KID_DEGREE = 3  # polynomial kernel degree (gamma = 1 / D, coef0 = 1)
KID_SEED = 2020  # torch-fidelity's rng_seed


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), float64, as np.mean / np.cov(rowvar=False)."""
    x = features.to(torch.float64)  # (N, D)
    mu = x.mean(0)  # (D,)
    xc = x - mu  # (N, D)
    sigma = xc.T @ xc / (x.shape[0] - 1)  # (D, D)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = FID_EPS, device=None) -> float:
    """Frechet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), ADM's way (see module doc).

    `device` is where the eigen-solves run (a torch device; default the CPU).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics of different sizes ({mu1.shape[0]} vs {mu2.shape[0]} dims): "
                         f"were they made with different feature extractors?")
    diff = mu1 - mu2
    trace_root = _trace_sqrt_product(sigma1, sigma2, device)
    if trace_root is None:
        trace_root = _trace_sqrtm_adm(sigma1, sigma2, eps)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


def _trace_sqrt_product(sigma1, sigma2, device=None) -> float | None:
    """tr(sqrtm(S1 S2)) for positive definite S1, S2; None when either is singular or indefinite.

    S1 S2 = S1^1/2 (S1^1/2 S2 S1^1/2) S1^-1/2 is similar to a symmetric positive semi-definite
    matrix, so its root's trace is the sum of the square roots of that matrix's eigenvalues.
    """
    s1, s2 = (torch.from_numpy(s).to(device or "cpu") for s in (sigma1, sigma2))
    w1, v1 = torch.linalg.eigh(s1)  # ascending eigenvalues
    w2 = torch.linalg.eigvalsh(s2)
    if any(w[0] <= SINGULAR_RTOL * w[-1] for w in (w1, w2)):
        return None  # scipy's sqrtm may not be finite here: ADM's retry decides the value
    root1 = (v1 * w1.sqrt()) @ v1.T  # (D, D) S1^1/2
    inner = root1 @ s2 @ root1
    inner = (inner + inner.T) / 2  # symmetric up to rounding; made exactly so for eigvalsh
    return torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum().item()


def _trace_sqrtm_adm(sigma1, sigma2, eps: float) -> float:
    """tr(sqrtm(S1 S2)) with scipy, retried with eps on both diagonals when not finite, as ADM."""
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"sqrtm(S1 S2) is not finite; adding {eps} to the covariance diagonals (as ADM does)",
                      stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAG_ATOL):
            raise ValueError(f"sqrtm(S1 S2) has an imaginary part of {np.abs(covmean.imag).max():.3g}: "
                             f"the covariances are too degenerate for FID (more samples needed)")
        covmean = covmean.real
    return float(np.trace(covmean))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy.linalg.sqrtm (the caller checks the result; numpy's floating-point warnings silenced)."""
    with np.errstate(all="ignore"):
        return linalg.sqrtm(a)


def inception_score(logits: torch.Tensor, split_size: int = IS_SPLIT_SIZE) -> float:
    """Inception Score of logits (N, K): mean over consecutive splits of exp(E_x KL(p(y|x) || p(y)))."""
    log_p = torch.log_softmax(logits.to(torch.float64), dim=1)  # (N, K)
    scores = []
    for part in log_p.split(split_size):
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])  # (K,) log mean_x p(y|x)
        kl = (part.exp() * (part - log_marginal)).sum(1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores))


def pairwise_sq_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (Nu, Nv) = max(|u|^2 - 2 u.v + |v|^2, 0), as ADM's DistanceBlock."""
    d = (u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :]  # (Nu, Nv)
    return d.clamp_min_(0)


def manifold_radii(features: torch.Tensor, k: int = PR_K, block: int = PR_BLOCK) -> torch.Tensor:
    """Squared distance of each feature (N, D) to its k-th nearest neighbour in the set (itself excluded)."""
    radii = []
    for rows in features.split(block):
        candidates = torch.cat(
            [_smallest(pairwise_sq_distances(rows, cols), k + 1) for cols in features.split(block)], dim=1
        )
        radii.append(_smallest(candidates, k + 1)[:, k])  # the k+1 smallest, sorted; index 0 is the point itself
    return torch.cat(radii)  # (N,)


def _smallest(d: torch.Tensor, n: int) -> torch.Tensor:
    """The n smallest entries of each row of d, ascending (all of them when a row is shorter)."""
    return d.topk(min(n, d.shape[1]), dim=1, largest=False, sorted=True).values


def precision_recall(ref: torch.Tensor, samples: torch.Tensor, k: int = PR_K, block: int = PR_BLOCK,
                     dtype: torch.dtype = torch.float64) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of sample features against reference features.

    Precision: the share of samples inside some reference ball; recall: the share of reference
    points inside some sample ball; a ball's squared radius is its centre's k-th neighbour distance.
    Distances are float64 by default, so no comparison flips from rounding (ADM used float16).
    """
    if min(len(ref), len(samples)) <= k:
        raise ValueError(
            f"precision/recall need more than k = {k} images on each side, got {len(ref)} reference and "
            f"{len(samples)} samples"
        )
    ref, samples = ref.to(dtype), samples.to(dtype)
    ref_radii, sample_radii = manifold_radii(ref, k, block), manifold_radii(samples, k, block)
    sample_in = torch.zeros(len(samples), dtype=torch.bool, device=samples.device)
    ref_in = torch.zeros(len(ref), dtype=torch.bool, device=ref.device)
    for i, ref_rows in enumerate(ref.split(block)):
        rr = ref_radii[i * block : i * block + len(ref_rows)]
        for j, sample_rows in enumerate(samples.split(block)):
            sr = sample_radii[j * block : j * block + len(sample_rows)]
            d = pairwise_sq_distances(ref_rows, sample_rows)  # (Br, Bs)
            sample_in[j * block : j * block + len(sample_rows)] |= (d <= rr[:, None]).any(0)
            ref_in[i * block : i * block + len(ref_rows)] |= (d <= sr[None, :]).any(1)
    return sample_in.double().mean().item(), ref_in.double().mean().item()


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = KID_DEGREE) -> torch.Tensor:
    """k(x, y) = (x.y / D + 1)^degree for rows of x (Nx, D) and y (Ny, D) -> (Nx, Ny)."""
    return (x @ y.T / x.shape[1] + 1) ** degree


def unbiased_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 of two equal-sized sets (m, D): the kernel means within x and within y without
    their diagonals, minus twice the mean across (its diagonal kept), as torch-fidelity's `mmd2`."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)  # (m, m) each
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return (within - 2 * k_xy.sum() / (m * m)).item()


def kernel_inception_distance(samples: torch.Tensor, ref: torch.Tensor, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = KID_SEED) -> tuple[float, float]:
    """KID of sample features (N1, D) against reference features (N2, D): mean and std over `subsets`
    unbiased MMD^2 estimates, each on `subset_size` rows of both drawn without replacement (see module doc)."""
    size = min(subset_size, len(samples), len(ref))
    if size < 2:
        raise ValueError(
            f"KID needs at least 2 images on each side, got {len(samples)} samples and {len(ref)} reference"
        )
    samples, ref = samples.to(torch.float64), ref.to(torch.float64)
    rng = np.random.RandomState(seed)
    mmds = []
    for _ in range(subsets):
        rows_samples = torch.from_numpy(rng.choice(len(samples), size, replace=False)).to(samples.device)
        rows_ref = torch.from_numpy(rng.choice(len(ref), size, replace=False)).to(ref.device)
        mmds.append(unbiased_mmd2(samples[rows_samples], ref[rows_ref]))
    return float(np.mean(mmds)), float(np.std(mmds))
