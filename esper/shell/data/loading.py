"""`load_task`: find or generate a preset's data, subset it, place it on the device, record its source.

`--train-size N` keeps the first N of a fixed `data_seed` permutation of the train split (sorted
back into source order); `--val-size N` does the same for the held-out split; either marks the
source `subset: true`. Sizes count images or windows.
"""

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from esper.core.tasks import IMAGES_TASK, TaskPreset, task_preset
from esper.shell.data import cifar, fashion_mnist, synth_images, synth_stories, text_files, tinystories
from esper.shell.data.errors import DataError
from esper.shell.data.image_folder import ImageOptions
from esper.shell.data.image_source import ArraySource, ImageSource
from esper.shell.data.images_task import load_images_task
from esper.shell.data.placement import image_task_data
from esper.shell.data.raw import RawImages
from esper.shell.data.source import DataSource, Normalisation, TokenizerInfo, arrays_sha256, text_sha256
from esper.shell.data.streamed import IN_PROCESS, LoaderSettings
from esper.shell.data.subset import subset_indices
from esper.shell.data.taskdata import TaskData

_IMAGE_LOADERS = {"fashion-mnist": fashion_mnist.load_fashion_mnist, "cifar10": cifar.load_cifar10,
                  "cifar10-deep": cifar.load_cifar10}
BYTES_TOKENIZER = TokenizerInfo(kind="bytes", vocab=256, sha256=text_sha256("bytes/v1"),
                                eos_id=synth_stories.EOS)


def load_task(name: str, *, device: torch.device | str, data_dir: Path | str | None = None,
              data_seed: int = 0, train_size: int | None = None, val_size: int | None = None,
              tokenizer: str = "auto", block_size: int | None = None, text_column: str = "text",
              images: ImageOptions | None = None, data_budget: int | None = None,
              loader: LoaderSettings = IN_PROCESS) -> TaskData:
    """The data of task `name` on `device`. `block_size` (text only) overrides the preset's window
    length, e.g. for a smaller test host; `text_column` is `--task text`'s column of a saved dataset;
    `images` says where and how `--task images` finds its data. Image splits larger than `data_budget`
    bytes (None: no limit) stream through `loader` (`image_task_data`); text stays resident. Raises
    `DatasetNotFound` / `DataError` (user errors)."""
    preset = task_preset(name)
    target = torch.device(device)
    if name == IMAGES_TASK:
        options = images if images is not None else ImageOptions(data_dir=None if data_dir is None else str(data_dir))
        return load_images_task(options, device=target, data_seed=data_seed, train_size=train_size, val_size=val_size,
                                budget=data_budget, loader=loader)
    folder = None if data_dir is None else Path(data_dir).expanduser()
    if preset.modality == "images":
        task = _image_task(preset, folder, data_seed, train_size, val_size)
        return image_task_data(*task, target, budget=data_budget, loader=loader)
    block = block_size or preset.block_size
    assert block is not None
    raw = _text_streams(preset, folder, data_seed, tokenizer, block, text_column)
    if preset.name == "text":  # a derived task: its vocabulary and window length come from the data
        preset = text_files.derived_preset(preset, raw.tokenizer, block)
    return _text_task(preset, target, raw, data_seed, train_size, val_size, block)


# --- images ----------------------------------------------------------------------------------


def _raw_images(preset: TaskPreset, data_dir: Path | None, data_seed: int) -> tuple[RawImages, Normalisation]:
    if preset.name == "synth-images":
        return _synth_images(preset, data_seed)
    raw = _IMAGE_LOADERS[preset.name](data_dir)
    assert preset.mean is not None and preset.std is not None
    return raw, Normalisation(mean=preset.mean, std=preset.std)


def _synth_images(preset: TaskPreset, data_seed: int) -> tuple[RawImages, Normalisation]:
    assert preset.train_size is not None
    train_x, train_y = synth_images.generate(preset.train_size,
                                             synth_images.split_generator(data_seed, "train"))
    heldout_x, heldout_y = synth_images.generate(preset.heldout_size,
                                                 synth_images.split_generator(data_seed, "heldout"))
    mean, std = synth_images.channel_stats(train_x)
    fingerprint = text_sha256(synth_images.GENERATOR, data_seed, preset.train_size, preset.heldout_size)
    raw = RawImages(train_x=train_x.numpy(), train_y=train_y.numpy(), heldout_x=heldout_x.numpy(),
                    heldout_y=heldout_y.numpy(), kind="procedural", id_or_path=synth_images.GENERATOR,
                    fingerprint=fingerprint)
    return raw, Normalisation(mean=mean, std=std)


def _take(array: np.ndarray, index: Tensor | None) -> Tensor:
    """A torch copy of `array` (or of its `index` rows) that owns writable memory."""
    chosen = array if index is None else array[index.numpy()]
    return torch.from_numpy(np.require(chosen, requirements=["C", "W"]))


def _image_task(preset: TaskPreset, data_dir: Path | None, data_seed: int, train_size: int | None,
                val_size: int | None) -> tuple[TaskPreset, DataSource, dict[str, ImageSource]]:
    """A preset's splits (subset) as in-memory sources, and their record."""
    raw, normalisation = _raw_images(preset, data_dir, data_seed)
    train_index = subset_indices(len(raw.train_y), train_size, data_seed, 0, "--train-size")
    heldout_index = subset_indices(len(raw.heldout_y), val_size, data_seed, 1, "--val-size")
    arrays = [_take(raw.train_x, train_index), _take(raw.train_y, train_index).long(),
              _take(raw.heldout_x, heldout_index), _take(raw.heldout_y, heldout_index).long()]
    source = DataSource(
        preset=preset.name, kind=raw.kind, id_or_path=raw.id_or_path, fingerprint=raw.fingerprint,
        sha256=arrays_sha256(arrays), n_train=len(arrays[0]), n_heldout=len(arrays[2]),
        subset=train_index is not None or heldout_index is not None, normalisation=normalisation)
    splits = {"train": ArraySource(arrays[0].numpy(), arrays[1].numpy()),
              "heldout": ArraySource(arrays[2].numpy(), arrays[3].numpy())}
    return preset, source, splits


# --- text ------------------------------------------------------------------------------------


def windows(tokens: Tensor, block: int, where: str) -> tuple[Tensor, Tensor]:
    """(N, block) views: inputs w[:-1] and targets w[1:] of windows of block + 1 tokens, stride block."""
    count = (tokens.shape[0] - 1) // block
    if count < 1:
        raise DataError(f"{where}: {tokens.shape[0]} tokens cannot fill one window of {block + 1}")
    used = tokens[:count * block + 1]
    return used[:-1].unfold(0, block, block), used[1:].unfold(0, block, block)


def _device_tokens(stream: np.ndarray, device: torch.device) -> Tensor:
    """uint8 stays uint8 (bytes); uint16 ids widen to int32, which every backend can index."""
    tokens = torch.from_numpy(np.require(stream, requirements=["C", "W"]))
    return (tokens if tokens.dtype == torch.uint8 else tokens.to(torch.int32)).to(device)


def _synth_streams(preset: TaskPreset, data_seed: int) -> tinystories.RawText:
    assert preset.train_size is not None
    train = synth_stories.generate_stories(preset.train_size,
                                           synth_stories.split_generator(data_seed, "train"))
    heldout = synth_stories.generate_stories(preset.heldout_size,
                                             synth_stories.split_generator(data_seed, "heldout"))
    fingerprint = text_sha256(synth_stories.GENERATOR, data_seed, preset.train_size, preset.heldout_size)
    return tinystories.RawText(train_tokens=synth_stories.encode(train),
                               heldout_tokens=synth_stories.encode(heldout), kind="procedural",
                               id_or_path=synth_stories.GENERATOR, fingerprint=fingerprint,
                               tokenizer=BYTES_TOKENIZER)


def _text_streams(preset: TaskPreset, data_dir: Path | None, data_seed: int, tokenizer: str, block: int,
                  text_column: str) -> tinystories.RawText:
    if preset.name == "synth-stories":
        return _synth_streams(preset, data_seed)
    if preset.name == "text":
        return text_files.load_text(data_dir, column=text_column, data_seed=data_seed, tokenizer_choice=tokenizer,
                                    block=block, heldout_windows=preset.heldout_size)
    return tinystories.load_tinystories(data_dir, tokenizer, block, preset.heldout_size)


def _text_task(preset: TaskPreset, device: torch.device, raw: tinystories.RawText, data_seed: int,
               train_size: int | None, val_size: int | None, block: int) -> TaskData:
    if preset.name == "synth-stories":
        train_tokens = _device_tokens(raw.train_tokens, device)
    else:  # The full train stream stays a CPU memory map; batches gather windows and move them.
        train_tokens = torch.from_numpy(raw.train_tokens)
    heldout_tokens = _device_tokens(raw.heldout_tokens, device)
    train_x, train_y = windows(train_tokens, block, f"{preset.name} train split")
    heldout_x, heldout_y = windows(heldout_tokens, block, f"{preset.name} held-out split")
    train_index = subset_indices(len(train_x), train_size, data_seed, 0, "--train-size")
    heldout_index = subset_indices(len(heldout_x), val_size, data_seed, 1, "--val-size")
    if train_index is not None:
        train_x, train_y = train_x[train_index.to(train_x.device)], train_y[train_index.to(train_y.device)]
    if heldout_index is not None:
        heldout_x, heldout_y = heldout_x[heldout_index.to(device)], heldout_y[heldout_index.to(device)]
    hashed = ([train_tokens] if train_index is None else [train_x, train_y]) + (
        [heldout_tokens] if heldout_index is None else [heldout_x, heldout_y])
    source = DataSource(
        preset=preset.name, kind=raw.kind, id_or_path=raw.id_or_path, fingerprint=raw.fingerprint,
        sha256=arrays_sha256(hashed), n_train=len(train_x), n_heldout=len(heldout_x),
        subset=train_index is not None or heldout_index is not None, tokenizer=raw.tokenizer)
    return TaskData(preset=preset, source=source, train_inputs=train_x, train_labels=train_y,
                    heldout_inputs=heldout_x, heldout_labels=heldout_y, device=device)
