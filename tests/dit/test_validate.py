"""Validation loss: fixed held-out items, timesteps and noise, the training objective of the EMA model."""
import math

import torch

from dit.data import mnist32_split, uint8_to_unit
from dit.diffusion import create_diffusion
from dit.models import create_dit
from dit.validate import held_out_items, validation_loss

T, N, K = 1000, 6, 4


def _model(seed=0):
    torch.manual_seed(seed)
    model = create_dit(
        "DiT-custom/4", depth=1, hidden_size=32, num_heads=2, input_size=8, in_channels=1, num_classes=10
    )
    with torch.no_grad():  # adaLN-Zero starts at zero output: perturb so the loss depends on the weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _items():
    return held_out_items("mnist32", 8, N)


def test_held_out_items_are_the_test_digits_not_training_ones():
    x, y = held_out_items("mnist32", None, 5)
    test_images, test_labels = mnist32_split("test")
    assert torch.equal(x, uint8_to_unit(test_images[:5])) and torch.equal(y, torch.from_numpy(test_labels[:5]))
    assert held_out_items("some/image/folder", 32, 5) is None  # no split training leaves out


def test_validation_loss_is_the_training_loss_on_fixed_timesteps_and_noise():
    model, diffusion, (x, y) = _model(), create_diffusion(""), _items()
    got = validation_loss(model, diffusion, (x, y), timesteps=K, seed=3, batch_size=4)
    assert (
        validation_loss(model, diffusion, (x, y), timesteps=K, seed=3, batch_size=4) == got
    )  # re-evaluated: identical

    # by hand: item i in bucket k at floor(T (k + (i + 1/2) / N) / K); noise (K, N, C, H, W) from a CPU generator
    t = torch.tensor([[math.floor(T * (k + (i + 0.5) / N) / K) for i in range(N)] for k in range(K)])
    assert t[0, 0] == 20 and t[3, 5] == 979  # 1000 x (0.5 / 6) / 4 = 20.8; 1000 x (3 + 5.5 / 6) / 4 = 979.2
    noise = torch.randn((K, N, *x.shape[1:]), generator=torch.Generator().manual_seed(3))
    losses, mses = [], []
    with torch.no_grad():
        for k in range(K):
            terms = diffusion.training_losses(model, x, t[k], dict(y=y), noise[k])
            abar = torch.from_numpy(diffusion.alphas_cumprod)[t[k]].float().view(-1, 1, 1, 1)
            x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise[k]
            eps = model(x_t, t[k], y)[:, :1]
            mse = ((noise[k] - eps) ** 2).mean(dim=(1, 2, 3))
            torch.testing.assert_close(terms["mse"], mse, rtol=1e-5, atol=1e-6)
            losses.append(terms["loss"])
            mses.append(mse)
    assert math.isclose(got["val_loss"], float(torch.stack(losses).mean()), rel_tol=1e-5)
    assert math.isclose(got["val_mse"], float(torch.stack(mses).mean()), rel_tol=1e-5)
    for k in range(K):
        assert math.isclose(got[f"val_loss_t{k}"], float(losses[k].mean()), rel_tol=1e-5)
    assert got["val_loss"] > got["val_mse"] > 0  # the vb term counts


def test_another_model_or_noise_seed_changes_the_loss():
    diffusion, items = create_diffusion(""), _items()
    base = validation_loss(_model(0), diffusion, items, timesteps=K, seed=0)
    assert validation_loss(_model(1), diffusion, items, timesteps=K, seed=0)["val_loss"] != base["val_loss"]
    assert validation_loss(_model(0), diffusion, items, timesteps=K, seed=1)["val_loss"] != base["val_loss"]
