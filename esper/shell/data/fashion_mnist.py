"""Fashion-MNIST (docs/runtime.md §5.2): `--data-dir`, then the Debian package's folder, then the HF
cache only (never downloaded). The IDX files are checked (magic 2051/2049, counts, 28×28).
"""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from esper.shell.data import hf
from esper.shell.data.errors import DataError, DatasetNotFound
from esper.shell.data.raw import RawImages, checked, from_hf
from esper.shell.data.source import files_sha256

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
HF_REPO = "zalando-datasets/fashion_mnist"
FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "heldout_x": "t10k-images-idx3-ubyte.gz",
    "heldout_y": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
SIDE = 28
FIX = "run 'apt-get install dataset-fashion-mnist' or pass --data-dir"


def read_idx_images(path: Path) -> np.ndarray:
    """uint8 (N, 28, 28) from a gzipped IDX3 file."""
    data = _gunzip(path)
    if len(data) < 16:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX image header")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGE_MAGIC:
        raise DataError(f"{path}: magic {magic}, expected {IMAGE_MAGIC} (IDX images)")
    if (rows, cols) != (SIDE, SIDE):
        raise DataError(f"{path}: images are {rows}×{cols}, expected {SIDE}×{SIDE}")
    if len(data) - 16 != count * rows * cols:
        raise DataError(f"{path}: header says {count} images but the file holds {len(data) - 16} "
                        f"bytes of pixels, not {count * rows * cols}")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """int64 (N,) from a gzipped IDX1 file."""
    data = _gunzip(path)
    if len(data) < 8:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX label header")
    magic, count = struct.unpack(">II", data[:8])
    if magic != LABEL_MAGIC:
        raise DataError(f"{path}: magic {magic}, expected {LABEL_MAGIC} (IDX labels)")
    if len(data) - 8 != count:
        raise DataError(f"{path}: header says {count} labels but the file holds {len(data) - 8}")
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def _gunzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from exc


def idx_folder(folder: Path) -> Path | None:
    """`folder` or `folder/fashion-mnist` when it holds all four IDX files."""
    for candidate in (folder, folder / "fashion-mnist"):
        if all((candidate / name).is_file() for name in FILES.values()):
            return candidate
    return None


def load_idx_folder(folder: Path, kind: str) -> RawImages:
    paths = {name: folder / filename for name, filename in FILES.items()}
    arrays = {
        "train_x": read_idx_images(paths["train_x"])[:, None],
        "train_y": read_idx_labels(paths["train_y"]),
        "heldout_x": read_idx_images(paths["heldout_x"])[:, None],
        "heldout_y": read_idx_labels(paths["heldout_y"]),
    }
    raw = RawImages(**arrays, kind=kind, id_or_path=str(folder), fingerprint=files_sha256(paths.values()))
    return checked(raw, (1, SIDE, SIDE), 10, str(folder))


def load_fashion_mnist(data_dir: Path | None) -> RawImages:
    """The first source found, in lookup order; `DatasetNotFound` naming every place otherwise.
    A source that is found but broken raises `DataError` rather than falling through."""
    if data_dir is not None and (folder := idx_folder(data_dir)) is not None:
        return load_idx_folder(folder, "local")
    if data_dir is not None and hf.is_saved_dataset(data_dir):
        return _from_saved(data_dir)
    if (folder := idx_folder(DEBIAN_DIR)) is not None:
        return load_idx_folder(folder, "debian")
    try:
        dataset_dict = hf.load_hub(HF_REPO, cache_only=True)
    except hf.HubUnavailable:
        raise DatasetNotFound(_not_found(data_dir)) from None
    raw = from_hf(dataset_dict, where=f"HF cache ({HF_REPO})", kind="hf", id_or_path=HF_REPO,
                  image_columns=("image", "img"))
    return checked(raw, (1, SIDE, SIDE), 10, HF_REPO)


def _from_saved(folder: Path) -> RawImages:
    raw = from_hf(hf.load_saved(folder), where=str(folder), kind="local", id_or_path=str(folder),
                  image_columns=("image", "img"))
    return checked(raw, (1, SIDE, SIDE), 10, str(folder))


def _not_found(data_dir: Path | None) -> str:
    given = f"--data-dir {data_dir}" if data_dir is not None else "--data-dir (not given)"
    return f"fashion-mnist not found in {given}, {DEBIAN_DIR} or the HF cache ({HF_REPO}); {FIX}"
