"""Where an image task's splits live (docs/runtime.md §5.7): on the device, or streamed.

    resident  ⇔  Σ nbytes(split) ≤ budget      (esper.shell.data.budget.data_path)

Resident splits are read whole once (an `ArraySource`'s arrays are used as they are) and moved to the
device; streamed ones keep only their labels and a zero-byte `meta` stand-in for the images, and
`StreamedSplits` reads each batch through DataLoader workers. Both give `TaskData` the same batches.
"""

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from esper.core.tasks import TaskPreset
from esper.shell.data.augment import ImageTransform
from esper.shell.data.budget import data_path
from esper.shell.data.image_source import ArraySource, ImageSource, nbytes
from esper.shell.data.source import DataSource
from esper.shell.data.streamed import IN_PROCESS, LoaderSettings, StreamedSplits, read_rows
from esper.shell.data.taskdata import TaskData


def image_task_data(preset: TaskPreset, source: DataSource, splits: Mapping[str, ImageSource], device: torch.device,
                    *, budget: int | None, loader: LoaderSettings = IN_PROCESS) -> TaskData:
    """An image task's `TaskData` on the path its size takes (docs/runtime.md §5.7): device-resident when
    the decoded splits ("train", "heldout") fit `budget` bytes (None: always), else streamed through
    DataLoader workers reading the sources. `source.normalisation` must be set."""
    normalisation = source.normalisation
    assert normalisation is not None, "an image task's source records its normalisation"
    transform = ImageTransform(padding=preset.augment_padding, hflip=preset.hflip, mean=normalisation.mean,
                               std=normalisation.std, device=device)
    if data_path(sum(nbytes(s) for s in splits.values()), budget) == "resident":
        (train_x, train_y), (heldout_x, heldout_y) = (_read_all(splits[s], device) for s in ("train", "heldout"))
        return TaskData(preset=preset, source=source, train_inputs=train_x,
                        train_labels=train_y, heldout_inputs=heldout_x, heldout_labels=heldout_y, device=device,
                        transform=transform)
    (train_x, train_y), (heldout_x, heldout_y) = (_placeholders(splits[s]) for s in ("train", "heldout"))
    return TaskData(preset=preset, source=source, train_inputs=train_x,
                    train_labels=train_y, heldout_inputs=heldout_x, heldout_labels=heldout_y, device=device,
                    transform=transform, streamed=StreamedSplits(splits, loader, device))


def _read_all(split: ImageSource, device: torch.device) -> tuple[Tensor, Tensor]:
    """A whole split on the device (an `ArraySource`'s arrays are used as they are, not gathered)."""
    if isinstance(split, ArraySource):
        x, y = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    else:
        x, y = read_rows(split, range(len(split.labels)))
    return x.to(device), y.long().to(device)


def _placeholders(split: ImageSource) -> tuple[Tensor, Tensor]:
    """A streamed split's inputs as a zero-byte `meta` tensor of their shape (reading it raises), and its labels."""
    labels = torch.from_numpy(np.require(split.labels, dtype=np.int64, requirements=["C", "W"]))
    return torch.empty((len(labels), *split.shape), dtype=torch.uint8, device="meta"), labels
