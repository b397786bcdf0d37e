"""Validation loss: the training objective of the EMA model on held-out images, on fixed terms.

Every checkpoint of a run is scored on the same held-out items, at the same timesteps, with the same
noise, so two checkpoints (or two runs on the same data) differ only in their weights. The loss is
the one the model trains on (`GaussianDiffusion.training_losses`: mse + vb, IDDPM's hybrid
objective), with the class label given (no label dropout).

Timesteps form a stratified grid: the range [0, T) is cut into K equal buckets and each item is
scored once in every bucket, item i of N at offset (i + 1/2) / N of the bucket, so the N x K
timesteps cover [0, T) evenly and each bucket's mean is the loss at its noise levels
(`val_loss_t0` the least noisy). The noise is drawn on the CPU from a generator seeded by `seed`,
so it does not depend on the device.

Held-out items exist where the data has a split that training does not see: MNIST-32's 1,000 test
digits. An image folder or a latent cache has no such split: `held_out_items` says so (None) and
the run's validation columns stay empty.
"""
import torch

from dit.data import MNIST32, MNIST_NAME
from dit.diffusion import GaussianDiffusion

VALIDATION_SEED = 0  # of the noise: the same for every run and checkpoint


def has_held_out(data: str, codec: str = "identity") -> bool:
    """Whether a data set has a split that training does not see: only MNIST-32 in pixel space (its test split)."""
    return data == MNIST_NAME and codec == "identity"


def held_out_items(data: str, resolution: int | None, num: int, codec: str = "identity"):
    """The first `num` held-out (images, labels) of a data set, or None when it has no held-out split
    (`has_held_out`); images (num, C, H, W) in [-1, 1], labels (num,).
    """
    if not has_held_out(data, codec):
        return None
    test = MNIST32("test", resolution)
    return test.images[:num], test.labels[:num]


def bucket_timesteps(num_items: int, buckets: int, num_timesteps: int) -> torch.Tensor:
    """(buckets, num_items) int64: item i in bucket k at floor(T (k + (i + 1/2) / N) / K)."""
    k = torch.arange(buckets, dtype=torch.float64)[:, None]
    i = torch.arange(num_items, dtype=torch.float64)[None, :]
    return torch.floor(num_timesteps * (k + (i + 0.5) / num_items) / buckets).long()


def validation_noise(num_items: int, buckets: int, shape, seed: int) -> torch.Tensor:
    """(buckets, num_items, *shape) standard normal noise from a CPU generator seeded by `seed`."""
    return torch.randn((buckets, num_items, *shape), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def validation_loss(ema_model, diffusion: GaussianDiffusion, items, *, timesteps: int = 4, seed: int = VALIDATION_SEED,
                    batch_size: int = 256) -> dict:
    """The hybrid loss of `ema_model` on `items` = (x, y) at `timesteps` buckets of t, fixed noise.

    Returns {"val_loss", "val_mse", "val_loss_t0", ..., "val_loss_t{K-1}"}: the means over every
    (item, timestep), the MSE part, and each bucket's mean loss (t0: the least noisy).
    """
    x, y = items
    device = next(ema_model.parameters()).device
    t = bucket_timesteps(len(x), timesteps, diffusion.num_timesteps)  # (K, N)
    noise = validation_noise(len(x), timesteps, x.shape[1:], seed)  # (K, N, C, H, W)
    was_training = ema_model.training
    ema_model.eval()
    loss, mse = torch.zeros(timesteps, len(x)), torch.zeros(timesteps, len(x))
    for k in range(timesteps):
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            terms = diffusion.training_losses(ema_model, x[rows].to(device), t[k, rows].to(device),
                                              dict(y=y[rows].to(device)), noise[k, rows].to(device))
            loss[k, rows], mse[k, rows] = terms["loss"].cpu(), terms["mse"].cpu()
    ema_model.train(was_training)
    buckets = {f"val_loss_t{k}": float(loss[k].mean()) for k in range(timesteps)}
    return {"val_loss": float(loss.mean()), "val_mse": float(mse.mean()), **buckets}


def validate_checkpoint(ckpt_path, items, *, timesteps: int, batch_size: int, device="cpu") -> dict:
    """`validation_loss` of a run's checkpoint (its EMA weights, its diffusion) on `items`."""
    from dit.checkpoint import load_model, read_checkpoint
    from dit.diffusion import create_diffusion

    ckpt = read_checkpoint(ckpt_path)
    train = ckpt["config"]["train"]
    model = load_model(ckpt, use_ema=True).to(device)
    diffusion = create_diffusion("", train["noise_schedule"], model.config.learn_sigma, train["diffusion_steps"])
    return validation_loss(model, diffusion, items, timesteps=timesteps, batch_size=batch_size)
