"""Decoded image splits as NumPy arrays, before subsetting and device placement, and the checks
every image source passes (shape, dtype, counts, label range) whatever layout it came from."""

from typing import Any

import attrs
import numpy as np

from esper.shell.data import hf
from esper.shell.data.errors import DataError
from esper.shell.data.source import load_cached_arrays, store_cached_arrays

ARRAY_NAMES = ("train_x", "train_y", "heldout_x", "heldout_y")


@attrs.frozen(kw_only=True, eq=False)
class RawImages:
    """uint8 (N, C, H, W) images and int64 (N,) labels per split, and where they came from."""

    train_x: np.ndarray
    train_y: np.ndarray
    heldout_x: np.ndarray
    heldout_y: np.ndarray
    kind: str  # hf | local | debian | procedural
    id_or_path: str
    fingerprint: str

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAY_NAMES}


def checked(raw: RawImages, shape: tuple[int, int, int], n_classes: int, where: str) -> RawImages:
    """`raw` if every split has images of `shape` and labels in [0, n_classes); else `DataError`."""
    for split in ("train", "heldout"):
        x, y = getattr(raw, f"{split}_x"), getattr(raw, f"{split}_y")
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise DataError(f"{where}: {split} images are {x.dtype} {tuple(x.shape)}, expected uint8 "
                            f"(N, {', '.join(map(str, shape))})")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where}: {len(x)} {split} images but {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise DataError(f"{where}: {split} labels outside 0…{n_classes - 1}")
        if len(x) == 0:
            raise DataError(f"{where}: the {split} split is empty")
    return raw


def from_hf(dataset_dict: Any, *, where: str, kind: str, id_or_path: str,
            image_columns: tuple[str, ...]) -> RawImages:
    """Images of an HF DatasetDict (train and test splits). Decoding PIL images is the slow part,
    so the arrays are cached under the source's fingerprint."""
    train = hf.split_of(dataset_dict, ("train",), where)
    test = hf.split_of(dataset_dict, ("test", "validation"), where)
    fingerprint = hf.dataset_fingerprint(id_or_path, train, test)
    key = f"hf-{fingerprint[:32]}"
    arrays = load_cached_arrays(key, ARRAY_NAMES)
    if arrays is None:
        column = hf.column_name(train, image_columns, where)
        arrays = {"train_x": hf.images_nchw(train, column), "train_y": hf.labels_int64(train),
                  "heldout_x": hf.images_nchw(test, column), "heldout_y": hf.labels_int64(test)}
        store_cached_arrays(key, arrays)
    return RawImages(**arrays, kind=kind, id_or_path=id_or_path, fingerprint=fingerprint)
