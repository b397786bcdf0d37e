"""Each sample's label and noise come from (seed, sample index): samples do not depend on the batch size."""
import numpy as np
import torch

from dit.data import SAMPLE_SHARDS, step_seed
from dit.sample import SampleConfig, generate_samples, shard_batch
from tests.dit.test_interop import random_tiny_dit, save_run_checkpoint


def test_each_sample_has_its_own_noise_so_samples_do_not_depend_on_the_batch_size(tmp_path):
    ckpt = save_run_checkpoint(random_tiny_dit(), tmp_path / "step_0000000.pt")
    made = {}
    for batch_size in (7, 3):
        config = SampleConfig(num=7, steps=4, batch_size=batch_size, seed=4)  # DDPM: fresh noise at every step
        with np.load(generate_samples(ckpt, tmp_path / f"b{batch_size}.npz", config, progress=False)) as data:
            made[batch_size] = data["arr_0"].astype(int), data["arr_1"]
    assert list(made[7][1]) == list(made[3][1]) and len(set(made[7][1])) > 1
    differ = np.abs(made[7][0] - made[3][0])
    assert differ.max() <= 1 and (differ > 0).mean() < 1e-2  # batched matmuls may round the last bit apart
    other_seed = SampleConfig(num=7, steps=4, batch_size=7, seed=5)
    with np.load(generate_samples(ckpt, tmp_path / "s5.npz", other_seed, progress=False)) as data:
        assert np.abs(data["arr_0"].astype(int) - made[7][0]).mean() > 5  # the seed does matter


def test_sample_i_draws_its_label_then_its_noise_from_the_seed_and_its_index():
    labels, noise, _ = shard_batch(SampleConfig(num=7, batch_size=3, seed=4), 1, 10, (1, 16, 16), "cpu")
    for row, index in enumerate((3, 4, 5)):
        gen = torch.Generator().manual_seed(step_seed(4, index, SAMPLE_SHARDS))
        assert int(labels[row]) == int(torch.randint(0, 10, (1,), generator=gen))
        assert torch.equal(noise[row], torch.randn((1, 16, 16), generator=gen))
