"""InceptionV3 features as ADM's TensorFlow evaluator computes them, through torch-fidelity's port.

torch-fidelity's `FeatureExtractorInceptionV3` is the TF "2015-12-05" graph that ADM's evaluator
loads (`classify_image_graph_def.pb`), converted layer by layer, with TF1's bilinear resize to
299 x 299 and the graph's (x - 128) / 128 input scaling. From one forward pass we take:

- `pool`: the graph's `pool_3` (2048-d), for FID and Precision/Recall;
- `logits`: `pool_3` times the softmax weights without the bias (torch-fidelity's `logits_unbiased`),
  which is what ADM feeds its softmax for the Inception Score (1008 classes);
- `spatial`: the first 7 channels of the graph's `mixed_6/conv` (17 x 17), flattened in
  (H, W, C) order -> 2,023 dims, for sFID. `mixed_6` is the 7th mixed block (`mixed`, `mixed_1`,
  ... count from 0), torch-fidelity's `Mixed_6d` (its weight converter maps `mixed_6/conv/*` to
  `Mixed_6d.branch1x1.*`), and `mixed_6/conv:0` is that 1x1 branch's output after batch norm and
  ReLU (the graph names the unit's ops `conv/Conv2D`, `conv/batchnorm` and, last, `conv`).

Weights: an explicit path, the `DIT_INCEPTION_WEIGHTS` environment variable, or torch-fidelity's
file in the torch hub cache (downloaded there when the network allows).
"""
import os
from pathlib import Path

import torch
from torch import nn

from dit.io import load_tensors
from eval.features.base import (
    PRECISIONS,
    Features,
    find_weights,
    flatten_spatial,
    precision_context,
    register_extractor,
    to_channels,
)

WEIGHTS_ENV = "DIT_INCEPTION_WEIGHTS"
SPATIAL_LAYER = "Mixed_6d.branch1x1"  # the TF graph's mixed_6/conv
SPATIAL_CHANNELS = 7  # ADM: spatial[..., :7] -> 7 x 17 x 17 = 2,023 dims


def weights_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights file: `path`, else $DIT_INCEPTION_WEIGHTS, else the hub cache (downloading it)."""
    return find_weights(path, env=WEIGHTS_ENV, url=weights_url(), what="Inception", option="--inception-weights")


def _torch_fidelity_network(weights: Path | None):
    """torch-fidelity's InceptionV3 giving pool_3 and unbiased logits; random init when `weights` is None.

    The weights are read here with `weights_only=True` and handed to the network: torch-fidelity's own
    loader unpickles the file with `weights_only=False`, which runs any code a crafted file holds.
    """
    from unittest import mock

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    state = None if weights is None else _read_weights(weights)
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
         mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:  # a state dict of another network; line 2 names the first missing key
            detail = (str(exc).splitlines()[1:2] or [str(exc)])[0].strip()[:200]
            raise ValueError(f"cannot load Inception weights {weights}: they do not fit torch-fidelity's InceptionV3 "
                             f"({detail}); expected {_weights_name()}") from None
    return net


def _read_weights(path: Path) -> dict:
    """The state dict in `path`, loaded safely: tensors only, never pickled code."""
    state = load_tensors(path, what="Inception weights", expected=f"torch-fidelity's {_weights_name()}")
    if not isinstance(state, dict):
        raise ValueError(f"cannot load Inception weights {path}: it holds a {type(state).__name__}, not a state dict; "
                         f"expected {_weights_name()}")
    return state


def _weights_name() -> str:
    return weights_url().rsplit("/", 1)[-1]


def random_inception_weights(path, seed: int = 0) -> Path:
    """Save random weights of torch-fidelity's InceptionV3 to `path` (for tests and offline benchmarks).

    He-normal convolutions and unit batch norms keep activations O(1) through the 94 layers, so the
    features behave like real ones numerically; they mean nothing semantically.
    """
    from dit.io import atomic_torch_save

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _torch_fidelity_network(None)
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.bias, 0.0, 0.1)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 2048**-0.5)
                nn.init.normal_(module.bias, 0.0, 0.1)
    atomic_torch_save(net.state_dict(), path)
    return Path(path)


class InceptionFeatures(nn.Module):
    """uint8 images (N, C, H, W), any size, C in {1, 3} -> Features(pool 2048, spatial 2023, logits 1008)."""

    name, channels = "inception", 3
    classifies_labels = False  # ImageNet's 1008 logits, not the data set's labels
    dims = {"pool": 2048, "spatial": SPATIAL_CHANNELS * 17 * 17, "logits": 1008}

    def __init__(self, net: nn.Module, precision: str = "fp32"):
        super().__init__()
        PRECISIONS.check(precision)
        self.net, self.precision, self._spatial = net, precision, None
        net.get_submodule(SPATIAL_LAYER).register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output):
        self._spatial = output  # (N, 192, 17, 17)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Features:
        x = to_channels(x, 3)  # (N, 3, H, W) uint8; the network resizes to 299 like TF1
        with precision_context(self.precision, x.device):
            pool, logits = self.net(x)  # (N, 2048), (N, 1008)
        spatial = flatten_spatial(self._spatial, SPATIAL_CHANNELS)  # (N, 2023)
        self._spatial = None
        return Features(pool.float(), spatial, logits.float())


def build(device="cpu", *, weights=None, precision: str = "fp32") -> InceptionFeatures:
    """The `inception` extractor on `device`, with weights from `resolve_weights(weights)`."""
    net = _torch_fidelity_network(resolve_weights(weights))
    extractor = InceptionFeatures(net, precision).to(device).eval()
    if torch.device(device).type == "cuda":
        extractor = extractor.to(memory_format=torch.channels_last)
    return extractor


register_extractor("inception", dims=InceptionFeatures.dims, build=build)  # ADM's InceptionV3: the paper's metrics
