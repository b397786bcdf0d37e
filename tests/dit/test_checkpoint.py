import dataclasses

import pytest
import torch

from dit.checkpoint import load_model
from dit.models import create_dit


def official_state_dict_shapes(depth=12, width=384, patch=2, channels=4, classes=1000, tokens=256):
    """The official release's key list and shapes for a DiT with adaLN-Zero blocks, written out."""
    shapes = {
        "pos_embed": (1, tokens, width),
        "x_embedder.proj.weight": (width, channels, patch, patch),
        "x_embedder.proj.bias": (width,),
        "t_embedder.mlp.0.weight": (width, 256),
        "t_embedder.mlp.0.bias": (width,),
        "t_embedder.mlp.2.weight": (width, width),
        "t_embedder.mlp.2.bias": (width,),
        "y_embedder.embedding_table.weight": (classes + 1, width),
        "final_layer.linear.weight": (patch * patch * 2 * channels, width),
        "final_layer.linear.bias": (patch * patch * 2 * channels,),
        "final_layer.adaLN_modulation.1.weight": (2 * width, width),
        "final_layer.adaLN_modulation.1.bias": (2 * width,),
    }
    for i in range(depth):
        shapes.update({
            f"blocks.{i}.attn.qkv.weight": (3 * width, width),
            f"blocks.{i}.attn.qkv.bias": (3 * width,),
            f"blocks.{i}.attn.proj.weight": (width, width),
            f"blocks.{i}.attn.proj.bias": (width,),
            f"blocks.{i}.mlp.fc1.weight": (4 * width, width),
            f"blocks.{i}.mlp.fc1.bias": (4 * width,),
            f"blocks.{i}.mlp.fc2.weight": (width, 4 * width),
            f"blocks.{i}.mlp.fc2.bias": (width,),
            f"blocks.{i}.adaLN_modulation.1.weight": (6 * width, width),
            f"blocks.{i}.adaLN_modulation.1.bias": (6 * width,),
        })
    return shapes


def test_official_key_list_loads_strictly_into_the_named_model():
    shapes = official_state_dict_shapes()
    model = create_dit("DiT-S/2")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    state = {k: torch.randn(s) * 0.02 for k, s in shapes.items()}
    loaded = load_model(state)
    assert loaded.config == create_dit("DiT-S/2").config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_saved_state_dict_and_project_checkpoint_reload_with_equal_outputs(tmp_path):
    torch.manual_seed(0)
    model = create_dit(
        "DiT-custom/4",
        input_size=16,
        in_channels=1,
        num_classes=10,
        block="cross-attn",
        depth=2,
        hidden_size=32,
        num_heads=2,
    )
    model.load_state_dict({k: torch.randn_like(v) * 0.1 for k, v in model.state_dict().items()})
    ema = {k: v + 1e-3 for k, v in model.state_dict().items()}
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([4, 800]), torch.tensor([3, 10])
    expect = model.eval()(x, t, y)

    torch.save(model.state_dict(), tmp_path / "plain.pt")
    plain = load_model(tmp_path / "plain.pt", num_heads=2)
    torch.testing.assert_close(plain(x, t, y), expect, rtol=0, atol=0)

    config = {"model": dataclasses.asdict(model.config)}
    torch.save({"model": model.state_dict(), "ema": ema, "config": config, "step": 3}, tmp_path / "ckpt.pt")
    torch.testing.assert_close(load_model(tmp_path / "ckpt.pt", use_ema=False)(x, t, y), expect, rtol=0, atol=0)
    ema_model = load_model(tmp_path / "ckpt.pt")
    assert torch.equal(ema_model.state_dict()["pos_embed"], ema["pos_embed"])


def test_unrecognised_keys_and_missing_files_say_what_was_found(tmp_path):
    torch.save({"weights": torch.zeros(1), "epoch": 3}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="found keys: weights, epoch"):
        load_model(tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_model(tmp_path / "junk.pt")


def test_checkpoint_of_another_shape_is_refused_in_one_line():
    state = create_dit("DiT-custom/4", input_size=16, depth=2, hidden_size=32, num_heads=2).state_dict()
    state["blocks.0.attn.qkv.weight"] = torch.zeros(10, 32)
    with pytest.raises(ValueError, match="does not fit"):
        load_model(state, num_heads=2)
