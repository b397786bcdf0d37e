"""Image sources for evaluation: uint8 (N, H, W, C) batches from an ADM `.npz`, an array or a folder.

The ADM evaluator's layout is an `.npz` whose `arr_0` holds uint8 images (N, H, W, C), C = 3
(we also take C = 1 for MNIST). `NpzImages` checks the array's header without loading it and then
memory-maps (or, when compressed, streams) it in batches: 50,000 images at 256 px (9.8 GB) are never loaded whole.
Every source has `num`, `shape` (H, W, C) and `batches(batch_size, start, stop)`.
"""
import contextlib
import zipfile
from pathlib import Path

import numpy as np

IMAGES_KEY = "arr_0"
DEFAULT_RESOLUTION = 256  # image folders are centre-cropped to this side unless told otherwise
UINT8_HINT = "convert images in [-1, 1] with ((x + 1) * 127.5).round().clip(0, 255).astype(np.uint8)"


class ArrayImages:
    """Images already in memory: uint8 (N, H, W, C)."""

    def __init__(self, images: np.ndarray, name: str = "images"):
        check_image_layout(images.shape, images.dtype, name)
        self.images, self.name = images, name
        self.num, self.shape = images.shape[0], tuple(images.shape[1:])

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        stop = self.num if stop is None else stop
        for i in range(start, stop, batch_size):
            yield np.ascontiguousarray(self.images[i : min(i + batch_size, stop)])

    def head(self, n: int) -> np.ndarray:
        return self.images[:n]


class NpzImages:
    """`arr_0` of an `.npz`, never loaded whole: memory-mapped when stored uncompressed (np.savez),
    else streamed from the compressed zip member (np.savez_compressed)."""

    def __init__(self, path, key: str = IMAGES_KEY, what: str = "samples"):
        self.path, self.key, self.name = Path(path), key, f"{what} file {path}"
        with self._open() as f:
            shape, dtype, self._offset = _read_npy_header(f, self.name, key)
        check_image_layout(shape, dtype, f"{key} of {self.name}")
        self.num, self.shape = shape[0], tuple(shape[1:])
        self._image_bytes = int(np.prod(self.shape))
        self._mapped = self._memory_map()

    def _open(self):
        return open_npz_member(self.path, self.key, self.name)

    def _memory_map(self) -> np.ndarray | None:
        """The array mapped straight from the file when its zip member is stored uncompressed, else None."""
        with zipfile.ZipFile(self.path) as archive:
            info = archive.getinfo(f"{self.key}.npy")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size < self._offset + self.num * self._image_bytes:
            return None
        with open(self.path, "rb") as f:  # the local file header: 30 bytes, then the name and the extra field
            f.seek(info.header_offset + 26)
            name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        start = info.header_offset + 30 + name_len + extra_len + self._offset
        return np.memmap(self.path, dtype=np.uint8, mode="c", offset=start, shape=(self.num, *self.shape))

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        stop = self.num if stop is None else stop
        if self._mapped is not None:
            for i in range(start, stop, batch_size):
                yield self._mapped[i : min(i + batch_size, stop)]
            return
        with self._open() as f:
            _skip(f, self._offset + start * self._image_bytes)
            for i in range(start, stop, batch_size):
                batch = np.empty((min(batch_size, stop - i), *self.shape), dtype=np.uint8)
                if not _read_into(f, memoryview(batch).cast("B")):
                    raise ValueError(
                        f"{self.name} is truncated: {self.key} ends before image {i + len(batch)} of {self.num}"
                    )
                yield batch

    def head(self, n: int) -> np.ndarray:
        return next(self.batches(min(n, self.num)))


def npz_keys(path: Path, name: str) -> list[str]:
    """The array names in an `.npz`; ValueError when it is missing or not a zip archive."""
    if not path.is_file():
        raise ValueError(f"{name} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            return [m.removesuffix(".npy") for m in archive.namelist()]
    except zipfile.BadZipFile:
        raise ValueError(f"{name} is not an .npz archive (np.savez writes one)") from None


@contextlib.contextmanager
def open_npz_member(path: Path, key: str, name: str):
    """The `<key>.npy` member of an `.npz`, open for reading; ValueError naming what is wrong."""
    keys = npz_keys(path, name)
    if key not in keys:
        raise ValueError(f"{name} has no {key!r} array (keys: {', '.join(keys) or 'none'}); "
                         f"the ADM layout keeps uint8 images (N, H, W, C) in arr_0")
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        yield member


def _read_npy_header(f, name: str, key: str):
    """(shape, dtype, data offset) of an .npy stream."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(f)
        if version not in readers:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = readers[version](f)
    except ValueError as exc:
        raise ValueError(f"{key} of {name} is not a readable .npy array ({exc})") from None
    if fortran:
        raise ValueError(f"{key} of {name} is stored in Fortran order; save it with np.ascontiguousarray(images)")
    return shape, dtype, f.tell()


def _read_into(f, buffer: memoryview) -> bool:
    """Fill `buffer` from the stream; False when the stream ends first."""
    filled = 0
    while filled < len(buffer):
        n = f.readinto(buffer[filled:])
        if not n:
            return False
        filled += n
    return True


def _skip(f, nbytes: int):
    """Advance a zip member stream to byte `nbytes` from its start (seek where the stream allows it)."""
    try:
        f.seek(nbytes)
    except (OSError, ValueError, zipfile.BadZipFile):  # pragma: no cover - older zipfile without seek
        f.read(nbytes - f.tell())


def check_image_layout(shape: tuple, dtype, name: str):
    """ValueError unless (N, H, W, C) uint8 with N >= 1 and C in {1, 3}."""
    if len(shape) != 4 or shape[-1] not in (1, 3):
        hint = (
            "; it looks like (N, C, H, W): transpose it with images.transpose(0, 2, 3, 1)"
            if len(shape) == 4 and shape[1] in (1, 3)
            else ""
        )
        raise ValueError(f"{name} has shape {tuple(shape)}; expected images (N, H, W, C) with C = 1 or 3{hint}")
    if np.dtype(dtype) != np.uint8:
        raise ValueError(f"{name} has dtype {np.dtype(dtype)}; expected uint8 in 0..255 ({UINT8_HINT})")
    if shape[0] == 0:
        raise ValueError(f"{name} holds no images")


def check_value_range(source, n: int = 256):
    """ValueError when the first images only use values 0 and 1: floats in [0, 1] cast to uint8."""
    head = source.head(n)
    if head.size and head.max() == 1:
        raise ValueError(f"{source.name} only holds values 0 and 1 in its first {len(head)} images: "
                         f"images in [0, 1] cast to uint8? Scale them to 0..255 ({UINT8_HINT})")


class FolderImages:
    """Every image under a folder (recursively), centre-cropped to `resolution` as ADM's data loader does."""

    def __init__(self, root, resolution: int = DEFAULT_RESOLUTION, workers: int = 8):
        from dit.data import IMAGE_EXTENSIONS

        self.root, self.name = Path(root), f"image folder {root}"
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise ValueError(f"{self.name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.num, self.shape, self.workers = len(self.files), (resolution, resolution, 3), workers

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None):
        import torch

        files = self.files[start:stop]
        loader = torch.utils.data.DataLoader(
            _CroppedFiles(files, self.shape[0]),
            batch_size=batch_size,
            num_workers=min(self.workers, len(files) // batch_size),
            collate_fn=np.stack,
        )
        yield from loader

    def head(self, n: int) -> np.ndarray:
        return next(self.batches(min(n, self.num)))


class _CroppedFiles:
    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        from dit.data import center_crop_arr

        with Image.open(self.files[i]) as image:
            return center_crop_arr(image.convert("RGB"), self.size)


def open_source(data: str, resolution: int | None = None, what: str = "samples"):
    """An image source for `data`: 'mnist32' (its 4,000 training digits, resized as training resizes them when
    `resolution` is not 32), an `.npz` (arr_0), or an image folder centre-cropped to `resolution` (default 256)."""
    from dit.data import MNIST_NAME

    if data == MNIST_NAME:
        return _mnist_training_digits(resolution)
    path = Path(data)
    if path.is_dir():
        return FolderImages(path, resolution or DEFAULT_RESOLUTION)
    if path.suffix == ".npz" or path.is_file():
        return NpzImages(path, what=what)
    raise ValueError(f"{data} is neither 'mnist32', an .npz file nor an image folder")


def _mnist_training_digits(resolution: int | None) -> ArrayImages:
    from dit.data import MNIST32
    from dit.images import to_uint8

    digits = MNIST32("train", resolution)  # float (N, 1, R, R) in [-1, 1], resized as the model saw them
    return ArrayImages(to_uint8(digits.images), name=f"the mnist32 training digits at {digits.image_size} px")
