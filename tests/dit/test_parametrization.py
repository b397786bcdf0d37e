"""μP for DiT: SP at the base width, per-width Adam groups, multipliers folded for export, one-line refusals."""
import dataclasses

import pytest
import torch
from diffusers import DiTTransformer2DModel

from dit.checkpoint import load_model
from dit.config import TrainConfig
from dit.export import export_diffusers
from dit.init_from import initialise_from
from dit.models import DiTConfig, create_dit
from dit.parametrization import fold_into_standard, param_role
from dit.train import make_optimizer, set_lr

CPU = torch.device("cpu")


def tiny(width=96, parametrization="sp", base_width=None, block="adaln-zero", seed=0):
    torch.manual_seed(seed)
    return create_dit("DiT-custom/4", input_size=16, in_channels=1, num_classes=10, depth=2, hidden_size=width,
                      num_heads=2, block=block, parametrization=parametrization, base_width=base_width)


def randomise(model):
    """Every trainable weight random (zero-initialised layers too, so outputs depend on all of them)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)
    return model.eval()


def batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(3, 1, 16, 16, generator=gen), torch.tensor([0, 400, 999]), torch.tensor([1, 5, 10])


def test_mup_at_its_base_width_is_sp_in_init_outputs_and_learning_rates():
    sp, mup = tiny(), tiny(parametrization="mup")
    assert mup.config.base_width == 96 and sp.config.base_width is None
    assert all(torch.equal(a, b) for a, b in zip(sp.state_dict().values(), mup.state_dict().values(), strict=True))
    randomise(sp)
    mup.load_state_dict(sp.state_dict())
    torch.testing.assert_close(mup(*batch()), sp(*batch()), atol=1e-6, rtol=0)
    opt = make_optimizer(mup, TrainConfig(lr=3e-4, parametrization="mup"), CPU)
    assert {g["lr"] for g in opt.param_groups} == {3e-4}


def test_sp_has_one_group_at_the_scheduled_lr_and_no_multipliers():
    model = tiny()
    assert model.config.attention_scale is None and model.config.readout_mult == 1.0
    opt = make_optimizer(model, TrainConfig(lr=1e-3), CPU)
    set_lr(opt, 2e-3)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == 2e-3 and "lr_mult" not in opt.param_groups[0]


def test_mup_groups_hidden_matrices_at_lr_over_m_and_the_rest_at_lr():
    model = tiny(width=128, parametrization="mup", base_width=32)  # m = 4
    opt = make_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.1, parametrization="mup"), CPU)
    set_lr(opt, 2e-3)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(by_param) == sum(p.requires_grad for p in names.values())  # each trainable parameter once
    hidden = {n for n, p in names.items() if p.requires_grad and param_role(n, p) == "hidden"}
    assert "blocks.0.attn.qkv.weight" in hidden and "blocks.1.adaLN_modulation.1.weight" in hidden
    assert not hidden & {"x_embedder.proj.weight", "y_embedder.embedding_table.weight", "final_layer.linear.weight",
                         "t_embedder.mlp.0.weight", "blocks.0.attn.qkv.bias"}
    for name, p in names.items():
        if p.requires_grad:
            group = by_param[id(p)]
            expected = (2e-3 / 4, 0.4) if name in hidden else (2e-3, 0.1)
            assert (group["lr"], group["weight_decay"]) == pytest.approx(expected), name


def test_mup_multipliers_and_init_follow_the_width():
    c = tiny(width=128, parametrization="mup", base_width=32).config
    assert c.readout_mult == 0.25
    assert c.attention_scale == pytest.approx(16**0.5 / 64)  # sqrt(d0) / d with d0 = 32 / 2, d = 128 / 2
    stds = [tiny(width=w, parametrization="mup", base_width=32).x_embedder.proj.weight.std().item()
            for w in (32, 256)]
    assert stds[1] == pytest.approx(stds[0], rel=0.1)  # input weights do not shrink with width
    sp_stds = [tiny(width=w).x_embedder.proj.weight.std().item() for w in (32, 256)]
    assert sp_stds[1] < 0.6 * sp_stds[0]  # SP's xavier input weights do


@pytest.mark.parametrize("block", ["adaln-zero", "cross-attn", "in-context"])
def test_folding_the_multipliers_gives_an_sp_model_with_the_same_outputs(block):
    mup = randomise(tiny(width=96, parametrization="mup", base_width=48, block=block))
    standard = fold_into_standard(mup)
    assert standard.config == dataclasses.replace(mup.config, parametrization="sp", base_width=None)
    torch.testing.assert_close(standard(*batch()), mup(*batch()), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_unfolded(mup)(*batch()), mup(*batch()), atol=1e-3)  # the multipliers matter


def _unfolded(mup):
    """The μP weights in an SP model as they are: what a loader that ignored the multipliers would run."""
    sp = create_dit("DiT-custom/4", **{k: v for k, v in dataclasses.asdict(mup.config).items()
                                      if k not in ("size", "patch_size", "parametrization", "base_width")})
    sp.load_state_dict(mup.state_dict())
    return sp.eval()


def test_a_mup_checkpoint_exports_to_diffusers_with_our_outputs_and_loads_back_as_mup(tmp_path):
    mup = randomise(tiny(width=96, parametrization="mup", base_width=48))
    state = mup.state_dict()
    config = {"model": dataclasses.asdict(mup.config), "class_names": [str(i) for i in range(10)],
              "train": {"codec": "identity", "data": "mnist32", "vae": "none", "noise_schedule": "linear"}}
    torch.save({"model": state, "ema": state, "opt": {}, "config": config, "step": 0}, tmp_path / "c.pt")
    assert load_model(tmp_path / "c.pt").config == mup.config  # the checkpoint records μP and its base width
    folder = export_diffusers(tmp_path / "c.pt", tmp_path / "d")
    theirs = DiTTransformer2DModel.from_pretrained(folder).eval()
    x, t, y = batch()
    zero = torch.zeros(len(x), dtype=torch.long)  # diffusers' timestep embedding differs elsewhere
    with torch.no_grad():
        torch.testing.assert_close(theirs(x, zero, class_labels=y).sample, mup(x, zero, y), atol=1e-5, rtol=1e-5)
        back = load_model(folder)  # the folded weights read back as an SP model with the same outputs
        assert back.config.parametrization == "sp"
        torch.testing.assert_close(back(x, t, y), mup(x, t, y), atol=1e-5, rtol=1e-5)


def test_bad_parametrizations_and_base_widths_and_mixed_init_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="unknown parametrization 'ntk'"):
        TrainConfig(parametrization="ntk")
    with pytest.raises(ValueError, match="base_width 256 is not in 1..128"):
        DiTConfig(size="custom", patch_size=4, depth=2, hidden_size=128, num_heads=2, parametrization="mup",
                  base_width=256)
    with pytest.raises(ValueError, match="holds a model with parametrization='mup'.*parametrization='sp'"):
        sp = tiny()
        initialise_from(sp, sp, _saved(tiny(parametrization="mup", base_width=48), tmp_path / "mup.pt"))


def _saved(model, path):
    """The model as this project's checkpoint (EMA = the model)."""
    state = model.state_dict()
    torch.save({"model": state, "ema": state, "opt": {}, "step": 0,
                "config": {"model": dataclasses.asdict(model.config), "train": {}, "class_names": []}}, path)
    return path
