"""A small digit classifier as the feature network for MNIST-32, where Inception features mean little.

Trained on the 4,000 MNIST-32 training digits in seconds on one CPU thread (single-threaded, so
the weights depend only on the recipe), and cached as
`<user cache>/dit-scaling/mnist-classifier-<recipe hash>.pt`. About 97 % accurate on the 1,000
test digits. It plays Inception's three parts for the offline demo: the penultimate layer
(`pool`, 64-d) for FID and Precision/Recall, the class logits (10) for IS, and an early spatial
map (`spatial`: the first 8 of 16 channels after the second block, 8 x 8 -> 512 dims) for sFID.
"""
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eval.features.base import Features, flatten_spatial, register_extractor, resize, to_channels

IMAGE_SIZE = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """How the classifier is made; its hash names the cached weights."""

    widths: tuple[int, int, int] = (8, 16, 32)
    hidden: int = 64
    spatial_channels: int = 8
    epochs: int = 8
    batch_size: int = 100
    lr: float = 4e-3  # peak of a one-cycle schedule (Adam)
    seed: int = 0
    version: int = 1  # bump when the training code changes

    def __post_init__(self):
        if self.spatial_channels > self.widths[1]:
            raise ValueError(
                f"spatial_channels {self.spatial_channels} exceeds the second block's {self.widths[1]} channels"
            )

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class DigitClassifier(nn.Module):
    """Three conv blocks (conv 3x3, ReLU, 2x max-pool) and a two-layer head: 1 x 32 x 32 -> 10 logits."""

    def __init__(self, recipe: Recipe):
        super().__init__()
        w1, w2, w3 = recipe.widths
        self.block1 = nn.Sequential(nn.Conv2d(1, w1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(nn.Conv2d(w2, w3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(w3 * 4 * 4, recipe.hidden), nn.ReLU())
        self.head = nn.Linear(recipe.hidden, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, 1, 32, 32) in [-1, 1] -> (penultimate (N, hidden), logits (N, 10), map (N, w2, 8, 8))."""
        spatial = self.block2(self.block1(x))  # (N, w2, 8, 8)
        pool = self.hidden(self.block3(spatial))  # (N, hidden)
        return pool, self.head(pool), spatial


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float (N, 1, 32, 32) in [-1, 1]."""
    x = to_channels(images, 1).float() / 127.5 - 1.0
    return resize(x, IMAGE_SIZE)


def train_classifier(recipe: Recipe) -> tuple[DigitClassifier, float]:
    """Train on the MNIST-32 training split; returns the model and its accuracy on the 1,000 test digits."""
    from dit.data import mnist32_split

    images, labels = mnist32_split("train")
    x = to_unit(torch.from_numpy(images).permute(0, 3, 1, 2))  # (4000, 1, 32, 32)
    y = torch.from_numpy(labels)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit(recipe, x, y)
    finally:
        torch.set_num_threads(threads)


def _fit(recipe: Recipe, x: torch.Tensor, y: torch.Tensor) -> tuple[DigitClassifier, float]:
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        model = DigitClassifier(recipe)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        steps = recipe.epochs * (len(y) // recipe.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
        order = torch.cat([torch.randperm(len(y)) for _ in range(recipe.epochs)])
        for step in range(steps):
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            loss = F.cross_entropy(model(x[idx])[1], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, digit_accuracy(model)


@torch.no_grad()
def digit_accuracy(model: DigitClassifier) -> float:
    """Accuracy on the 1,000 MNIST-32 test digits."""
    from dit.data import mnist32_split

    images, labels = mnist32_split("test")
    logits = model(to_unit(torch.from_numpy(images).permute(0, 3, 1, 2)))[1]
    return (logits.argmax(1).numpy() == labels).mean().item()


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/dit-scaling, else ~/.cache/dit-scaling."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dit-scaling"


def load_classifier(recipe: Recipe = Recipe()) -> tuple[DigitClassifier, float]:
    """The cached classifier for `recipe` (trained and cached on first use) and its test accuracy."""
    from dit.io import atomic_torch_save, load_tensors

    path = cache_dir() / f"mnist-classifier-{recipe.key()}.pt"
    if path.is_file():
        fix = "delete it: the next run trains the classifier again (about a minute)"
        saved = load_tensors(path, what="cached MNIST classifier", expected=f"this project's own cache file; {fix}")
        model = DigitClassifier(recipe)
        try:
            model.load_state_dict(saved["state_dict"])
            return model.eval(), float(saved["test_accuracy"])
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"cached MNIST classifier {path} does not fit ({type(exc).__name__}); {fix}") from None
    model, accuracy = train_classifier(recipe)
    atomic_torch_save(
        {"state_dict": model.state_dict(), "recipe": dataclasses.asdict(recipe), "test_accuracy": accuracy}, path
    )
    return model, accuracy


class MNISTFeatures(nn.Module):
    """uint8 digits (N, C, H, W), C in {1, 3}, any size -> Features(pool 128, spatial 512, logits 10)."""

    name, channels = "mnist", 1
    classifies_labels = True  # its logits are the data set's own classes: samples can be checked against their labels

    def __init__(self, model: DigitClassifier, recipe: Recipe, accuracy: float):
        super().__init__()
        self.model, self.recipe, self.test_accuracy = model, recipe, accuracy
        self.dims = self.feature_dims(recipe)

    @staticmethod
    def feature_dims(recipe: Recipe = Recipe()) -> dict:
        return {"pool": recipe.hidden, "spatial": recipe.spatial_channels * 8 * 8, "logits": 10}

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> Features:
        pool, logits, spatial = self.model(to_unit(images))
        return Features(pool, flatten_spatial(spatial, self.recipe.spatial_channels), logits)


def build(device="cpu", *, weights=None, precision: str = "fp32", recipe: Recipe = Recipe()) -> MNISTFeatures:
    """The `mnist` extractor on `device`; it is small, so it always runs in fp32 (Inception `weights` do not apply)."""
    model, accuracy = load_classifier(recipe)
    return MNISTFeatures(model, recipe, accuracy).to(device).eval()


register_extractor("mnist", dims=MNISTFeatures.feature_dims(), build=build)  # a small digit classifier for MNIST-32
