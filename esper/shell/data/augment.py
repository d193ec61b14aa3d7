"""On-device augmentation and normalisation of image batches, uint8 or float (docs/runtime.md §5.4, §5.8).

Random crop with zero padding p (offsets in [0, 2p] per sample) and a horizontal flip with
probability 0.5, both drawn from the run's `augment` generator; the same distribution as
torchvision's `RandomCrop(size, padding=p)` followed by `RandomHorizontalFlip()`. Everything runs
on the batch's device as one gather; no per-sample Python loop.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def draw_augment(n: int, padding: int, generator: torch.Generator,
                 device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample crop offsets (n, 2) [row, col] in [0, 2p] and flip flags (n,), drawn in that order
    on the generator's device, then moved to `device`."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=generator.device)
    flips = torch.rand(n, generator=generator, device=generator.device) < 0.5
    target = generator.device if device is None else torch.device(device)
    return offsets.to(target), flips.to(target)


def crop_flip(x: Tensor, padding: int, offsets: Tensor, flips: Tensor) -> Tensor:
    """Zero-pad (B, C, H, W) by `padding`, crop H×W at `offsets`, mirror the rows whose flag is set.
    Same dtype and shape as `x`."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = offsets[:, :1] + torch.arange(height, device=x.device)  # (B, H)
    ascending = torch.arange(width, device=x.device)
    cols = offsets[:, 1:] + torch.where(flips[:, None], width - 1 - ascending, ascending)  # (B, W)
    samples = torch.arange(batch, device=x.device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: (B, H, W, C).
    return padded[samples, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (B, C, H, W) → float32 (x/255 − mean) / std per channel; mean/std are (C,) tensors. Float
    inputs (a script's tensors, esper.shell.data.tensors) are taken as they are: (x − mean) / std."""
    # Never in place on a float batch: a held-out batch is a view of the split, not a copy.
    scaled = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return (scaled - mean[:, None, None]) / std[:, None, None]


class ImageTransform:
    """A task's batch preparation: augmentation (train only, when padding > 0) then normalisation,
    with mean/std held on the data's device so no batch pays a host→device copy."""

    def __init__(self, *, padding: int, hflip: bool, mean: tuple[float, ...], std: tuple[float, ...],
                 device: torch.device | str) -> None:
        self.padding, self.hflip = padding, hflip
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        # CNNs run channels_last on CUDA (docs/runtime.md §2.5); the CPU keeps contiguous tensors.
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format

    def __call__(self, x: Tensor, train: bool, generator: torch.Generator | None = None) -> Tensor:
        if train and (self.padding or self.hflip):
            if generator is None:
                raise ValueError("training batches need the augment generator")
            offsets, flips = draw_augment(x.shape[0], self.padding, generator, x.device)
            if not self.hflip:
                flips = torch.zeros_like(flips)
            x = crop_flip(x, self.padding, offsets, flips)
        return normalise(x, self.mean, self.std).contiguous(memory_format=self.memory_format)


def prepare_batch(x: Tensor, train: bool, generator: torch.Generator | None, *, padding: int,
                  mean: tuple[float, ...], std: tuple[float, ...], hflip: bool = True) -> Tensor:
    """One-off form of `ImageTransform` (tests, tools); loops should build the transform once."""
    transform = ImageTransform(padding=padding, hflip=hflip, mean=mean, std=std, device=x.device)
    return transform(x, train, generator)
