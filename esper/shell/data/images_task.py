"""`--task images`: a classification task derived from the user's images (docs/runtime.md §5.5).

    scan     every image's header (size, mode): unreadable files, mixed channel counts
    size     --image-size S → S×S; else the training images' size when all agree; else S = the
             median short side; an image of another size is fitted (short side → S, centre crop)
    split    the held-out split given, else per class ⌊0.1·n_c⌉ (at least 1, never all) of the train
             split, drawn from SeedSequence([data_seed, 7]) and recorded as "stratified"
    stats    per-channel mean/std of the (subset) training split at the task's size
    preset   esper.core.tasks.derive_image_preset: classes, (C, H, W), a CNN host whose blocks fit H×W

`plan_images` does all but the decode (what `esper-run tasks --data-dir` shows, and what the streamed
path reads per batch through the plan's `ImageSource`s); `load_images_task` reads both splits whole
(cached under ~/.cache/esper/arrays) and places them on the device, or, over the data budget, streams
them (§5.7).
"""

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from esper.core import codec
from esper.core.tasks import IMAGES_TASK, cnn_blocks, derive_image_preset
from esper.shell.data.budget import data_path
from esper.shell.data.errors import DataError
from esper.shell.data.hf_images import CHANNELS, HFImageSource, channel_stats, decode_all, open_header, task_mode
from esper.shell.data.image_folder import FoundImages, ImageOptions, find_images
from esper.shell.data.image_source import ArraySource, ImageSource, nbytes
from esper.shell.data.placement import image_task_data
from esper.shell.data.source import (
    DataSource,
    ImageRecord,
    Normalisation,
    arrays_sha256,
    load_cached_arrays,
    store_cached_arrays,
    text_sha256,
)
from esper.shell.data.streamed import IN_PROCESS, LoaderSettings
from esper.shell.data.subset import subset_indices
from esper.shell.data.taskdata import TaskData

HELDOUT_FRACTION = 0.1
_HELDOUT_STREAM = 7  # SeedSequence([data_seed, 7]) draws the stratified held-out split
_DECODER = "images/v1"  # bump when decoding changes: it keys the cached arrays


@attrs.frozen(kw_only=True, eq=False)
class Scan:
    """Per image of a split: height, width, task mode; and a digest of the files behind them."""

    heights: np.ndarray
    widths: np.ndarray
    modes: list[str]
    names: list[str]
    files: str  # sha256 over (path, size, mtime) of the files read from disk ("" for embedded bytes)


@attrs.frozen(kw_only=True, eq=False)
class ImagePlan:
    """Everything `--task images` derives before decoding: the split sources and the record."""

    train: HFImageSource
    heldout: HFImageSource
    record: ImageRecord
    kind: str
    id_or_path: str
    fingerprint: str
    rows: str  # sha256 of the rows each split uses (subsets and the stratified split change it)
    subset: bool


def scan(dataset: Any, column: str, where: str) -> Scan:
    """Open every image's header (no decode): its size and mode; an unreadable file raises."""
    heights, widths, modes, names, stats = [], [], [], [], []
    row = 0
    for batch in dataset.select_columns([column]).iter(batch_size=1024):
        for value in batch[column]:
            with open_header(value, where, row) as image:
                heights.append(image.height)
                widths.append(image.width)
                modes.append(task_mode(image.mode))
            path = value.get("path") if value.get("bytes") is None else None
            names.append(str(path or f"{where} row {row}"))
            if path:
                info = Path(path).stat()
                stats.append((path, info.st_size, info.st_mtime_ns))
            row += 1
    return Scan(heights=np.asarray(heights, dtype=np.int64), widths=np.asarray(widths, dtype=np.int64),
                modes=modes, names=names, files=text_sha256(stats) if stats else "")


def input_size(train: Scan, image_size: int | None) -> tuple[tuple[int, int], str]:
    """(H, W) of the task and the rule that chose it."""
    if image_size is not None:
        return (image_size, image_size), f"--image-size {image_size}: short side to {image_size}, centre crop"
    sizes = set(zip(train.heights.tolist(), train.widths.tolist(), strict=True))
    if len(sizes) == 1:
        height, width = sizes.pop()
        return (height, width), f"as found: every training image is {height}×{width}"
    side = int(np.median(np.minimum(train.heights, train.widths)))
    return (side, side), (f"median short side {side} of training images of {len(sizes)} sizes: short side "
                          f"to {side}, centre crop")


def channel_mode(scans: list[Scan], channels: int | None) -> tuple[str, str]:
    """(PIL mode every image is converted to, the rule): --channels, else the one mode all images
    share; mixed channel counts without --channels raise, naming a file of each kind."""
    if channels is not None:
        mode = "L" if channels == 1 else "RGB"
        return mode, f"--channels {channels}: every image converted to {mode}"
    found: dict[str, tuple[int, str]] = {}
    for s in scans:
        for mode, name in zip(s.modes, s.names, strict=True):
            count, first = found.get(mode, (0, name))
            found[mode] = (count + 1, first)
    if len(found) == 1:
        mode = next(iter(found))
        return mode, f"as found: every image is {mode} ({CHANNELS[mode]} channel{'s' * (CHANNELS[mode] > 1)})"
    kinds = ", ".join(f"{count} {mode} ({CHANNELS[mode]} ch., e.g. {first})"
                      for mode, (count, first) in sorted(found.items(), key=lambda kv: -kv[1][0]))
    raise DataError(f"mixed channel counts: {kinds}; pass --channels 1 or 3 to convert every image")


def stratified_heldout(labels: np.ndarray, n_classes: int, data_seed: int) -> np.ndarray:
    """Sorted rows held out: per class round(0.1·n_c) of its rows, at least 1 and never all of them."""
    rng = np.random.default_rng(np.random.SeedSequence([data_seed, _HELDOUT_STREAM]))
    chosen = []
    for k in range(n_classes):
        rows = np.flatnonzero(labels == k)
        take = min(max(1, round(HELDOUT_FRACTION * len(rows))), len(rows) - 1)
        chosen.append(rng.permutation(rows)[:take])
    return np.sort(np.concatenate(chosen))


def _split_rows(found: FoundImages, data_seed: int) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(train rows, held-out rows of the train split or None, how the held-out split came about)."""
    n = len(found.train_labels)
    if found.heldout is not None:
        return np.arange(n), None, f"split {found.heldout_split}"
    heldout = stratified_heldout(found.train_labels, len(found.classes), data_seed)
    if len(heldout) == 0:
        raise DataError(f"{found.id_or_path}: too few images to hold any out (one per class at most)")
    train = np.setdiff1d(np.arange(n), heldout)
    return train, heldout, (f"stratified {HELDOUT_FRACTION:.0%} of {found.train_split} "
                            f"(data seed {data_seed}): no held-out split given")


def _subset(rows: np.ndarray, wanted: int | None, data_seed: int, split: int, flag: str) -> np.ndarray:
    index = subset_indices(len(rows), wanted, data_seed, split, flag)
    return rows if index is None else rows[index.numpy()]


def _source(dataset: Any, rows: np.ndarray, labels: np.ndarray, found: FoundImages, shape: tuple[int, int, int],
            mode: str, split: str) -> HFImageSource:
    return HFImageSource(dataset.select(rows), found.image_column, labels[rows], shape, mode,
                         f"{found.id_or_path} {split}")


def plan_images(options: ImageOptions, *, data_seed: int, train_size: int | None = None,
                val_size: int | None = None) -> ImagePlan:
    """Open, scan and check the data, derive the task's size, channels and held-out split."""
    found = find_images(options)
    where = found.id_or_path
    scans = [scan(found.train, found.image_column, f"{where} {found.train_split}")]
    if found.heldout is not None:
        scans.append(scan(found.heldout, found.image_column, f"{where} {found.heldout_split}"))
    (height, width), size_rule = input_size(scans[0], options.image_size)
    mode, channel_rule = channel_mode(scans, options.channels)
    shape = (CHANNELS[mode], height, width)
    train_rows, heldout_rows, heldout_rule = _split_rows(found, data_seed)
    train_rows = _subset(train_rows, train_size, data_seed, 0, "--train-size")
    heldout_set, heldout_labels = ((found.heldout, found.heldout_labels) if heldout_rows is None
                                   else (found.train, found.train_labels))
    assert heldout_labels is not None
    all_heldout = np.arange(len(heldout_labels)) if heldout_rows is None else heldout_rows
    heldout_rows_used = _subset(all_heldout, val_size, data_seed, 1, "--val-size")
    train = _source(found.train, train_rows, found.train_labels, found, shape, mode, found.train_split)
    heldout = _source(heldout_set, heldout_rows_used, heldout_labels, found, shape, mode,
                      found.heldout_split or f"{found.train_split} (held out)")
    sizes = Counter(f"{h}×{w}" for h, w in zip(scans[0].heights.tolist(), scans[0].widths.tolist(), strict=True))
    n_classes = len(found.classes)
    record = ImageRecord(
        classes=found.classes, input_shape=shape, size_rule=size_rule, channel_rule=channel_rule,
        sizes=dict(sizes.most_common(8)), train_split=found.train_split, heldout=heldout_rule,
        counts={"train": tuple(np.bincount(train.labels, minlength=n_classes).tolist()),
                "heldout": tuple(np.bincount(heldout.labels, minlength=n_classes).tolist())},
        host_blocks=cnn_blocks(height, width))
    fingerprint = text_sha256(_DECODER, found.kind, found.id_or_path, found.train._fingerprint,
                              getattr(found.heldout, "_fingerprint", None), [s.files for s in scans])
    return ImagePlan(train=train, heldout=heldout, record=record, kind=found.kind, id_or_path=found.id_or_path,
                     fingerprint=fingerprint, rows=arrays_sha256([train_rows, heldout_rows_used]),
                     subset=train_size is not None or val_size is not None)


def decoded(plan: ImagePlan) -> tuple[ArraySource, ArraySource]:
    """Both splits decoded whole, cached under the plan's fingerprint, rows, size and mode."""
    key = "images-" + text_sha256(plan.fingerprint, plan.record.input_shape, plan.train.mode, plan.rows,
                                  plan.record.heldout)[:32]
    names = ("train_x", "train_y", "heldout_x", "heldout_y")
    arrays = load_cached_arrays(key, names)
    if arrays is None:
        arrays = {"train_x": decode_all(plan.train), "train_y": plan.train.labels,
                  "heldout_x": decode_all(plan.heldout), "heldout_y": plan.heldout.labels}
        store_cached_arrays(key, arrays)
    return (ArraySource(arrays["train_x"], arrays["train_y"]), ArraySource(arrays["heldout_x"], arrays["heldout_y"]))


def images_source(plan: ImagePlan, sha256: str, normalisation: Normalisation) -> DataSource:
    return DataSource(preset=IMAGES_TASK, kind=plan.kind, id_or_path=plan.id_or_path, fingerprint=plan.fingerprint,
                      sha256=sha256, n_train=len(plan.train.labels), n_heldout=len(plan.heldout.labels),
                      subset=plan.subset, normalisation=normalisation, images=plan.record)


def load_images_task(options: ImageOptions, *, device: torch.device, data_seed: int,
                     train_size: int | None = None, val_size: int | None = None, budget: int | None = None,
                     loader: LoaderSettings = IN_PROCESS) -> TaskData:
    """The images task on the path its decoded size takes under `budget` (None: resident): resident splits
    are decoded whole (and cached); streamed ones are read per batch by `loader`'s workers from the plan's
    sources, after one pass over them for the hash and the channel statistics (nothing is kept)."""
    plan = plan_images(options, data_seed=data_seed, train_size=train_size, val_size=val_size)
    if data_path(nbytes(plan.train) + nbytes(plan.heldout), budget) == "resident":
        train, heldout = decoded(plan)
        sha256 = arrays_sha256([train.images, train.labels, heldout.images, heldout.labels])
    else:
        train, heldout = plan.train, plan.heldout
        sha256 = sources_sha256([train, heldout])
    mean, std = channel_stats(train)
    preset = derive_image_preset(input_shape=plan.record.input_shape, n_classes=len(plan.record.classes),
                                 train_size=len(train.labels), heldout_size=len(heldout.labels), mean=mean, std=std)
    source = images_source(plan, sha256, Normalisation(mean=mean, std=std))
    return image_task_data(preset, source, {"train": train, "heldout": heldout}, device, budget=budget, loader=loader)


def sources_sha256(splits: list[ImageSource], rows: int = 1024) -> str:
    """`arrays_sha256([x_0, y_0, x_1, y_1, …])` of the splits' decoded images and labels, read `rows` at a
    time: the same digest as the resident path's, without holding a split in memory."""
    digest = hashlib.sha256()
    for split in splits:
        n = len(split.labels)
        digest.update(f"{np.dtype(np.uint8).str}{(n, *split.shape)}".encode())
        for start in range(0, n, rows):
            images = np.ascontiguousarray(split.read(range(start, min(n, start + rows))))
            digest.update(images.reshape(-1).view(np.uint8))
        labels = np.ascontiguousarray(split.labels)
        digest.update(f"{labels.dtype.str}{labels.shape}".encode())
        digest.update(labels.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def check_unchanged(recorded: dict[str, Any], source: DataSource) -> None:
    """A resume or `evaluate` of an images run must see the data it started on: the same decoded
    arrays and the same derived task (its folder may have moved). Raises `DataError` otherwise."""
    if source.images is None:
        return
    now = codec.encode(source)
    changed = [key for key in ("sha256", "n_train", "n_heldout", "normalisation", "images")
               if recorded.get(key) != now[key]]
    if changed:
        raise DataError(f"the data at {source.id_or_path} changed since the run started ({', '.join(changed)} "
                        "differ from its config.json); point --data-dir at the run's data or start a new run")

