"""The DINOv2 extractor behind FD-DINOv2: Meta's parameter names, the network against torchvision's ViT,
EDM2's input pipeline, and how its weights are found and loaded (random weights; ViT-S/14 keeps it fast)."""
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from eval.features import feature_dims, get_extractor
from eval.features.dinov2 import DinoVisionTransformer, random_dinov2_weights, resolve_weights
from tests.eval.conftest import numpy_fid, smooth_images

SMALL = 384  # ViT-S/14: the same code path as ViT-L/14, a fifteenth of the work


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """Random ViT-S/14 weights with random LayerScale gains (so the test sees them)."""
    path = random_dinov2_weights(tmp_path_factory.mktemp("dinov2") / "vits14-random.pth", width=SMALL, seed=0)
    state = torch.load(path, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    for name in state:
        if name.endswith("gamma"):
            state[name] = torch.rand(state[name].shape, generator=generator) + 0.5
    torch.save(state, path)
    return path


def test_vit_l14_has_meta_checkpoint_names_and_size():
    with torch.device("meta"):
        net = DinoVisionTransformer(1024)
    names = set(net.state_dict())
    assert {
        "cls_token",
        "pos_embed",
        "mask_token",
        "patch_embed.proj.weight",
        "blocks.23.attn.qkv.weight",
        "blocks.23.ls2.gamma",
        "blocks.23.mlp.fc2.bias",
        "norm.weight",
    } <= names and "blocks.24.norm1.weight" not in names
    assert net.pos_embed.shape == (1, 1 + 37 * 37, 1024)
    assert sum(p.numel() for p in net.parameters()) == 304_368_640  # dinov2_vitl14: 304M parameters
    assert feature_dims("dinov2") == {"pool": 1024, "spatial": 0, "logits": 0}


def torchvision_twin(net: DinoVisionTransformer) -> torchvision.models.VisionTransformer:
    """torchvision's ViT at 224 px with `net`'s weights: LayerScale folded into each branch's last linear layer,
    the position embeddings as `net` resizes them to 16 x 16 patches."""
    width, depth, heads = net.cls_token.shape[-1], len(net.blocks), net.blocks[0].attn.heads
    twin = torchvision.models.VisionTransformer(image_size=224, patch_size=14, num_layers=depth, num_heads=heads,
                                                hidden_dim=width, mlp_dim=4 * width)
    twin.heads = torch.nn.Identity()
    state = {"class_token": net.cls_token, "conv_proj.weight": net.patch_embed.proj.weight,
             "conv_proj.bias": net.patch_embed.proj.bias, "encoder.pos_embedding": net.position_embedding(16, 16),
             "encoder.ln.weight": net.norm.weight, "encoder.ln.bias": net.norm.bias}
    for i, block in enumerate(net.blocks):
        prefix = f"encoder.layers.encoder_layer_{i}."
        g1, g2 = block.ls1.gamma[:, None], block.ls2.gamma[:, None]
        state |= {
            prefix + "ln_1.weight": block.norm1.weight,
            prefix + "ln_1.bias": block.norm1.bias,
            prefix + "self_attention.in_proj_weight": block.attn.qkv.weight,
            prefix + "self_attention.in_proj_bias": block.attn.qkv.bias,
            prefix + "self_attention.out_proj.weight": g1 * block.attn.proj.weight,
            prefix + "self_attention.out_proj.bias": g1[:, 0] * block.attn.proj.bias,
            prefix + "ln_2.weight": block.norm2.weight,
            prefix + "ln_2.bias": block.norm2.bias,
            prefix + "mlp.0.weight": block.mlp.fc1.weight,
            prefix + "mlp.0.bias": block.mlp.fc1.bias,
            prefix + "mlp.3.weight": g2 * block.mlp.fc2.weight,
            prefix + "mlp.3.bias": g2[:, 0] * block.mlp.fc2.bias,
        }
    twin.load_state_dict({k: v.detach() for k, v in state.items()})
    return twin.eval()


def test_features_match_torchvision_vit_after_edm2_preprocessing(small_weights):
    extractor = get_extractor("dinov2", weights=small_weights)
    images = torch.from_numpy(smooth_images(3, size=32, seed=0)).permute(0, 3, 1, 2)  # (3, 3, 32, 32) uint8
    x = F.interpolate(images.float(), size=(224, 224), mode="bicubic", antialias=True) / 255
    x = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        expected = torchvision_twin(extractor.net)(x)  # (3, 384)
    features = extractor(images)
    assert features.pool.shape == (3, SMALL) and features.spatial.shape == (3, 0) and extractor.dims["pool"] == SMALL
    torch.testing.assert_close(features.pool, expected, rtol=1e-4, atol=1e-4)
    grey = extractor(images[:, :1])  # MNIST-like one channel: repeated to RGB
    torch.testing.assert_close(grey.pool, extractor(images[:, :1].expand(-1, 3, -1, -1)).pool)


def test_position_embeddings_stay_at_518_px_and_resize_elsewhere(small_weights):
    net = get_extractor("dinov2", weights=small_weights).net
    assert net.position_embedding(37, 37) is net.pos_embed
    resized = net.position_embedding(16, 16)
    assert resized.shape == (1, 257, SMALL) and torch.equal(resized[:, 0], net.pos_embed[:, 0])


def test_fd_dinov2_through_evaluate_samples_matches_numpy(tmp_path, small_weights, monkeypatch):
    from eval.evaluate import evaluate_samples
    from eval.extract import extract_features
    from eval.images import ArrayImages

    samples, ref = smooth_images(24, seed=1), smooth_images(20, seed=2)
    np.savez(tmp_path / "samples.npz", arr_0=samples)
    np.savez(tmp_path / "ref.npz", arr_0=ref)
    monkeypatch.setenv("DIT_DINOV2_WEIGHTS", str(small_weights))
    result = evaluate_samples(tmp_path / "samples.npz", tmp_path / "ref.npz", metrics="fd-dinov2", progress=False)
    assert set(result) == {"fd_dinov2", "class_accuracy", "num_samples", "features"}  # no Inception work
    extractor = get_extractor("dinov2", weights=small_weights)
    pool = [extract_features(ArrayImages(a), extractor, progress=False).pool.double().numpy() for a in (samples, ref)]
    assert result["fd_dinov2"] == pytest.approx(numpy_fid(*pool), rel=1e-4)


def test_weights_are_found_or_refused_in_one_line(monkeypatch, tmp_path, small_weights):
    monkeypatch.setenv("DIT_DINOV2_WEIGHTS", str(small_weights))
    assert resolve_weights(None) == small_weights
    monkeypatch.delenv("DIT_DINOV2_WEIGHTS")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ValueError, match=str(tmp_path / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth")) as info:
        resolve_weights(None)
    assert "\n" not in str(info.value) and "--dinov2-weights" in str(info.value)
    with pytest.raises(ValueError, match="do not exist"):
        resolve_weights(tmp_path / "nowhere.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="cannot load DINOv2 weights"):
        get_extractor("dinov2", weights=tmp_path / "other.pth")


def test_pickled_code_is_not_loaded(tmp_path):
    torch.save(
        {"cls_token": torch.zeros(1, 1, SMALL), "hook": print}, tmp_path / "pickled.pth"
    )  # a callable: not weights
    with pytest.raises(ValueError, match="cannot load DINOv2 weights .*UnpicklingError"):
        get_extractor("dinov2", weights=tmp_path / "pickled.pth")
