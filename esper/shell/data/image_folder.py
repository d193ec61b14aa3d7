"""Opening the user's images for `--task images` (docs/runtime.md §5.5): which dataset, which splits,
which columns, which classes. No pixel is decoded here.

    --data-dir DIR     a `save_to_disk` folder, else a folder of class subfolders loaded by the
                       `datasets` `imagefolder` builder: DIR/train/<class>/* with DIR/val (validation,
                       valid, dev) or DIR/test held out, or DIR/<class>/* (one split)
    --dataset NAME     a dataset in the Hugging Face cache (never downloaded)
    --split T[,H]      the train split (default train, or the only split) and the held-out one
                       (default the first of validation, valid, val, dev, test; none: stratified)

Labels come from the label column: a `ClassLabel` gives the class names (a folder's names), integer
labels are classes 0…max, strings are sorted into classes. Every label must fall in the classes
and every class must have training images; at least two classes.
"""

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from esper.core.errors import ConfigError
from esper.shell.data import hf
from esper.shell.data.errors import DataError, DatasetNotFound
from esper.shell.data.source import cache_root

HELDOUT_SPLITS = ("validation", "valid", "val", "dev", "test")
SPLIT_FOLDERS = ("train", *HELDOUT_SPLITS)
IMAGE_COLUMNS, LABEL_COLUMNS = ("image", "img"), ("label", "labels")


@attrs.frozen(kw_only=True)
class ImageOptions:
    """The run's `--task images` settings (RunConfig's [data] keys)."""

    data_dir: str | None = None
    dataset: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    split: str | None = None
    image_size: int | None = None
    channels: int | None = None

    @classmethod
    def of(cls, cfg: Any) -> "ImageOptions":
        return cls(**{f.name: getattr(cfg, f.name) for f in attrs.fields(cls)})


@attrs.frozen(kw_only=True, eq=False)
class FoundImages:
    """The splits (image column undecoded), their labels as class ids, and where they came from."""

    train: Any  # datasets.Dataset
    heldout: Any | None  # None: hold out a stratified part of train
    train_split: str
    heldout_split: str | None
    image_column: str
    classes: tuple[str, ...]
    train_labels: np.ndarray  # int64
    heldout_labels: np.ndarray | None
    kind: str  # local | hf
    id_or_path: str


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or hub warnings from `datasets` and no network: a run's console stays its own."""
    import datasets

    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with hf.hub_offline(), hf.quiet_hub_logs():
            yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def _image_extensions() -> frozenset[str]:
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return frozenset(ImageFolder.EXTENSIONS)


def split_folders(root: Path) -> dict[str, Path]:
    """{split name: folder}: train, validation (val, valid, validation or dev, the first found) and
    test folders under `root`; else `root` itself is the train split (flat class folders)."""
    found: dict[str, Path] = {}
    for name in SPLIT_FOLDERS:
        split = "validation" if name in ("val", "valid", "validation", "dev") else name
        if (root / name).is_dir() and split not in found:
            found[split] = root / name
    return found or {"train": root}


def check_class_folders(folders: dict[str, Path]) -> None:
    """Each class folder of each split holds at least one image file (the `imagefolder` builder
    would silently drop an empty one, and with it a class); the train split has two classes or more."""
    extensions = _image_extensions()
    for split, folder in folders.items():
        classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise DataError(f"{folder} holds no class folders; expected {folder}/<class>/*.png|jpg")
        if split == "train":  # (the builder drops the label of a single folder)
            _check_class_count(tuple(p.name for p in classes), str(folder))
        for class_folder in classes:
            if not any(p.suffix.lower() in extensions for p in class_folder.rglob("*") if p.is_file()):
                raise DataError(f"empty class folder {class_folder}: no image files in it")


def _load_folder(root: Path) -> Any:
    """`imagefolder` over the split folders of `root` (named explicitly: the builder's own search
    tries some 60 patterns, each walking the whole tree), its Arrow cache under esper's cache (no file
    of DIR is written)."""
    import datasets

    folders = split_folders(root)
    check_class_folders(folders)
    try:
        with _quiet():
            return datasets.load_dataset("imagefolder", data_files={s: f"{f}/**" for s, f in folders.items()},
                                         cache_dir=str(cache_root() / "datasets"))
    except Exception as exc:  # datasets raises many types for a folder it cannot read
        raise DataError(f"{root}: the imagefolder builder could not read it ({hf_cause(exc)})") from None


def hf_cause(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def open_dataset(options: ImageOptions) -> tuple[Any, str, str]:
    """(a DatasetDict, kind, id_or_path) of the options' source."""
    if options.dataset is not None and options.data_dir is not None:
        raise ConfigError(f"give --data-dir or --dataset, not both (--data-dir {options.data_dir}, "
                          f"--dataset {options.dataset})")
    if options.dataset is not None:
        try:
            with _quiet():
                return hf.load_hub(options.dataset, cache_only=True), "hf", options.dataset
        except hf.HubUnavailable as exc:
            raise DatasetNotFound(
                f"dataset {options.dataset} is not in the Hugging Face cache ({exc}); --task images never "
                f"downloads: run python -c 'import datasets; datasets.load_dataset(\"{options.dataset}\")' "
                "once online, or pass --data-dir") from None
    if options.data_dir is None:
        raise ConfigError("--task images needs --data-dir DIR (class folders or a save_to_disk folder) "
                          "or --dataset NAME (a dataset in the Hugging Face cache)")
    root = Path(options.data_dir).expanduser()
    if not root.is_dir():
        raise DatasetNotFound(f"--data-dir {root} is not a folder")
    if hf.is_saved_dataset(root):
        import datasets

        saved = hf.load_saved(root)
        return (saved if isinstance(saved, datasets.DatasetDict) else {"train": saved}), "local", str(root)
    return _load_folder(root), "local", str(root)


def pick_splits(names: list[str], wanted: str | None, where: str) -> tuple[str, str | None]:
    """(train split, held-out split or None) among `names`."""
    given = [part.strip() for part in (wanted or "").split(",") if part.strip()]
    for name in given:
        if name not in names:
            raise DataError(f"{where} has splits {sorted(names)}; --split names {name!r}")
    if given:
        return given[0], (given[1] if len(given) > 1 else None)
    train = "train" if "train" in names else (names[0] if len(names) == 1 else None)
    if train is None:
        raise DataError(f"{where} has splits {sorted(names)} and none is called train; "
                        "name it with --split TRAIN[,HELDOUT]")
    return train, next((name for name in HELDOUT_SPLITS if name in names), None)


def column(dataset: Any, wanted: str | None, candidates: tuple[str, ...], flag: str, where: str) -> str:
    if wanted is not None:
        if wanted not in dataset.column_names:
            raise DataError(f"{where} has columns {dataset.column_names}; {flag} {wanted} is not one")
        return wanted
    for name in candidates:
        if name in dataset.column_names:
            return name
    raise DataError(f"{where} has columns {dataset.column_names}; name the one to use with {flag}")


def _raw_labels(dataset: Any, name: str) -> np.ndarray:
    return np.asarray(dataset.select_columns([name]).with_format("numpy")[name])


def class_ids(train: Any, heldout: Any | None, name: str,
              where: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None]:
    """(class names, train ids, held-out ids) of the label column; every label checked in range."""
    import datasets

    feature = train.features[name]
    raw = [_raw_labels(train, name), None if heldout is None else _raw_labels(heldout, name)]
    if isinstance(feature, datasets.ClassLabel):
        classes = tuple(feature.names)
    elif raw[0].dtype.kind in "iu":
        classes = tuple(str(k) for k in range(int(raw[0].max()) + 1)) if len(raw[0]) else ()
    elif raw[0].dtype.kind in "UO":
        classes = tuple(sorted({str(v) for v in raw[0]}))
        lookup = {c: k for k, c in enumerate(classes)}
        raw = [None if r is None else np.array([lookup.get(str(v), -1) for v in r]) for r in raw]
    else:
        raise DataError(f"{where}: label column {name} holds {raw[0].dtype}, not class ids or names")
    for split, labels in zip(("train", "held-out"), raw, strict=True):
        if labels is not None and len(labels):
            bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
            if len(bad):
                raise DataError(f"{where}: {split} label {labels[bad[0]].item()!r} of row {bad[0]} is outside the "
                                f"{len(classes)} classes 0…{len(classes) - 1} ({len(bad)} row(s) so)")
    ids = [None if r is None else r.astype(np.int64) for r in raw]
    _check_classes(classes, ids[0], where)
    return classes, ids[0], ids[1]


def _check_class_count(classes: tuple[str, ...], where: str) -> None:
    if len(classes) < 2:
        raise DataError(f"{where}: found {len(classes)} class ({', '.join(classes) or 'none'}); "
                        "a classifier needs at least 2")


def _check_classes(classes: tuple[str, ...], train: np.ndarray, where: str) -> None:
    _check_class_count(classes, where)
    counts = np.bincount(train, minlength=len(classes))
    if (counts == 0).any():
        empty = [classes[k] for k in np.flatnonzero(counts == 0)]
        raise DataError(f"{where}: class {empty[0]} has no training images ({len(empty)} such classes)")


def find_images(options: ImageOptions) -> FoundImages:
    """The options' dataset opened, its splits and columns picked, its labels checked."""
    import datasets

    dataset_dict, kind, id_or_path = open_dataset(options)
    where = id_or_path
    train_split, heldout_split = pick_splits(list(dataset_dict), options.split, where)
    train = dataset_dict[train_split]
    heldout = None if heldout_split is None else dataset_dict[heldout_split]
    image_column = column(train, options.image_column, IMAGE_COLUMNS, "--image-column", where)
    if not isinstance(train.features[image_column], datasets.Image):
        raise DataError(f"{where}: column {image_column} is {type(train.features[image_column]).__name__}, "
                        "not an Image column; name the image column with --image-column")
    label_column = column(train, options.label_column, LABEL_COLUMNS, "--label-column", where)
    classes, train_labels, heldout_labels = class_ids(train, heldout, label_column, where)
    undecoded = datasets.Image(decode=False)
    return FoundImages(
        train=train.cast_column(image_column, undecoded),
        heldout=None if heldout is None else heldout.cast_column(image_column, undecoded),
        train_split=train_split, heldout_split=heldout_split, image_column=image_column, classes=classes,
        train_labels=train_labels, heldout_labels=heldout_labels, kind=kind, id_or_path=id_or_path)
