
from itertools import pairwise

import pytest

from dit.config import TrainConfig
from dit.lr_find import exponential_rates, lr_range_test, smooth


def test_rates_rise_exponentially_between_the_bounds():
    rates = exponential_rates(1e-5, 1e-1, 5)
    assert rates[0] == pytest.approx(1e-5) and rates[-1] == pytest.approx(1e-1)
    assert all(b / a == pytest.approx(10.0) for a, b in pairwise(rates))


def test_smoothing_is_a_bias_corrected_moving_average():
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    beta = 0.5
    expect_2 = (beta * (1 - beta) * 1.0 + (1 - beta) * 3.0) / (1 - beta**2)
    assert smooth([1.0, 3.0], beta)[1] == pytest.approx(expect_2)


def test_range_test_finds_the_divergence_of_a_tiny_dit(tmp_path):
    config = TrainConfig(
        model="DiT-custom/8", depth=1, hidden_size=32, num_heads=2, resolution=16, batch_size=16, num_workers=0
    )
    result = lr_range_test(config, min_lr=1e-3, max_lr=3.0, num_steps=60, progress=False)
    assert result["diverged_lr"] is not None and result["diverged_lr"] > result["min_loss_lr"]
    assert result["suggested_lr"] == pytest.approx(result["min_loss_lr"] / 10)
    assert len(result["lr"]) == len(result["loss"]) < 60
    assert min(result["smoothed"]) < 0.85 * result["smoothed"][0]
