"""The `inception` extractor against torch-fidelity's own network, statistics and FID (random weights)."""
import urllib.error

import numpy as np
import pytest
import torch

from eval import metrics
from eval.extract import extract_features
from eval.features import get_extractor
from eval.features.inception import SPATIAL_LAYER, resolve_weights
from eval.images import ArrayImages
from tests.eval.conftest import smooth_images

N = 8  # images per set: InceptionV3 at 299 px is slow on CPU; FID on rank-deficient covariances still compares
N_DIRECT = 3  # images also run through torch-fidelity's network directly


@pytest.fixture(scope="module")
def image_sets():
    return smooth_images(N, seed=1), smooth_images(N, seed=2)


@pytest.fixture(scope="module")
def ours(image_sets, inception_weights):
    extractor = get_extractor("inception", "cpu", weights=inception_weights)
    return [extract_features(ArrayImages(images), extractor, batch_size=5, progress=False) for images in image_sets]


@pytest.fixture(scope="module")
def theirs(image_sets, inception_weights):
    """torch-fidelity's network run directly on NCHW tensors; the mixed_6/conv map taken with a hook."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(inception_weights)
    )
    maps = []
    net.Mixed_6d.branch1x1.register_forward_hook(lambda module, inputs, output: maps.append(output))
    with torch.no_grad():
        pool, logits = net(torch.from_numpy(image_sets[0][:N_DIRECT]).permute(0, 3, 1, 2).contiguous())
    return {"pool": pool, "logits": logits, "map": maps.pop()}


def test_pool_and_logits_equal_torch_fidelity(ours, theirs):
    mine = ours[0]
    torch.testing.assert_close(mine.pool[:N_DIRECT], theirs["pool"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mine.logits[:N_DIRECT], theirs["logits"], rtol=1e-5, atol=1e-6)
    assert mine.pool.shape == (N, 2048) and mine.logits.shape == (N, 1008)
    assert mine.pool.std() > 1e-2  # random weights that still give O(1) features


def test_spatial_features_are_mixed_6_conv_first_7_channels_nhwc(ours, theirs):
    feature_map = theirs["map"]  # (n, 192, 17, 17): the 1x1 branch of the 7th mixed block
    assert feature_map.shape == (N_DIRECT, 192, 17, 17)
    expected = feature_map.numpy().transpose(0, 2, 3, 1)[..., :7].reshape(N_DIRECT, -1)  # ADM: NHWC, [..., :7], flatten
    assert ours[0].spatial.shape == (N, 7 * 17 * 17) == (N, 2023)
    np.testing.assert_allclose(ours[0].spatial[:N_DIRECT].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (ours[0].spatial >= 0).all()  # after the ReLU, as the graph's mixed_6/conv:0


def test_mixed_6_is_the_seventh_mixed_block(inception_weights):
    """The TF graph counts mixed blocks mixed, mixed_1, ..., mixed_10; mixed_6 is the 7th in network order."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    net = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_weights)
    )
    mixed = [name for name, _ in net.named_children() if name.startswith("Mixed_")]
    assert len(mixed) == 11 and mixed[6] == SPATIAL_LAYER.split(".")[0]
    assert net.get_submodule(SPATIAL_LAYER).conv.kernel_size == (1, 1)


def torch_fidelity_fid(pool1: torch.Tensor, pool2: torch.Tensor) -> float:
    """torch-fidelity's own statistics and Frechet distance (eigenvalues of S1 S2, not sqrtm)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats = [fid_features_to_statistics(p) for p in (pool1, pool2)]
    return fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID]


def our_fid(pool1: torch.Tensor, pool2: torch.Tensor) -> float:
    (mu1, s1), (mu2, s2) = metrics.feature_statistics(pool1), metrics.feature_statistics(pool2)
    return metrics.frechet_distance(mu1, s1, mu2, s2)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 8 images: singular covariances, on purpose
def test_fid_on_leading_pool_dims_equals_torch_fidelity(ours):
    """The Frechet distance on the first 256 of the 2048 dims (fast); the full one is a slow test below."""
    a, b = ours[0].pool[:, :256], ours[1].pool[:, :256]
    assert our_fid(a, b) == pytest.approx(torch_fidelity_fid(a, b), rel=1e-4)


@pytest.mark.slow
def test_fid_equals_torch_fidelity_end_to_end(image_sets, inception_weights, ours):
    """torch-fidelity's calculate_metrics on the same images and weights: its loader, features, statistics, FID."""
    import torch_fidelity

    class Images(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, H, W)

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.images[i]

    result = torch_fidelity.calculate_metrics(
        input1=Images(image_sets[0]),
        input2=Images(image_sets[1]),
        fid=True,
        cuda=False,
        feature_extractor_weights_path=str(inception_weights),
        batch_size=N,
        cache=False,
        verbose=False,
    )
    assert our_fid(ours[0].pool, ours[1].pool) == pytest.approx(result["frechet_inception_distance"], rel=1e-4)


def test_missing_weights_offline_name_where_to_put_them(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(
        ValueError, match=str(tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05")
    ) as info:
        resolve_weights(None)
    assert "\n" not in str(info.value) and "--inception-weights" in str(info.value)
    with pytest.raises(ValueError, match="do not exist"):
        resolve_weights(tmp_path / "nowhere.pth")


def test_weights_of_another_network_are_refused_in_one_line(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="cannot load Inception weights") as info:
        get_extractor("inception", weights=tmp_path / "other.pth")
    assert "\n" not in str(info.value)


def test_weights_from_environment_variable(monkeypatch, inception_weights):
    monkeypatch.setenv("DIT_INCEPTION_WEIGHTS", str(inception_weights))
    assert resolve_weights(None) == inception_weights
