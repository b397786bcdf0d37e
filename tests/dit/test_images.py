import numpy as np
import torch

from dit.images import image_grid, to_uint8


def test_to_uint8_maps_minus_one_to_one_onto_0_to_255_channels_last():
    x = torch.tensor([-1.0, -0.5, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 5)
    assert to_uint8(x).tolist() == [[[[0], [64], [128], [255], [255]]]]  # round((v + 1) * 127.5), clamped


def test_grid_places_each_image_and_enlarges_small_grids():
    images = np.stack([np.full((4, 4, 1), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = np.asarray(image_grid(images, columns=3, pad=1, min_width=0))
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1)
    for i in range(5):
        row, col = divmod(i, 3)
        top, left = 1 + row * 5, 1 + col * 5
        assert (grid[top : top + 4, left : left + 4] == 10 * (i + 1)).all()
    big = np.asarray(image_grid(images, columns=3, pad=1, min_width=40))
    assert big.shape == (11 * 3, 16 * 3)  # the smallest whole factor reaching 40 px: ceil(40 / 16) = 3
    assert np.array_equal(big[::3, ::3], grid)
