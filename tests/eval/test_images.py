"""Reading ADM-layout .npz files: memory-mapped or streamed, whole or from an offset, truncation refused."""
import numpy as np
import pytest

from eval.images import NpzImages


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_batches_return_the_array_from_any_start(tmp_path, save):
    images = np.random.default_rng(0).integers(0, 256, size=(23, 5, 6, 3), dtype=np.uint8)
    save(tmp_path / "x.npz", labels=np.arange(4), arr_0=images)  # arr_0 not the first member
    source = NpzImages(tmp_path / "x.npz")
    assert (source.num, source.shape) == (23, (5, 6, 3))
    for batch_size in (1, 4, 23, 50):
        for start in (0, 7):
            assert np.array_equal(np.concatenate(list(source.batches(batch_size, start))), images[start:])
    assert np.array_equal(np.concatenate(list(source.batches(4, 3, 9))), images[3:9])


def test_truncated_compressed_array_is_refused(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "x.npz", arr_0=images)
    source = NpzImages(tmp_path / "x.npz")
    source.num = 60  # as if the header promised more images than the member holds
    with pytest.raises(ValueError, match="truncated"):
        list(source.batches(16))
