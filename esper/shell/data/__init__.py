"""Task data (docs/runtime.md §5): loaders, procedural generators, device-resident splits, augmentation.

`load_task(name, device=...)` returns a `TaskData` whose `source` record says exactly what was
loaded (`tensor_data` / `dataset_data`: one from a script's own tensors or Dataset, §5.8). Missing
data raises `DatasetNotFound` and unusable data `DataError` (both exit 2 in the CLI); nothing ever
falls back to other data silently.
"""

from esper.shell.data.augment import ImageTransform, crop_flip, draw_augment, normalise, prepare_batch
from esper.shell.data.errors import DataError, DatasetNotFound
from esper.shell.data.loading import load_task, subset_indices, windows
from esper.shell.data.source import DataSource, Normalisation, TokenizerInfo
from esper.shell.data.taskdata import TaskData
from esper.shell.data.tensors import dataset_data, tensor_data

__all__ = [
    "DataError",
    "DataSource",
    "DatasetNotFound",
    "ImageTransform",
    "Normalisation",
    "TaskData",
    "TokenizerInfo",
    "crop_flip",
    "dataset_data",
    "draw_augment",
    "load_task",
    "normalise",
    "prepare_batch",
    "subset_indices",
    "tensor_data",
    "windows",
]
