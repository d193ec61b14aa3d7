"""`ImageSource`: one split of decoded images, read by index, whatever holds them.

The two data paths (docs/runtime.md §5) read the same sources: the device-resident path reads a
whole split once (`read(range(n))`) and places it on the device; the streamed path reads each
batch's indices in DataLoader workers. So a source only has to say how many images it holds, their
labels (cheap: no image is decoded for them) and how to decode a list of them:

    read([i_0, …, i_{k−1}])  →  uint8 (k, C, H, W), row j = image i_j, already at the task's size

Labels are int64 in [0, n_classes). A source must be picklable (DataLoader workers get a copy).
"""

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs
import numpy as np


@runtime_checkable
class ImageSource(Protocol):
    """One split: `len(labels)` images of `shape` (C, H, W), decoded on `read`."""

    @property
    def labels(self) -> np.ndarray: ...  # int64 (n,)

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def read(self, indices: Sequence[int]) -> np.ndarray: ...  # uint8 (k, C, H, W)


@attrs.frozen(eq=False)
class ArraySource:
    """A split already decoded into memory (the presets, a cached decode): `read` is a gather."""

    images: np.ndarray  # uint8 (n, C, H, W)
    labels: np.ndarray  # int64 (n,)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]


def nbytes(source: ImageSource) -> int:
    """Bytes the split takes decoded (uint8 images plus int64 labels): what residency costs."""
    c, h, w = source.shape
    return len(source.labels) * (c * h * w + 8)
