"""`scaling bench --find-micro-batch`: the largest micro-batch whose training step fits the GPU."""
import pytest
import torch

from scaling.bench import find_micro_batch, largest_fitting_micro_batch, training_setup


def fits_up_to(limit: int, tried: list):
    def try_step(m: int):
        tried.append(m)
        if m > limit:
            raise torch.cuda.OutOfMemoryError(f"{m} rows do not fit")
    return try_step


def test_the_search_halves_through_divisors_to_the_largest_that_fits():
    tried = []
    assert largest_fitting_micro_batch(256, fits_up_to(40, tried)) == 32
    assert tried == [256, 128, 64, 32]
    tried = []
    assert largest_fitting_micro_batch(96, fits_up_to(5, tried)) == 3  # 96 -> 48 -> 24 -> 12 -> 6 -> 3
    assert tried == [96, 48, 24, 12, 6, 3] and all(96 % m == 0 for m in tried)
    assert largest_fitting_micro_batch(8, fits_up_to(100, [])) == 8  # the whole batch fits: no accumulation
    assert largest_fitting_micro_batch(8, fits_up_to(0, [])) is None  # not even one row


def test_other_errors_are_not_taken_for_a_full_gpu():
    def broken(m):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        largest_fitting_micro_batch(8, broken)


def test_on_a_cpu_there_is_no_search_and_micro_batches_train(monkeypatch):
    geometry = dict(input_size=16, in_channels=1, num_classes=10, device="cpu")
    assert find_micro_batch("DiT-T/8", path="reference", batch_size=8, **geometry) is None
    whole, _ = training_setup("DiT-T/8", path="reference", batch_size=8, **geometry)
    split, _ = training_setup("DiT-T/8", path="reference", batch_size=8, micro_batch_size=2, **geometry)
    loss_whole, loss_split = whole()[0].item(), split()[0].item()
    assert abs(loss_whole - loss_split) < 1e-5 * abs(loss_whole)  # the same step, in chunks
