"""CIFAR-10 (docs/runtime.md §5.2): `--data-dir` (binary, python-pickle or `save_to_disk` layouts), then
HF `uoft-cs/cifar10` (cache, or the hub when online). Missing data is an error, never noise.

The python layout is a pickle; it is read with `RestrictedUnpickler`, which resolves only the
few NumPy callables an array needs, so a hostile file cannot run code.
"""

import codecs
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from esper.shell.data import hf
from esper.shell.data.errors import DataError, DatasetNotFound
from esper.shell.data.raw import RawImages, checked, from_hf
from esper.shell.data.source import files_sha256

HF_REPO = "uoft-cs/cifar10"
SHAPE = (3, 32, 32)
RECORD = 1 + 3 * 32 * 32  # binary layout: label byte then 3,072 pixel bytes (R, G, B planes)
TRAIN_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_BATCH = "test_batch"
BIN_DIR, PY_DIR = "cifar-10-batches-bin", "cifar-10-batches-py"
SAVED_DIRS = ("", "cifar10", "cifar-10")  # a save_to_disk folder at --data-dir or one of these below
ONLINE_CALL = f"python -c 'import datasets; datasets.load_dataset(\"{HF_REPO}\")'"


class RestrictedUnpickler(pickle.Unpickler):
    """Admits dicts, lists, tuples, bytes, str, ints, floats and NumPy arrays: the only globals
    resolved are NumPy's two array constructors, `ndarray`, `dtype` and `_codecs.encode` (how
    protocol 2 stores bytes). Any other global (os.system, builtins.eval, …) raises before anything
    runs; the pickle's other opcodes build only plain containers."""

    # The pickling methods of a live array name NumPy's constructors; taking them from there
    # avoids importing numpy.core (deprecated in NumPy 2) or numpy._core (private).
    _RECONSTRUCT = np.zeros(1).__reduce__()[0]  # protocols ≤ 4
    _FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5
    ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def restricted_load(path: Path) -> Any:
    """Unpickle `path` with `RestrictedUnpickler`; py2 CIFAR pickles need `encoding="bytes"`."""
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc


def _py_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict, got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or not isinstance(labels, list | np.ndarray):
        raise DataError(f"{path}: missing 'data' array or 'labels' list")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD - 1 or len(labels) != len(data):
        raise DataError(f"{path}: data {data.dtype} {data.shape} with {len(labels)} labels; "
                        f"expected uint8 (N, {RECORD - 1}) and N labels")
    return data.reshape(-1, *SHAPE), np.asarray(labels, dtype=np.int64)


def _bin_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0 or data.size % RECORD:
        raise DataError(f"{path}: {data.size} bytes is not a whole number of {RECORD}-byte records")
    records = data.reshape(-1, RECORD)
    return records[:, 1:].reshape(-1, *SHAPE), records[:, 0].astype(np.int64)


def _load_batches(folder: Path, suffix: str, reader: Any, kind: str) -> RawImages:
    train_paths = [folder / f"{name}{suffix}" for name in TRAIN_BATCHES]
    test_path = folder / f"{TEST_BATCH}{suffix}"
    train = [reader(path) for path in train_paths]
    test_x, test_y = reader(test_path)
    raw = RawImages(train_x=np.concatenate([x for x, _ in train]),
                    train_y=np.concatenate([y for _, y in train]), heldout_x=test_x, heldout_y=test_y,
                    kind=kind, id_or_path=str(folder),
                    fingerprint=files_sha256([*train_paths, test_path]))
    return checked(raw, SHAPE, 10, str(folder))


def _has_batches(folder: Path, suffix: str) -> bool:
    return all((folder / f"{name}{suffix}").is_file() for name in (*TRAIN_BATCHES, TEST_BATCH))


def load_local(data_dir: Path) -> RawImages | None:
    """The first CIFAR-10 layout under `data_dir`, or None when it holds none."""
    for base in (data_dir, data_dir.parent):  # --data-dir may name the layout folder itself
        if _has_batches(base / BIN_DIR, ".bin"):
            return _load_batches(base / BIN_DIR, ".bin", _bin_batch, "local")
        if _has_batches(base / PY_DIR, ""):
            return _load_batches(base / PY_DIR, "", _py_batch, "local")
    for sub in SAVED_DIRS:
        folder = data_dir / sub if sub else data_dir
        if hf.is_saved_dataset(folder):
            raw = from_hf(hf.load_saved(folder), where=str(folder), kind="local", id_or_path=str(folder),
                          image_columns=("img", "image"))
            return checked(raw, SHAPE, 10, str(folder))
    return None


def load_cifar10(data_dir: Path | None) -> RawImages:
    if data_dir is not None and (raw := load_local(data_dir)) is not None:
        return raw
    try:
        dataset_dict, where = hf.load_hub_cached_then_online(HF_REPO)
    except hf.HubUnavailable as exc:
        raise DatasetNotFound(_not_found(data_dir, str(exc))) from None
    raw = from_hf(dataset_dict, where=where, kind="hf", id_or_path=HF_REPO, image_columns=("img", "image"))
    return checked(raw, SHAPE, 10, where)


def _not_found(data_dir: Path | None, cause: str) -> str:
    looked = (f"--data-dir {data_dir} ({BIN_DIR}/, {PY_DIR}/ or a save_to_disk folder)"
              if data_dir is not None else "--data-dir (not given)")
    where = "the HF cache" if hf.offline_requested() else "the HF cache or hub"
    return (f"cifar10 not found in {looked} or {where} ({HF_REPO}: {cause}); run {ONLINE_CALL} "
            f"once online, or pass --data-dir, or use the offline tasks --task synth-images / synth-stories")
