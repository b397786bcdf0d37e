"""Feature extraction under torch.distributed: two gloo processes on CPU give the one-process features."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cache: str, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), XDG_CACHE_HOME=cache)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from dit.data import mnist32_arrays
    from eval.extract import extract_features
    from eval.features import get_extractor
    from eval.images import ArrayImages

    features = extract_features(
        ArrayImages(mnist32_arrays()[0][:101]), get_extractor("mnist"), batch_size=16, progress=False
    )
    if rank == 1:
        torch.save(features.pool, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_gather_features_in_order(tmp_path, user_cache, mnist_extractor, digits):
    from eval.extract import extract_features
    from eval.images import ArrayImages

    out = tmp_path / "pool.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(user_cache), str(out)), nprocs=2, start_method="spawn")
    expected = extract_features(ArrayImages(digits[0][:101]), mnist_extractor, progress=False).pool
    np.testing.assert_allclose(torch.load(out).numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
