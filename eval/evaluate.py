"""Samples + reference -> the chosen metrics: the paper's FID, sFID, Inception Score, Precision and
Recall by default, KID and FD-DINOv2 on request (`eval.metric_groups`).

`evaluate_samples("samples.npz", "ref.npz")` is what `scaling eval` and the grid call. It checks
its inputs first (one clear ValueError each), builds the feature extractors the metrics need (which
finds their weights before any long work), extracts sample features (and reference features when
the reference holds images, for Precision/Recall, KID and FD-DINOv2), then computes the metrics;
the two matrix square roots run on CPU threads while the GPU does the Precision/Recall distances.
"""
import warnings
from concurrent.futures import ThreadPoolExecutor

from scipy.linalg import LinAlgWarning

from eval.extract import check_batch_size, default_precision, extract_features, resolve_device
from eval.features import Features, get_extractor
from eval.images import NpzImages, check_value_range
from eval.metric_groups import DEFAULT_METRICS, METRIC_GROUPS, metric_columns, parse_metrics
from eval.metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)
from eval.reference import Reference, ReferenceStats, features_to_use, read_reference, stats_from_features

LABELS_KEY = "arr_1"
DINOV2 = "dinov2"
DEFAULT_COLUMNS = (*metric_columns(DEFAULT_METRICS), "class_accuracy")  # the metrics a default evaluation returns


def evaluate_samples(samples_npz, ref_npz, features: str | None = "inception", *, metrics=DEFAULT_METRICS, device=None,
                     batch_size: int | None = None, inception_weights=None, dinov2_weights=None,
                     precision: str | None = None, strict: bool = False, progress: bool = True) -> dict:
    """The `metrics` (names of eval.metric_groups) of `samples_npz` (ADM layout: arr_0 uint8 (N, H, W, C))
    against `ref_npz`.

    Returns the columns of the chosen metrics (by default {fid, sfid, inception_score, precision,
    recall}) with class_accuracy, num_samples and features. Metrics that compare with reference
    features are NaN when the reference has no images; class_accuracy (the share of samples the
    extractor classifies as the label they were sampled for) is NaN unless the extractor classifies
    the data set's own labels (mnist) and the samples carry labels (arr_1). With fewer samples than
    feature dimensions the covariance is singular: a warning, or a ValueError when `strict`. `features`
    None: those the reference records (inception for ADM's own files).
    """
    check_batch_size(batch_size)
    metrics = parse_metrics(metrics)
    samples, ref = NpzImages(samples_npz, what="samples"), read_reference(ref_npz)
    features = features_to_use(features, ref.stats)
    check_value_range(samples)
    if ref.images is not None and ref.images.shape != samples.shape:
        raise ValueError(f"samples are {_size(samples.shape)} but the reference images are {_size(ref.images.shape)}; "
                         f"use a reference made at the samples' resolution")
    device = resolve_device(device)
    precision = precision or default_precision(device)
    uses_extractor = any(METRIC_GROUPS[m].extractor is None for m in metrics)
    extractor = (
        get_extractor(features, device, weights=inception_weights, precision=precision) if uses_extractor else None
    )
    dinov2 = (
        get_extractor(DINOV2, device, weights=dinov2_weights, precision=precision) if "fd-dinov2" in metrics else None
    )
    extract = dict(batch_size=batch_size, progress=progress)
    result = {"class_accuracy": float("nan")}
    if extractor is not None:
        _check_metrics_fit(metrics, extractor)
        _check_reference_stats(ref.stats, extractor)
        _check_sample_count(samples.num, extractor.dims, strict)
        result = extractor_metrics(samples, ref, extractor, metrics, labels=sample_labels(samples_npz), **extract)
    if dinov2 is not None:
        result["fd_dinov2"] = fd_dinov2(samples, ref, dinov2, **extract)
    return {**{c: result[c] for c in metric_columns(metrics)}, "class_accuracy": result["class_accuracy"],
            "num_samples": samples.num, "features": features}


def extractor_metrics(samples: NpzImages, ref: Reference, extractor, metrics, *, labels=None, **extract) -> dict:
    """The chosen metrics that `extractor`'s features give, and class_accuracy (NaN unless it reads the labels)."""
    sample_feats = extract_features(samples, extractor, desc="samples", **extract)
    needs_ref_feats = ref.stats is None or any(METRIC_GROUPS[m].reference_images for m in metrics)
    ref_feats = None
    if ref.images is not None and needs_ref_feats:
        ref_feats = extract_features(ref.images, extractor, desc="reference", **extract)
    ref_stats = ref.stats or stats_from_features(ref_feats, extractor.name)
    result = compute_metrics(sample_feats, ref_stats, ref_feats, metrics=metrics)
    accuracy = class_accuracy(sample_feats.logits, labels) if extractor.classifies_labels else float("nan")
    return {**result, "class_accuracy": accuracy}


def fd_dinov2(samples: NpzImages, ref: Reference, extractor, **extract) -> float:
    """Frechet distance of DINOv2 features of the samples and of the reference images (EDM2's FD-DINOv2)."""
    if ref.images is None:
        warnings.warn("the reference has no images (arr_0): fd_dinov2 is NaN", stacklevel=2)
        return float("nan")
    sample_pool = extract_features(samples, extractor, desc="samples (dinov2)", **extract).pool
    ref_pool = extract_features(ref.images, extractor, desc="reference (dinov2)", **extract).pool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)  # fewer images than 1,024 dims: singular, as for FID
        return frechet_distance(*feature_statistics(sample_pool), *feature_statistics(ref_pool),
                                device=sample_pool.device)


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


def compute_metrics(samples: Features, ref_stats: ReferenceStats, ref: Features | None = None, *,
                    metrics=DEFAULT_METRICS) -> dict:
    """The chosen metrics that the extractor's features give (all but fd-dinov2): FID and sFID against
    `ref_stats`, IS of the samples, Precision/Recall and KID against `ref` features (NaN without)."""
    device = samples.pool.device  # the eigen-solves run where the features are
    distances = {
        "fid": (samples.pool, ref_stats.mu, ref_stats.sigma),
        "sfid": (samples.spatial, ref_stats.mu_s, ref_stats.sigma_s),
    }
    with warnings.catch_warnings(), ThreadPoolExecutor(2) as pool:  # LAPACK releases the GIL: both run beside the rest
        warnings.simplefilter("ignore", LinAlgWarning)  # "singular matrix": _check_sample_count has said why
        futures = {name: pool.submit(frechet_distance, *feature_statistics(x), mu, sigma, device=device)
                   for name, (x, mu, sigma) in distances.items() if name in metrics}
        result = {"inception_score": inception_score(samples.logits)} if "is" in metrics else {}
        result |= _reference_feature_metrics(samples, ref, metrics)
        return {**{name: future.result() for name, future in futures.items()}, **result}


def _reference_feature_metrics(samples: Features, ref: Features | None, metrics) -> dict:
    """Precision/Recall and KID of the sample pool features against the reference's (NaN without them)."""
    chosen = [m for m in ("pr", "kid") if m in metrics]
    if ref is None:
        columns = [c for m in chosen for c in METRIC_GROUPS[m].columns]
        if columns:
            warnings.warn(f"the reference has no images (arr_0): {' and '.join(columns)} are NaN", stacklevel=2)
        return {c: float("nan") for c in columns}
    result = {}
    if "pr" in chosen:
        result["precision"], result["recall"] = precision_recall(ref.pool, samples.pool)
    if "kid" in chosen:
        result["kid"], result["kid_std"] = kernel_inception_distance(samples.pool, ref.pool)
    return result


def _check_metrics_fit(metrics, extractor):
    """ValueError when a chosen metric needs a part of the features that the extractor does not give."""
    for name in metrics:
        group = METRIC_GROUPS[name]
        if group.extractor is None and not extractor.dims[group.part]:
            raise ValueError(f"{extractor.name} features have no {group.part} part, which --metrics {name} needs; "
                             f"choose other metrics or other --features")


def _size(shape) -> str:
    h, w, c = shape
    return f"{h}x{w}x{c}"


def _check_reference_stats(stats: ReferenceStats | None, extractor):
    if stats is None:
        return
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
    message = (
        f"only {num} samples for {dims['pool']}-d pool / {dims['spatial']}-d spatial features: the covariances "
        f"are singular and FID/sFID are biased upwards; use more than {largest} (the paper's FID-50K uses 50,000)"
    )
    if strict:
        raise ValueError(message)
    warnings.warn(message, SmallSampleWarning, stacklevel=2)


__all__ = ["DEFAULT_COLUMNS", "compute_metrics", "evaluate_samples"]
