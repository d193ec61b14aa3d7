"""`HFImageSource`: one split of a `datasets` image column as an `ImageSource`, decoded lazily.

A read decodes each row through the `datasets` `Image` feature (a file path or embedded bytes → a
PIL image converted to the task's mode), then fits it to the task's H×W as PIL's `ImageOps.fit`
does: scale by s = max(H/h, W/w) so the image covers H×W, crop the centre. With H = W = S that is
"resize the short side to S, centre-crop S×S"; an image already H×W is left as it is.

    read([i_0, …, i_{k−1}])  →  uint8 (k, C, H, W), row j = row i_j of the split

`decode_all` reads a whole split (the resident path) in chunks on a few threads (PIL decodes and
resizes with the GIL released); `channel_stats` measures per-channel mean/std through `read`.
"""

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import numpy as np

from esper.shell.data.errors import DataError
from esper.shell.data.image_source import ImageSource

CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}  # the modes a task converts its images to
_GREY = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")
CHUNK = 512  # images per read of decode_all and channel_stats
MAX_THREADS = 8


def task_mode(pil_mode: str) -> str:
    """The mode an image of `pil_mode` counts as: grey kinds → L, LA, RGBA/PA → RGBA, else RGB
    (palette, CMYK, YCbCr and the rest are converted to RGB)."""
    if pil_mode in _GREY:
        return "L"
    if pil_mode in ("LA", "La"):
        return "LA"
    return "RGBA" if pil_mode in ("RGBA", "RGBa", "PA") else "RGB"


def image_name(value: Any, where: str, row: int) -> str:
    """How an error names one image: its file, else its row."""
    path = value.get("path") if isinstance(value, dict) else None
    return str(path) if path else f"{where} row {row}"


def open_header(value: Any, where: str, row: int) -> Any:
    """The image of an undecoded `Image` value, opened lazily (PIL reads the header only); a file
    that cannot be opened or identified is a `DataError` naming it."""
    from PIL import Image

    name = image_name(value, where, row)
    if not isinstance(value, dict) or (value.get("bytes") is None and not value.get("path")):
        raise DataError(f"{name}: no image (the image column holds {type(value).__name__})")
    try:
        return Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"])
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise DataError(f"{name}: unreadable or corrupt image ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@attrs.frozen(eq=False)
class HFImageSource:
    """The rows of `dataset` (its image column cast to `Image(decode=False)`), at `shape`, in `mode`."""

    dataset: Any  # datasets.Dataset
    column: str
    labels: np.ndarray  # int64 (n,)
    shape: tuple[int, int, int] = attrs.field(converter=tuple)  # (C, H, W)
    mode: str  # L | LA | RGB | RGBA
    where: str  # "DIR train": names the split in errors

    def read(self, indices: Sequence[int]) -> np.ndarray:
        rows = [int(i) for i in indices]
        values = self.dataset[rows][self.column] if rows else []
        out = np.empty((len(rows), *self.shape), dtype=np.uint8)
        for j, (row, value) in enumerate(zip(rows, values, strict=True)):
            out[j] = self._decode(value, row)
        return out

    def _decode(self, value: Any, row: int) -> np.ndarray:
        from datasets import Image as ImageFeature
        from PIL import Image, ImageOps

        height, width = self.shape[1:]
        try:
            image = ImageFeature(mode=self.mode).decode_example(value)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{image_name(value, self.where, row)}: unreadable or corrupt image "
                            f"({_first_line(exc)})") from None
        if image.size != (width, height):
            image = ImageOps.fit(image, (width, height), method=Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _chunks(n: int) -> list[range]:
    return [range(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]


def decode_all(source: ImageSource) -> np.ndarray:
    """Every image of the split, uint8 (n, C, H, W), chunks decoded on up to 8 threads."""
    n = len(source.labels)
    out = np.empty((n, *source.shape), dtype=np.uint8)
    chunks = _chunks(n)
    threads = max(1, min(MAX_THREADS, os.cpu_count() or 1, len(chunks)))
    with ThreadPoolExecutor(threads) as pool:
        for chunk, images in zip(chunks, pool.map(source.read, chunks), strict=True):
            out[chunk.start:chunk.stop] = images
    return out


def channel_stats(source: ImageSource) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of pixel values in [0, 1] over the whole split (float64 sums,
    chunk by chunk: std = √(E[x²] − E[x]²))."""
    channels = source.shape[0]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for chunk in _chunks(len(source.labels)):
        pixels = source.read(chunk).astype(np.float64) / 255.0
        total += pixels.sum(axis=(0, 2, 3))
        squares += np.square(pixels).sum(axis=(0, 2, 3))
        count += pixels.shape[0] * pixels.shape[2] * pixels.shape[3]
    if count == 0:
        raise DataError("the training split is empty: no images to measure mean and std on")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    # A constant channel (std 0) would divide by zero: it is centred but not scaled.
    return tuple(float(m) for m in mean), tuple(float(s) if s > 1e-6 else 1.0 for s in std)
