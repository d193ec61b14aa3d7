"""The streamed data path (docs/runtime.md §5.7): image splits read batch by batch by DataLoader
workers from an `ImageSource`, for data larger than the data budget (esper.shell.data.budget).

One semantics with the device-resident path: the main process draws every index batch exactly as
the resident path does (TaskData.train_batches: `randperm(N, generator=data)` sliced into full
batches; held-out slices in order) and hands the list to the loader as its sampler, so

    streamed batch k  =  source.read(rows_k)  =  resident batch k   (row for row, byte for byte)

The loader never shuffles and its workers draw no random numbers; augmentation runs on the device
after the transfer (TaskData.prepare_batch with the run's generator). The loader's own seed draw
(`_base_seed`, per iterator) comes from a private generator, never torch's global one, so the
streamed path leaves every generator a checkpoint saves exactly where the resident path does, and
a resume is exact. Workers are persistent (started on a split's first pass, kept across epochs),
prefetch `prefetch` batches each, and pin their batches on CUDA so the copy is queued, not synced.
"""

import os
import sys
from collections.abc import Iterator, Mapping, Sequence

import attrs
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from esper.shell.data.image_source import ImageSource


@attrs.frozen
class LoaderSettings:
    """How a split is streamed: worker processes (0: read in the main process) and batches each prefetches."""

    workers: int = 0
    prefetch: int = 2

    @classmethod
    def auto(cls, workers: int | None) -> "LoaderSettings":
        """`workers` (--data-workers), or half the CPUs, at most 4: the rest train (CPU) or feed the GPU."""
        return cls(workers=workers if workers is not None else min(4, (os.cpu_count() or 2) // 2))


IN_PROCESS = LoaderSettings()  # no worker processes (library callers, tests)


class _EpochBatches(Sampler[list[int]]):
    """The index batches of the current pass, set before it starts: one sampler for the loader's
    lifetime (persistent workers keep the loader), iterated in the main process only."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Rows(Dataset[tuple[Tensor, Tensor]]):
    """`dataset[rows]` = one whole batch (uint8 images, int64 labels), decoded by the source."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __getitem__(self, rows: list[int]) -> tuple[Tensor, Tensor]:
        return read_rows(self.source, rows)

    def __len__(self) -> int:
        return len(self.source.labels)


def worker_start() -> str | None:
    """How workers start: fork (the default: the sources are shared copy-on-write, no pickling), except
    once JAX is loaded (esper.core.xp's interop): its threads do not survive a fork, so then forkserver,
    which starts workers from a clean process and pickles them the sources."""
    return "forkserver" if "jax" in sys.modules else None


def read_rows(source: ImageSource, rows: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The rows' images and labels as CPU tensors that own their memory."""
    images = np.require(source.read(rows), dtype=np.uint8, requirements=["C", "W"])
    labels = np.asarray(source.labels)[np.asarray(rows, dtype=np.int64)].astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


class StreamedSplits:
    """The splits of one run's streamed task, and a lazily built loader per split."""

    def __init__(self, sources: Mapping[str, ImageSource], settings: LoaderSettings, device: torch.device) -> None:
        self.sources = dict(sources)
        self.settings = settings
        self.device = device
        self._loaders: dict[str, tuple[DataLoader, _EpochBatches]] = {}

    def read(self, split: str, rows: Sequence[int]) -> tuple[Tensor, Tensor]:
        """One batch read in the main process (diagnostics, FLOP counts), on the device."""
        x, y = read_rows(self.sources[split], rows)
        return x.to(self.device), y.to(self.device)

    def batches(self, split: str, rows: Sequence[Sequence[int]]) -> Iterator[tuple[Tensor, Tensor]]:
        """(inputs, labels) on the device for each list of rows, in order, read ahead by the workers."""
        loader, sampler = self._loader(split)
        sampler.batches = [list(r) for r in rows]
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _loader(self, split: str) -> tuple[DataLoader, _EpochBatches]:
        if split not in self._loaders:
            sampler, workers = _EpochBatches(), self.settings.workers
            loader = DataLoader(
                _Rows(self.sources[split]), sampler=sampler, batch_size=None, num_workers=workers,
                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=self.settings.prefetch if workers > 0 else None,
                multiprocessing_context=worker_start() if workers > 0 else None,
                generator=torch.Generator().manual_seed(0))
            self._loaders[split] = loader, sampler
        return self._loaders[split]

    def close(self) -> None:
        """Stops the workers now (they also stop when the loaders are garbage-collected)."""
        for loader, _sampler in self._loaders.values():
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        self._loaders.clear()
