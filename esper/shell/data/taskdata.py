"""`TaskData`: a run's splits on its device, its data source record, and batching by index.

Images are uint8 NCHW with int64 labels (a script's tensors: float32 NCHW or (N, D), esper.shell.data.tensors);
text splits are (N, block) window views of a token stream (`inputs = stream[:-1]`, `labels = stream[1:]`,
stride = block, so no window is copied until a batch gathers it). Batches are index tensors into the split
(train: slices of a fresh permutation) or slices (held-out), so an epoch moves no data but the permutation.

Two paths, one semantics (docs/runtime.md §5.7): a resident task holds its splits on the device; a
streamed one (`streamed` set: image data over the data budget) holds only labels (CPU) and
zero-byte `meta` placeholders of its inputs' shape, and reads the same index batches through
DataLoader workers (esper.shell.data.streamed). `batch` and `batches` are the only readers of
inputs, and give the same (x, y) on both paths.
"""

import math
from collections.abc import Iterator, Sequence

import attrs
import torch
from torch import Tensor

from esper.core.tasks import TaskPreset
from esper.shell.data.augment import ImageTransform
from esper.shell.data.errors import DataError
from esper.shell.data.source import DataSource
from esper.shell.data.streamed import StreamedSplits

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
    streamed: StreamedSplits | None = None  # the streamed path's loaders; None: device-resident

    @property
    def path(self) -> str:
        """Which data path the task takes: "resident" or "streamed"."""
        return "resident" if self.streamed is None else "streamed"

    def path_line(self) -> str:
        """The one line a run prints at its start: which data path it took, and why."""
        if self.preset.modality == "text":
            return f"data: device-resident on {self.device} (text tasks always are)"
        # inputs (uint8 pixels; a script's float32 tensors) + an int64 label
        total = (self.n_train + self.n_heldout) * (math.prod(self.train_inputs.shape[1:])
                                                   * self.train_inputs.element_size() + 8)
        mib = f"{total / 2**20:.1f} MiB"
        if self.source.kind == "tensors":
            held = f"{total / 2**10:.1f} KiB" if total < 2**20 else mib  # a script's data is often small
            return f"data: device-resident on {self.device}: {held} of a script's tensors ({self.source.id_or_path})"
        size = f"{mib} decoded"
        if self.streamed is None:
            return f"data: device-resident on {self.device}: {size}, within the data budget (--data-budget)"
        workers = self.streamed.settings.workers
        return (f"data: streamed to {self.device} by a DataLoader ({workers} worker{'s' * (workers != 1)}): {size}, "
                "over the data budget (--data-budget)")

    @property
    def index_device(self) -> torch.device:
        """Where index batches live: the inputs' device (resident), the CPU (streamed: the loader's sampler)."""
        return self.train_inputs.device if self.streamed is None else torch.device("cpu")

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
        target = self.index_device
        if order.device != target and target.type == "cuda":
            # A copy from pageable memory blocks the host; from pinned memory it is queued like a kernel.
            order = order.pin_memory().to(target, non_blocking=True)
        else:
            order = order.to(target)
        return (order[k * batch_size:(k + 1) * batch_size] for k in range(count))

    def heldout_batches(self, batch_size: int) -> Iterator[slice]:
        """Every held-out sample exactly once, in order; the last partial batch is kept."""
        _check_batch_size(batch_size)
        return (slice(start, min(start + batch_size, self.n_heldout))
                for start in range(0, self.n_heldout, batch_size))

    def batch(self, split: str, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        """Raw (inputs, targets) on the run device: images uint8 + int64 labels; text int64 ids."""
        _check_split(split)
        if self.streamed is not None:
            return self.streamed.read(split, self._rows(split, index))
        inputs, labels = getattr(self, f"{split}_inputs"), getattr(self, f"{split}_labels")
        x, y = inputs[index], labels[index]
        if self.preset.modality == "text":
            x, y = x.long(), y.long()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def batches(self, split: str, indices: Sequence[Tensor | slice]) -> Iterator[tuple[Tensor, Tensor]]:
        """`batch(split, i)` for each index in order: gathered on demand (resident) or read ahead by
        the loader's workers (streamed: the whole list is its sampler, so pass one epoch's batches)."""
        _check_split(split)
        if self.streamed is None:
            return (self.batch(split, index) for index in indices)
        return self.streamed.batches(split, [self._rows(split, index) for index in indices])

    def _rows(self, split: str, index: Tensor | slice) -> list[int]:
        if isinstance(index, slice):
            return list(range(*index.indices(getattr(self, f"n_{split}"))))
        return index.tolist()

    def prepare_batch(self, x: Tensor, train: bool, generator: torch.Generator | None = None) -> Tensor:
        """Model input: images augmented (train) and normalised on the device; text unchanged."""
        return x if self.transform is None else self.transform(x, train, generator)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
