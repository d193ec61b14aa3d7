"""Hugging Face `datasets` access: cache-only loads, `save_to_disk` folders, arrays out of columns.

`datasets` is imported lazily: it is slow to import and only these code paths need it. Offline
mode is read by `datasets` and `huggingface_hub` at import time, so a cache-only load flips
their module flags for the duration of the call instead of relying on the environment.
"""

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from esper.shell.data.errors import DataError
from esper.shell.data.source import text_sha256

_TRUE = {"1", "ON", "YES", "TRUE"}
_BATCH = 4096


class HubUnavailable(Exception):
    """`load_dataset` failed: not cached (cache-only), or no network; `str()` is the cause."""


def offline_requested() -> bool:
    """True when the environment asks for no network (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE,
    TRANSFORMERS_OFFLINE), read at call time."""
    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(name, "").upper() in _TRUE for name in names)


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """No HTTP from `datasets` / `huggingface_hub` inside the block: only the local cache is read."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def load_hub(repo: str, *, cache_only: bool) -> Any:
    """`datasets.load_dataset(repo)` (a DatasetDict). `cache_only` never touches the network.
    Any failure becomes `HubUnavailable`: the caller decides what "not found" means."""
    import datasets

    try:
        with hub_offline() if cache_only else contextlib.nullcontext():
            return datasets.load_dataset(repo)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, …)
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HubUnavailable(cause) from exc


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Inside the block `offline_requested()` holds: loaders read local files and the HF cache only
    (`esper-run tasks` reports what is here; it must not start a download)."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def hub_host() -> str:
    import huggingface_hub.constants as hub_constants

    return urlparse(hub_constants.ENDPOINT).hostname or hub_constants.ENDPOINT


def hub_resolves(host: str) -> bool:
    """Whether DNS knows `host`. Without it the hub client retries for about 25 s (logging each
    try) before it fails; a machine with no network fails here at once."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def quiet_hub_logs() -> Iterator[None]:
    """The hub client's retry warnings off stderr: the user gets one error line that holds the cause."""
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "datasets")]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)


def load_hub_cached_then_online(repo: str) -> tuple[Any, str]:
    """The cache first (no network); then the hub unless offline mode is requested or the hub's
    host does not resolve. Returns the DatasetDict and a description of where it came from."""
    try:
        return load_hub(repo, cache_only=True), f"HF cache ({repo})"
    except HubUnavailable as cached_error:
        if offline_requested():
            raise
        host = hub_host()
        if not hub_resolves(host):
            raise HubUnavailable(f"{cached_error}; online: cannot resolve {host} (no network?)") from None
        try:
            with quiet_hub_logs():
                return load_hub(repo, cache_only=False), f"HF hub ({repo})"
        except HubUnavailable as online_error:
            raise HubUnavailable(f"{cached_error}; online: {online_error}") from online_error


def is_saved_dataset(folder: Path) -> bool:
    """A `DatasetDict.save_to_disk` folder (or a single `Dataset` one)."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def load_saved(folder: Path) -> Any:
    import datasets

    return datasets.load_from_disk(str(folder))


def split_of(dataset_dict: Any, names: tuple[str, ...], where: str) -> Any:
    """The first split of `names` present; `DataError` naming the splits there otherwise."""
    for name in names:
        if name in dataset_dict:
            return dataset_dict[name]
    raise DataError(f"{where} has splits {sorted(dataset_dict)}; expected one of {list(names)}")


def dataset_fingerprint(repo_or_path: str, *splits: Any) -> str:
    """Identity of an HF source: its name and the library's fingerprint of each split."""
    return text_sha256(repo_or_path, [getattr(s, "_fingerprint", None) for s in splits])


def column_name(dataset: Any, candidates: tuple[str, ...], where: str) -> str:
    for name in candidates:
        if name in dataset.column_names:
            return name
    raise DataError(f"{where} has columns {dataset.column_names}; expected one of {list(candidates)}")


def images_nchw(dataset: Any, column: str) -> np.ndarray:
    """Decode an image column into uint8 (N, C, H, W) in batches (PIL images or arrays alike)."""
    parts = []
    for batch in dataset.with_format("numpy").iter(batch_size=_BATCH):
        array = np.asarray(batch[column])
        if array.dtype == object:  # ragged decode: stack image by image
            array = np.stack([np.asarray(item) for item in array])
        parts.append(array.astype(np.uint8, copy=False))
    images = np.concatenate(parts) if parts else np.zeros((0, 0, 0), np.uint8)
    return images[:, None] if images.ndim == 3 else np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def labels_int64(dataset: Any, column: str = "label") -> np.ndarray:
    return np.asarray(dataset.with_format("numpy")[column], dtype=np.int64)


def texts(dataset: Any, column: str = "text") -> Iterator[str]:
    """Each row's text, streamed in batches so a large split is never one Python list."""
    for batch in dataset.iter(batch_size=_BATCH):
        yield from batch[column]
