"""Data a script holds, as a run's `TaskData` (docs/runtime.md §5.8): tensors, or a map-style `Dataset`.

    tensor_data((x, y), (x_heldout, y_heldout), name=, device=, n_classes=, augment=)
    dataset_data(train_dataset, heldout_dataset, **the same keywords)

    inputs (N, C, H, W) floating → topology "cnn" through `--task images`' derivation (derive_image_preset):
                                   the built-in CNN host takes the data's shape and classes; per-channel mean
                                   and std of the train split; crop padding ⌊min(H, W)/8⌋ and flip
                                   (`augment=False`: neither)
    inputs (N, D) floating       → topology "mlp" (derive_flat_preset): no normalisation, no augmentation.
                                   No built-in host takes flat inputs: such data needs the user's host
                                   (a HostFactory, esper.shell.user_code)
    labels (N,) integer          → classes in [0, n_classes); n_classes defaults to the largest label + 1, ≥ 2

Inputs are kept as float32 and labels as int64 on `device`, always device-resident (data over the memory
budget is `--task images` with `--data-budget`, §5.7); where they already are float32 / int64 on `device`
the task shares their memory, so leave them unchanged during the run. Batch size and epochs are the
preset's (128, 30); the run config overrides them as for any task. The source record (kind "tensors")
hashes those four tensors' dtypes, shapes and bytes, so a resume on other tensors is refused
(`require_same_data`). Every refusal is one `ConfigError` line naming the split.
"""

import attrs
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from esper.core.errors import ConfigError
from esper.core.tasks import TaskPreset, derive_flat_preset, derive_image_preset
from esper.shell.data.augment import ImageTransform
from esper.shell.data.source import DataSource, Normalisation, arrays_sha256
from esper.shell.data.taskdata import TaskData

SOURCE_KIND = "tensors"
_STATS_CHUNK = 4096  # samples per float64 chunk of the channel statistics


def tensor_data(train: tuple[Tensor, Tensor], heldout: tuple[Tensor, Tensor], *, name: str = "tensors",
                device: torch.device | str = "cpu", n_classes: int | None = None, augment: bool = True) -> TaskData:
    """A classification task on a script's (inputs, labels) tensors for each split (the module's contract)."""
    train_x, train_y = _checked_split("train", train)
    heldout_x, heldout_y = _checked_split("heldout", heldout)
    if heldout_x.shape[1:] != train_x.shape[1:]:
        raise ConfigError(f"heldout split: inputs of shape {tuple(heldout_x.shape[1:])} per sample, the train "
                          f"split's are {tuple(train_x.shape[1:])}")
    classes = _n_classes(n_classes, {"train": train_y, "heldout": heldout_y})
    sha256 = arrays_sha256([train_x, train_y, heldout_x, heldout_y])
    normalisation = _channel_stats(train_x) if train_x.ndim == 4 else None
    preset = _preset(train_x, classes, len(heldout_x), normalisation, augment=augment, name=name)
    source = DataSource(preset=name, kind=SOURCE_KIND, id_or_path=name, fingerprint=sha256, sha256=sha256,
                        n_train=len(train_x), n_heldout=len(heldout_x), subset=False, normalisation=normalisation)
    device = torch.device(device)
    transform = None if normalisation is None else ImageTransform(
        padding=preset.augment_padding, hflip=preset.hflip, mean=normalisation.mean, std=normalisation.std,
        device=device)
    return TaskData(preset=preset, source=source, train_inputs=train_x.to(device), train_labels=train_y.to(device),
                    heldout_inputs=heldout_x.to(device), heldout_labels=heldout_y.to(device), device=device,
                    transform=transform)


def dataset_data(train: Dataset, heldout: Dataset, *, name: str = "tensors", device: torch.device | str = "cpu",
                 n_classes: int | None = None, augment: bool = True) -> TaskData:
    """`tensor_data` on map-style Datasets of (input, label) items (`len` and `__getitem__`), each read whole
    and stacked by `default_collate`: for data that fits in memory (larger image data: `--task images`)."""
    return tensor_data(_stacked("train", train), _stacked("heldout", heldout), name=name, device=device,
                       n_classes=n_classes, augment=augment)


def _stacked(split: str, dataset: Dataset) -> tuple[Tensor, Tensor]:
    """Every item of a map-style Dataset, collated into (inputs, labels); a ConfigError naming the split."""
    try:
        n = len(dataset)  # type: ignore[arg-type]  # map-style Datasets define it; the base class does not
    except TypeError:
        raise ConfigError(f"{split} split: {type(dataset).__name__} has no len(); give a map-style Dataset of "
                          "(input, label) items, or stack an iterable one into tensors for tensor_data") from None
    if n == 0:
        raise ConfigError(f"{split} split is empty")
    try:
        batch = default_collate([dataset[i] for i in range(n)])
    except Exception as exc:  # the user's items or __getitem__: one line either way
        raise ConfigError(f"{split} split: its items do not stack into (inputs, labels): "
                          f"{' '.join(f'{type(exc).__name__}: {exc}'.split())}") from None
    if not (isinstance(batch, list | tuple) and len(batch) == 2):
        raise ConfigError(f"{split} split: its items are not (input, label) pairs")
    return batch[0], batch[1]


def _checked_split(split: str, pair: object) -> tuple[Tensor, Tensor]:
    """(float32 inputs, int64 labels) of one split, or a ConfigError naming the split."""
    if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(t, Tensor) for t in pair)):
        raise ConfigError(f"{split} split: expected an (inputs, labels) pair of tensors, got {type(pair).__name__}")
    x, y = (t.detach() for t in pair)
    if x.ndim not in (2, 4) or not x.is_floating_point() or x.is_complex():
        raise ConfigError(f"{split} split: inputs of dtype {x.dtype} and shape {tuple(x.shape)}; expected floating "
                          f"(N, C, H, W) images or (N, D) features{_input_hint(x)}")
    if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(f"{split} split: labels of dtype {y.dtype} and shape {tuple(y.shape)}; expected (N,) "
                          "integer class indices")
    if len(x) != len(y):
        raise ConfigError(f"{split} split: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise ConfigError(f"{split} split is empty")
    x = x.to(torch.float32).contiguous()
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ConfigError(f"{split} split: {len(bad)} input(s) hold NaN or infinite values (float32), the first "
                          f"at row {int(bad[0])}")
    return x, y.to(torch.int64).contiguous()


def _input_hint(x: Tensor) -> str:
    if x.is_floating_point() or x.dtype == torch.bool:
        return ""
    if x.ndim == 2:
        return " (integer (N, T) inputs look like token data: use --task text)"
    if x.ndim == 4:
        return " (integer images: convert them, e.g. x.float() / 255)"
    return ""


def _n_classes(given: int | None, labels: dict[str, Tensor]) -> int:
    """`given`, else the largest label + 1; at least 2, and every label in [0, n)."""
    n = given if given is not None else max(int(y.max()) for y in labels.values()) + 1
    if n < 2:
        raise ConfigError(f"a classification task needs at least 2 classes, got {n}"
                          f"{' (the largest label + 1)' if given is None else ''}")
    for split, y in labels.items():
        outside = ((y < 0) | (y >= n)).nonzero().flatten()
        if len(outside):
            row = int(outside[0])
            raise ConfigError(f"{split} split: label {int(y[row])} at row {row} is outside [0, {n})"
                              f"{' (n_classes)' if given is not None else ''}")
    return n


def _channel_stats(x: Tensor) -> Normalisation:
    """Per-channel mean and std of the train inputs as given (float64 sums, a chunk of samples at a time);
    a constant channel keeps std 1, as `--task images`' (esper.shell.data.hf_images.channel_stats)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for chunk in x.split(_STATS_CHUNK):
        wide = chunk.to(torch.float64)
        total += wide.sum(dim=(0, 2, 3))
        squares += wide.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt()
    return Normalisation(mean=mean.tolist(), std=[s if s > 1e-6 else 1.0 for s in std.tolist()])


def _preset(train_x: Tensor, n_classes: int, n_heldout: int, normalisation: Normalisation | None, *,
            augment: bool, name: str) -> TaskPreset:
    """Images: `--task images`' derivation (crop and flip off unless `augment`); flat features: the flat preset."""
    if normalisation is None:
        preset = derive_flat_preset(n_features=int(train_x.shape[1]), n_classes=n_classes,
                                    train_size=len(train_x), heldout_size=n_heldout)
        return attrs.evolve(preset, name=name)
    c, h, w = (int(d) for d in train_x.shape[1:])
    preset = derive_image_preset(input_shape=(c, h, w), n_classes=n_classes, train_size=len(train_x),
                                 heldout_size=n_heldout, mean=normalisation.mean, std=normalisation.std)
    augmentation = {} if augment else {"augment_padding": 0, "hflip": False}
    return attrs.evolve(preset, name=name, **augmentation)
