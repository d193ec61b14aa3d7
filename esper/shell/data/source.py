"""The data source record (docs/runtime.md §5.4), hashing, and the decoded-array cache.

The record travels in config.json, run.start, summary.json and checkpoints, so it is plain data
(`esper.core.codec.encode` / `decode`).
`fingerprint` identifies the raw source (files, HF dataset fingerprint, generator version and seed)
and keys the cache; `sha256` hashes the decoded arrays the run actually uses (after subsetting).
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs
import numpy as np
import torch

from esper.core import codec
from esper.shell.data.errors import DataError

SOURCE_KINDS = ("hf", "local", "debian", "procedural", "tensors")  # tensors: a script's own (data/tensors.py)
_HASH_CHUNK = 1 << 24  # bytes hashed per update, so memmaps are never read whole into memory


@attrs.frozen(kw_only=True)
class Normalisation:
    """Per-channel mean and std of pixel values in [0, 1] (a script's float tensors: of the values as given)."""

    mean: tuple[float, ...] = attrs.field(converter=lambda v: tuple(float(x) for x in v))
    std: tuple[float, ...] = attrs.field(converter=lambda v: tuple(float(x) for x in v))


@attrs.frozen(kw_only=True)
class TokenizerInfo:
    """Which tokenizer produced a text task's ids: kind gpt2 | bpe | bytes, its size, its JSON's sha256."""

    kind: str
    vocab: int
    sha256: str
    eos_id: int
    path: str | None = None  # where a trained BPE is cached; None for gpt2 / bytes


@attrs.frozen(kw_only=True)
class ImageRecord:
    """What `--task images` derived from the data (docs/runtime.md §5.5), so a resume, `evaluate`
    and a reader see the same task: classes, input size and channels and the rules that chose them,
    where the held-out split came from, images per class and split, the host's blocks."""

    classes: tuple[str, ...] = attrs.field(converter=tuple)
    input_shape: tuple[int, int, int] = attrs.field(converter=tuple)  # (C, H, W)
    size_rule: str
    channel_rule: str
    sizes: dict[str, int]  # the training images' sizes found, "H×W": count (the 8 most common)
    train_split: str
    heldout: str  # "split NAME", or "stratified 10 % of NAME, data seed S"
    counts: dict[str, tuple[int, ...]]  # "train" / "heldout" → images per class
    host_blocks: tuple[int, int] = attrs.field(converter=tuple)  # the CNN host's (n_blocks, pool_layers)


@attrs.frozen(kw_only=True)
class DataSource:
    """Where a run's data came from and what exactly it was."""

    preset: str
    kind: str = attrs.field(validator=attrs.validators.in_(SOURCE_KINDS))
    id_or_path: str
    fingerprint: str
    sha256: str
    n_train: int
    n_heldout: int
    subset: bool
    normalisation: Normalisation | None = None
    tokenizer: TokenizerInfo | None = None
    # --task images: what was derived from the data (absent from other tasks' records)
    images: ImageRecord | None = attrs.field(default=None, metadata={codec.OMIT_IF_DEFAULT: True})


def require_same_data(recorded: Mapping[str, object], source: DataSource, what: str) -> None:
    """A resumed or evaluated run reads the data it recorded: the same arrays (`sha256`), whatever path
    they came from. Changed data (an edited file, another tokenizer) is a `DataError` saying `what`."""
    if "sha256" in recorded and recorded["sha256"] != source.sha256:
        raise DataError(f"{what}: its data changed ({source.preset} from {source.id_or_path} hashes to "
                        f"{source.sha256[:12]}, the run recorded {str(recorded['sha256'])[:12]}); restore "
                        "the data it trained on, or start a new run")


# --- hashing ---------------------------------------------------------------------------------


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(array)


def arrays_sha256(arrays: Iterable[np.ndarray | torch.Tensor]) -> str:
    """sha256 over each array's dtype, shape and bytes, in order (so a reshape changes the hash)."""
    digest = hashlib.sha256()
    for array in arrays:
        flat = _as_numpy(array)
        digest.update(f"{flat.dtype.str}{flat.shape}".encode())
        view = flat.reshape(-1).view(np.uint8)
        for start in range(0, view.size, _HASH_CHUNK):
            digest.update(view[start:start + _HASH_CHUNK])
    return digest.hexdigest()


def files_sha256(paths: Iterable[Path]) -> str:
    """sha256 over the names and contents of raw source files (a local source's fingerprint)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def text_sha256(*parts: object) -> str:
    """sha256 of a canonical JSON of `parts` (procedural and HF fingerprints)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --- cache -----------------------------------------------------------------------------------


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/esper` (default `~/.cache/esper`), read at call time so tests can redirect it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "esper"


def load_cached_arrays(key: str, names: Iterable[str], *, mmap: bool = False) -> dict[str, np.ndarray] | None:
    """The arrays stored under `key`, or None when any is missing (a partial entry is never used)."""
    folder = cache_root() / "arrays" / key
    paths = {name: folder / f"{name}.npy" for name in names}
    if not all(path.is_file() for path in paths.values()):
        return None
    try:
        return {name: np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
                for name, path in paths.items()}
    except (OSError, ValueError):
        return None  # a damaged entry is rebuilt, not trusted


def store_cached_arrays(key: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
    """Write `arrays` under `key` atomically (a temporary folder renamed into place). A cache that
    cannot be written (read-only home, full disk) only costs speed, so errors return None."""
    folder = cache_root() / "arrays" / key
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    except OSError:
        return None
    return folder
