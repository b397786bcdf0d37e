"""Feature extractors behind one registry: a new one is one new file with a `build` function.

Each extractor is an nn.Module taking uint8 images (N, C, H, W) on its device and returning
`Features(pool, spatial, logits)`; it has `name`, `channels` (what it looks at) and `dims`.
"""
from eval.features import inception, mnist
from eval.features.base import Features

EXTRACTORS = {
    "inception": inception.build,  # ADM's InceptionV3 (torch-fidelity's port): the paper's metrics
    "mnist": mnist.build,  # a small digit classifier for the offline MNIST-32 demo
}


FEATURE_DIMS = {  # without building the network (no weights needed)
    "inception": inception.InceptionFeatures.feature_dims,
    "mnist": mnist.MNISTFeatures.feature_dims,
}


def feature_dims(name: str) -> dict:
    """{"pool", "spatial", "logits"} dimensions of the extractor `name`."""
    if name not in FEATURE_DIMS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    return FEATURE_DIMS[name]()


def get_extractor(name: str, device="cpu", *, weights=None, precision: str = "fp32"):
    """Build the extractor `name` on `device`; ValueError naming the choices for an unknown name."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](device, weights=weights, precision=precision)


__all__ = ["EXTRACTORS", "Features", "feature_dims", "get_extractor"]
