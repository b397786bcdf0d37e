"""Samples + reference -> the paper's five metrics: FID, sFID, Inception Score, Precision, Recall.

`evaluate_samples("samples.npz", "ref.npz")` is what `scaling eval` and the grid call. It checks
its inputs first (one clear ValueError each), extracts sample features (and reference features
when the reference holds images, for Precision/Recall), then computes the metrics; the two
matrix square roots run on CPU threads while the GPU does the Precision/Recall distances.
"""
import warnings
from concurrent.futures import ThreadPoolExecutor

from scipy.linalg import LinAlgWarning

from eval import metrics
from eval.extract import check_batch_size, default_precision, extract_features, resolve_device
from eval.features import Features, get_extractor
from eval.images import NpzImages, check_value_range
from eval.reference import ReferenceStats, read_reference, stats_from_features

LABELS_KEY = "arr_1"


def evaluate_samples(samples_npz, ref_npz, features: str = "inception", *, device=None, batch_size: int | None = None,
                     inception_weights=None, precision: str | None = None, strict: bool = False,
                     progress: bool = True) -> dict:
    """The five metrics of `samples_npz` (ADM layout: arr_0 uint8 (N, H, W, C)) against `ref_npz`.

    Returns {fid, sfid, inception_score, precision, recall, class_accuracy, num_samples, features}.
    Precision and recall are NaN when the reference has no images; class_accuracy (the share of
    samples the extractor classifies as the label they were sampled for) is NaN unless the
    extractor classifies the data set's own labels (mnist) and the samples carry labels (arr_1). With fewer samples than feature dimensions
    the covariance is singular: a warning, or a ValueError when `strict`.
    """
    check_batch_size(batch_size)
    device = resolve_device(device)
    samples, ref = NpzImages(samples_npz, what="samples"), read_reference(ref_npz)
    check_value_range(samples)
    if ref.images is not None and ref.images.shape != samples.shape:
        raise ValueError(f"samples are {_size(samples.shape)} but the reference images are {_size(ref.images.shape)}; "
                         f"use a reference made at the samples' resolution")
    extractor = get_extractor(features, device, weights=inception_weights, precision=precision or default_precision(device))
    _check_reference_stats(ref.stats, extractor)
    _check_sample_count(samples.num, extractor.dims, strict)
    sample_feats = extract_features(samples, extractor, batch_size=batch_size, progress=progress, desc="samples")
    ref_feats = None
    if ref.images is not None:
        ref_feats = extract_features(ref.images, extractor, batch_size=batch_size, progress=progress, desc="reference")
    ref_stats = ref.stats or stats_from_features(ref_feats, features)
    accuracy = class_accuracy(sample_feats.logits, sample_labels(samples_npz)) if extractor.classifies_labels else float("nan")
    return {**compute_metrics(sample_feats, ref_stats, ref_feats), "class_accuracy": accuracy,
            "num_samples": samples.num, "features": features}


def sample_labels(samples_npz):
    """The class labels the samples were drawn for (arr_1), or None."""
    import numpy as np

    with np.load(samples_npz) as data:
        return data[LABELS_KEY] if LABELS_KEY in data.files else None


def class_accuracy(logits, labels) -> float:
    """Share of samples whose predicted class is the label they were sampled for (NaN without labels)."""
    if labels is None:
        return float("nan")
    return (logits.argmax(1).cpu().numpy() == labels).mean().item()


def compute_metrics(samples: Features, ref_stats: ReferenceStats, ref: Features | None = None) -> dict:
    """FID and sFID against `ref_stats`, IS of the samples, Precision/Recall against `ref` features (NaN without)."""
    (mu, sigma), (mu_s, sigma_s) = metrics.feature_statistics(samples.pool), metrics.feature_statistics(samples.spatial)
    device = samples.pool.device  # the eigen-solves run where the features are
    with warnings.catch_warnings(), ThreadPoolExecutor(2) as pool:  # LAPACK releases the GIL: both run beside the rest
        warnings.simplefilter("ignore", LinAlgWarning)  # "singular matrix": _check_sample_count has said why
        fid = pool.submit(metrics.frechet_distance, mu, sigma, ref_stats.mu, ref_stats.sigma, device=device)
        sfid = pool.submit(metrics.frechet_distance, mu_s, sigma_s, ref_stats.mu_s, ref_stats.sigma_s, device=device)
        inception_score = metrics.inception_score(samples.logits)
        if ref is None:
            warnings.warn("the reference has no images (arr_0): precision and recall are NaN")
            prec, recall = float("nan"), float("nan")
        else:
            prec, recall = metrics.precision_recall(ref.pool, samples.pool)
        return {"fid": fid.result(), "sfid": sfid.result(), "inception_score": inception_score,
                "precision": prec, "recall": recall}


def _size(shape) -> str:
    h, w, c = shape
    return f"{h}x{w}x{c}"


def _check_reference_stats(stats: ReferenceStats | None, extractor):
    if stats is None:
        return
    if stats.features is not None and stats.features != extractor.name:
        raise ValueError(f"the reference statistics were made with --features {stats.features}, not {extractor.name}; "
                         f"evaluate with --features {stats.features} or remake the reference")
    for name, mu in (("pool", stats.mu), ("spatial", stats.mu_s)):
        if mu.shape[0] != extractor.dims[name]:
            raise ValueError(f"the reference's {name} statistics are {mu.shape[0]}-d but {extractor.name} features are "
                             f"{extractor.dims[name]}-d; use a reference made with --features {extractor.name}")


class SmallSampleWarning(UserWarning):
    """Fewer samples than feature dimensions: FID and sFID are biased upwards."""


def _check_sample_count(num: int, dims: dict, strict: bool):
    """Fewer samples than feature dimensions leave the covariance singular and FID biased upwards."""
    largest = max(dims["pool"], dims["spatial"])
    if num > largest:
        return
    message = (f"only {num} samples for {dims['pool']}-d pool / {dims['spatial']}-d spatial features: the covariances "
               f"are singular and FID/sFID are biased upwards; use more than {largest} (the paper's FID-50K uses 50,000)")
    if strict:
        raise ValueError(message)
    warnings.warn(message, SmallSampleWarning)


__all__ = ["compute_metrics", "evaluate_samples"]
