"""Small image data sets written on the fly for the `--task images` tests: class folders of PNG or
JPEG files and `save_to_disk` folders, each class a colour (class k: channel k bright), so a few
epochs of a tiny CNN tell them apart."""

from pathlib import Path

import numpy as np

CLASSES = ("blue", "green", "red")  # sorted, as the imagefolder builder names them: class k = channel 2 − k


def pixels(k: int, i: int, height: int = 20, width: int = 24, mode: str = "RGB") -> np.ndarray:
    """Image i of class k: channel (2 − k) at 200 + i (so blue = channel 2), noise elsewhere."""
    rng = np.random.default_rng([k, i])
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[..., 2 - k] = 200 + i % 50
    return image.mean(axis=2).astype(np.uint8) if mode == "L" else image


def write_class_folders(root: Path, *, per_class: int = 12, heldout: int = 4, suffix: str = ".png",
                        split_folders: bool = True, heldout_name: str = "val",
                        sizes: tuple[tuple[int, int], ...] = ((20, 24),)) -> Path:
    """root/train/<class>/*.png and root/<heldout_name>/<class>/* (or root/<class>/*, flat, with no
    held-out split); image i takes size sizes[i % len(sizes)]."""
    from PIL import Image

    splits = [("train", per_class), (heldout_name, heldout)] if split_folders else [("", per_class)]
    for split, count in splits:
        for k, name in enumerate(CLASSES):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                height, width = sizes[i % len(sizes)]
                Image.fromarray(pixels(k, i, height, width)).save(folder / f"{i:03d}{suffix}", quality=95)
    return root


def write_saved_dataset(root: Path, *, per_class: int = 12, labels: list[int] | None = None,
                        image_column: str = "photo", label_column: str = "kind") -> Path:
    """A `DatasetDict.save_to_disk` folder: a train split with an Image column and a ClassLabel
    column (`labels` replaces the labels, e.g. with one out of range), and a test split."""
    import datasets
    from PIL import Image

    datasets.disable_progress_bars()  # test output stays readable
    features = datasets.Features({image_column: datasets.Image(),
                                  label_column: datasets.ClassLabel(names=list(CLASSES))})
    raw = datasets.Features({image_column: datasets.Image(), label_column: datasets.Value("int64")})

    def split(ids: list[int]) -> datasets.Dataset:
        images = [Image.fromarray(pixels(k % len(CLASSES), i)) for i, k in enumerate(ids)]
        # Cast from plain ints: ClassLabel itself refuses a label out of range when building.
        return datasets.Dataset.from_dict({image_column: images, label_column: ids}, features=raw).cast(features)

    def balanced(count: int) -> list[int]:
        return [k for k in range(len(CLASSES)) for _ in range(count)]

    train = split(labels if labels is not None else balanced(per_class))
    datasets.DatasetDict({"train": train, "test": split(balanced(4))}).save_to_disk(str(root))
    return root
