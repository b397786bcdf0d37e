"""Image conversions and grids shared by training previews, sampling and reports."""
import math

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], (N, C, H, W) -> uint8 (N, H, W, C), as the ADM evaluator stores them."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


PREVIEW_MIN_WIDTH = 512  # pixels: grids narrower than this are enlarged for people to look at


def image_grid(
    images: np.ndarray, columns: int | None = None, pad: int = 2, min_width: int = PREVIEW_MIN_WIDTH
) -> Image.Image:
    """uint8 (N, H, W, C) -> one PIL image of the images on a grid with `pad` pixels between them,
    enlarged by a whole factor (pixels kept sharp) when narrower than `min_width`."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        canvas[top : top + h, left : left + w] = image
    grid = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    factor = -(-min_width // grid.width)
    return grid.resize((grid.width * factor, grid.height * factor), Image.NEAREST) if factor > 1 else grid


def save_gif(frames: list[Image.Image], path, seconds_per_frame: float = 0.5):
    """An animated GIF of frames (looping), written atomically."""
    from dit.io import atomic_path

    with atomic_path(path) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(seconds_per_frame * 1000), loop=0
        )
