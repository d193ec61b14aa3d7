"""`TaskData`: a run's splits on its device, its data source record, and batching by index.

Images are uint8 NCHW with int64 labels; text splits are (N, block) window views of a token stream
(`inputs = stream[:-1]`, `labels = stream[1:]`, stride = block, so no window is copied until a
batch gathers it). Batches are index tensors into the split (train: slices of a fresh permutation)
or slices (held-out), so an epoch moves no data but the permutation.
"""

import math
from collections.abc import Iterator

import attrs
import torch
from torch import Tensor

from esper.core.tasks import TaskPreset
from esper.shell.data.augment import ImageTransform
from esper.shell.data.errors import DataError
from esper.shell.data.source import DataSource

SPLITS = ("train", "heldout")


@attrs.frozen(kw_only=True, eq=False)
class TaskData:
    """Owned by one run and freed with it (there is no module-level cache of device tensors)."""

    preset: TaskPreset
    source: DataSource
    train_inputs: Tensor
    train_labels: Tensor
    heldout_inputs: Tensor
    heldout_labels: Tensor
    device: torch.device
    transform: ImageTransform | None = None  # images only

    @property
    def n_train(self) -> int:
        return int(self.train_inputs.shape[0])

    @property
    def n_heldout(self) -> int:
        return int(self.heldout_inputs.shape[0])

    @property
    def n_classes(self) -> int:
        """Classes, or the vocabulary of the tokenizer actually used (8,192 for BPE tinystories)."""
        tokenizer = self.source.tokenizer
        return self.preset.n_classes if tokenizer is None else tokenizer.vocab

    @property
    def random_guess_loss(self) -> float:
        return math.log(self.n_classes)

    def train_batches(self, batch_size: int, generator: torch.Generator, *,
                      max_batches: int | None = None) -> Iterator[Tensor]:
        """Index tensors of one epoch: consecutive slices of `randperm(N, generator=data)`, drawn on
        the generator's device and moved once (queued, not synced, onto a GPU); the last partial batch
        is dropped. Raises at call time (not on first iteration) when the split cannot fill one batch."""
        _check_batch_size(batch_size)
        full = self.n_train // batch_size
        if full == 0:
            raise DataError(f"{self.preset.name}: the train split has {self.n_train} samples, fewer than one "
                            f"batch of {batch_size}; lower --batch-size or raise --train-size")
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        count = full if max_batches is None else min(full, max_batches)
        order = torch.randperm(self.n_train, generator=generator, device=generator.device)
        if order.device != self.train_inputs.device and self.train_inputs.device.type == "cuda":
            # A copy from pageable memory blocks the host; from pinned memory it is queued like a kernel.
            order = order.pin_memory().to(self.train_inputs.device, non_blocking=True)
        else:
            order = order.to(self.train_inputs.device)
        return (order[k * batch_size:(k + 1) * batch_size] for k in range(count))

    def heldout_batches(self, batch_size: int) -> Iterator[slice]:
        """Every held-out sample exactly once, in order; the last partial batch is kept."""
        _check_batch_size(batch_size)
        return (slice(start, min(start + batch_size, self.n_heldout))
                for start in range(0, self.n_heldout, batch_size))

    def batch(self, split: str, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        """Raw (inputs, targets) on the run device: images uint8 + int64 labels; text int64 ids."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        inputs, labels = getattr(self, f"{split}_inputs"), getattr(self, f"{split}_labels")
        x, y = inputs[index], labels[index]
        if self.preset.modality == "text":
            x, y = x.long(), y.long()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def prepare_batch(self, x: Tensor, train: bool, generator: torch.Generator | None = None) -> Tensor:
        """Model input: images augmented (train) and normalised on the device; text unchanged."""
        return x if self.transform is None else self.transform(x, train, generator)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
