"""Feature extractors behind one registry: a new one is one new file that calls `register_extractor`
(with its name, dimensions and builder), imported below.

Each extractor is an nn.Module taking uint8 images (N, C, H, W) on its device and returning
`Features(pool, spatial, logits)`; it has `name`, `channels` (what it looks at) and `dims`.
"""
from eval.features import dinov2, inception, mnist  # noqa: F401  (each registers itself)
from eval.features.base import EXTRACTORS, PRECISIONS, Features


def feature_dims(name: str) -> dict:
    """{"pool", "spatial", "logits"} dimensions of the extractor `name`, without building it."""
    return dict(EXTRACTORS.get(name).dims)


def get_extractor(name: str, device="cpu", *, weights=None, precision: str = "fp32"):
    """Build the extractor `name` on `device`; ValueError naming the choices for an unknown name."""
    return EXTRACTORS.get(name).build(device, weights=weights, precision=precision)


__all__ = ["EXTRACTORS", "PRECISIONS", "Features", "feature_dims", "get_extractor"]
