import math

import pytest
import torch

from dit.blocks import BLOCKS, AdaLNZeroBlock
from dit.config import TrainConfig
from dit.embeddings import sincos_2d, timestep_embedding
from dit.models import MODEL_SIZES, DiTConfig, count_params, create_dit, dit_config
from study.blocks import ADALN_ZERO, DEFAULT_BLOCK

TINY = dict(depth=2, hidden_size=32, num_heads=2)


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("patch", [2, 4, 8])
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_output_shape_every_block_and_patch(block, patch, learn_sigma):
    model = create_dit(
        f"DiT-custom/{patch}", input_size=16, in_channels=3, num_classes=5, block=block, learn_sigma=learn_sigma, **TINY
    )
    x = torch.randn(3, 3, 16, 16)
    out = model(x, torch.tensor([0, 10, 999]), torch.tensor([0, 4, 5]))
    assert out.shape == (3, 6 if learn_sigma else 3, 16, 16)


@pytest.mark.parametrize("size", list(MODEL_SIZES))
@pytest.mark.parametrize("patch", [2, 4, 8])
def test_every_named_size_builds_with_its_table_entry(size, patch):
    with torch.device("meta"):
        model = create_dit(f"DiT-{size}/{patch}")
    depth, width, heads = MODEL_SIZES[size]
    assert len(model.blocks) == depth and model.pos_embed.shape == (1, (32 // patch) ** 2, width)
    assert model.blocks[0].attn.num_heads == heads


def test_tiny_size_forward_shape():
    model = create_dit("DiT-T/4", input_size=32, in_channels=1, num_classes=10)
    assert model(torch.randn(2, 1, 32, 32), torch.tensor([1, 2]), torch.tensor([3, 10])).shape == (2, 2, 32, 32)


# Official parameter counts at 256 px (latent 32x32x4, 1000 classes, learned sigma), in millions.
OFFICIAL_PARAMS_M = {
    "DiT-S/2": 32.96,
    "DiT-B/2": 130.51,
    "DiT-L/2": 458.10,
    "DiT-XL/2": 675.13,
    "DiT-S/8": 33.15,
    "DiT-XL/8": 675.68,
}


@pytest.mark.parametrize("name,millions", OFFICIAL_PARAMS_M.items())
def test_parameter_counts_match_the_official_release(name, millions):
    with torch.device("meta"):
        model = create_dit(name)
    assert round(count_params(model) / 1e6, 2) == millions


def test_adaln_zero_blocks_and_final_layer_start_as_identity_and_zero():
    model = create_dit("DiT-custom/4", input_size=16, num_classes=3, **TINY)
    x = torch.randn(2, 4, 16, 16)
    t, y = torch.tensor([3, 500]), torch.tensor([0, 2])
    tokens = model.x_embedder(x) + model.pos_embed
    cond = model.t_embedder(t) + model.y_embedder(y, False)
    for block in model.blocks:
        assert torch.equal(block(tokens, cond), tokens)
    assert torch.count_nonzero(model(x, t, y)) == 0


def test_every_parameter_gets_a_gradient_once_away_from_init():
    torch.manual_seed(0)
    for block in BLOCKS:
        model = create_dit("DiT-custom/4", input_size=16, num_classes=3, block=block, **TINY)
        x, t, y = torch.randn(4, 4, 16, 16), torch.tensor([1, 50, 200, 900]), torch.tensor([0, 1, 2, 3])
        target = torch.randn(4, 8, 16, 16)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        # Zero-initialised layers open the gradient path one layer per step: the final linear layer,
        # then the gates and final modulation, then the embeddings behind them.
        for _ in range(3):
            opt.zero_grad()
            (model(x, t, y) - target).square().mean().backward()
            opt.step()
        for name, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{block}: {name} has no gradient"


def test_position_embedding_matches_the_closed_form():
    dim, grid = 16, 4
    emb = sincos_2d(dim, grid)
    quarter = dim // 4
    for row in range(grid):
        for col in range(grid):
            token = emb[row * grid + col]
            for k in range(quarter):
                w = 1.0 / 10000 ** (k / quarter)
                # first half: column index; second half: row index; each [sin..., cos...]
                assert math.isclose(token[k], math.sin(col * w), abs_tol=1e-12)
                assert math.isclose(token[quarter + k], math.cos(col * w), abs_tol=1e-12)
                assert math.isclose(token[2 * quarter + k], math.sin(row * w), abs_tol=1e-12)
                assert math.isclose(token[3 * quarter + k], math.cos(row * w), abs_tol=1e-12)


def test_timestep_embedding_matches_the_closed_form():
    t = torch.tensor([0.0, 1.0, 37.5, 999.0])
    dim = 10
    emb = timestep_embedding(t, dim)
    half = dim // 2
    for i, ti in enumerate(t.tolist()):
        for k in range(half):
            f = math.exp(-math.log(10000) * k / half)
            assert math.isclose(emb[i, k].item(), math.cos(ti * f), abs_tol=1e-4)
            assert math.isclose(emb[i, half + k].item(), math.sin(ti * f), abs_tol=1e-4)
    assert timestep_embedding(t, 7).shape == (4, 7) and torch.all(timestep_embedding(t, 7)[:, -1] == 0)


def test_label_dropout_uses_the_null_class_only_in_training():
    model = create_dit("DiT-custom/4", input_size=16, num_classes=3, class_dropout_prob=1.0, **TINY)
    y = torch.tensor([0, 1, 2])
    null = model.y_embedder.embedding_table.weight[3]
    assert torch.equal(model.y_embedder(y, train=True), null.expand(3, -1))
    assert torch.equal(model.y_embedder(y, train=False), model.y_embedder.embedding_table.weight[:3])


def test_sdpa_and_math_attention_agree():
    torch.manual_seed(0)
    for block in ("in-context", "cross-attn", "adaln-zero"):
        a = create_dit("DiT-custom/2", input_size=8, num_classes=3, block=block, **TINY)
        b = create_dit("DiT-custom/2", input_size=8, num_classes=3, block=block, attention="math", **TINY)
        state = {k: torch.randn_like(v) for k, v in a.state_dict().items()}
        a.load_state_dict(state), b.load_state_dict(state)
        x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([5, 6]), torch.tensor([1, 2])
        torch.testing.assert_close(a.eval()(x, t, y), b.eval()(x, t, y), rtol=1e-4, atol=1e-4)


def test_cfg_guides_all_noise_channels_by_default_or_the_first_three():
    torch.manual_seed(0)
    model = create_dit("DiT-custom/4", input_size=8, num_classes=3, **TINY).eval()
    model.load_state_dict({k: torch.randn_like(v) * 0.1 for k, v in model.state_dict().items()})
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 10, 10, 10])
    xx, yy = torch.cat([x, x]), torch.tensor([0, 1, 3, 3])
    cond, uncond = model(xx, t, torch.tensor([0, 1, 0, 1])), model(xx, t, torch.tensor([3, 3, 3, 3]))
    s = 2.5
    expect = uncond[:2, :4] + s * (cond[:2, :4] - uncond[:2, :4])
    out = model.forward_with_cfg(xx, t, yy, s)
    torch.testing.assert_close(out[:2, :4], expect)
    torch.testing.assert_close(out[:2, 4:], cond[:2, 4:])
    official = model.forward_with_cfg(xx, t, yy, s, guidance_channels=3)
    torch.testing.assert_close(official[:2, :3], expect[:, :3])
    torch.testing.assert_close(official[:2, 3:4], cond[:2, 3:4])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(name="DiT-Q/2"), "choose one of T, M, S, B, L, XL"),
        (dict(name="DiT-XL"), "DiT-<size>/<patch>"),
        (dict(name="DiT-S/3"), "does not divide input size 32"),
        (dict(name="DiT-S/2", block="film"), "in-context, cross-attn, adaln, adaln-zero"),
        (dict(name="DiT-S/2", num_heads=5), "heads do not divide width 384"),
        (dict(name="DiT-S/2", attention="flash"), "sdpa, math"),
        (dict(name="DiT-custom/2"), "needs depth, hidden_size, num_heads"),
    ],
)
def test_bad_input_raises_value_error_naming_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dit_config(**kwargs)


def _saved_tensors_and_grads(model, k: int, x, t, y, target) -> tuple[int, dict]:
    """Tensors autograd keeps for backward, and every parameter's gradient, with the first k blocks checkpointed."""
    model.set_checkpointing(k)
    model.zero_grad()
    count = [0]

    def pack(tensor):
        count[0] += 1
        return tensor

    torch.manual_seed(1)  # the same label dropout in every pass
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = (model(x, t, y) - target).square().mean()
    loss.backward()
    return count[0], {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_checkpointing_the_first_k_blocks_keeps_gradients_and_saves_k_blocks_of_activations():
    torch.manual_seed(0)
    depth = 3
    model = create_dit("DiT-custom/4", input_size=16, num_classes=3, depth=depth, hidden_size=32, num_heads=2).train()
    for layer in [b.adaLN_modulation[-1] for b in model.blocks] + [model.final_layer.linear]:
        torch.nn.init.normal_(layer.weight, std=0.1)  # away from the zero init, so every gradient is nonzero
    x, t, y = torch.randn(4, 4, 16, 16), torch.tensor([1, 50, 200, 900]), torch.tensor([0, 1, 2, 3])
    target = torch.randn(4, 8, 16, 16)
    runs = [_saved_tensors_and_grads(model, k, x, t, y, target) for k in range(depth + 1)]
    saved_none, grads_none = runs[0]
    per_block = (saved_none - runs[depth][0]) / depth
    assert per_block > 0
    for k, (saved, grads) in enumerate(runs):
        assert saved == saved_none - k * per_block  # each checkpointed block keeps only its inputs
        for name, grad in grads.items():
            assert torch.equal(grad, grads_none[name]), f"k={k}: {name}"  # recomputation is exact in fp32 on CPU
    model.eval()
    assert model.checkpoint_blocks == depth and _saved_tensors_and_grads(model, depth, x, t, y, target)[0] == saved_none


def test_checkpoint_blocks_is_validated_and_resolves_the_all_or_none_switch():
    from dit.config import TrainConfig

    assert TrainConfig().checkpointed_blocks(28) == 0
    assert TrainConfig(grad_checkpointing=True).checkpointed_blocks(28) == 28
    assert TrainConfig(grad_checkpointing=True, checkpoint_blocks=4).checkpointed_blocks(28) == 4
    assert TrainConfig(checkpoint_blocks=0).checkpointed_blocks(28) == 0
    with pytest.raises(ValueError, match="checkpoint_blocks must be at least 0"):
        TrainConfig(checkpoint_blocks=-1)
    model = create_dit("DiT-custom/4", input_size=16, num_classes=3, **TINY)
    with pytest.raises(ValueError, match="cannot checkpoint 3 blocks of a 2-block model; choose 0 to 2"):
        model.set_checkpointing(3)


def test_the_default_block_is_the_adaln_zero_block_of_models_and_configs():
    assert BLOCKS[DEFAULT_BLOCK] is AdaLNZeroBlock and BLOCKS[ADALN_ZERO] is AdaLNZeroBlock
    assert TrainConfig().block == DiTConfig().block == DEFAULT_BLOCK
