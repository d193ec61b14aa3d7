"""Data from a script (docs/runtime.md §5.8): tensors or a map-style Dataset become a TaskData whose topology and
preset follow the inputs' shape, whose every refusal is one line naming the split, and whose source record hashes
the exact tensors, so a run trains on them on the built-in CNN host and a resume on other tensors is refused."""

import json
import math

import attrs
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.tasks import DATA_TASKS, FLAT_HOST, derive_image_preset
from esper.shell.data import DataError, DataSource, Normalisation
from esper.shell.data.tensors import dataset_data, tensor_data
from esper.shell.driver import train
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer
from esper.shell.user_code import UserParts


def images(n: int, seed: int = 0, shape: tuple[int, int, int] = (3, 8, 8)) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of float images told apart by brightness (a CNN learns them in an epoch or two)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=gen)
    inputs = torch.rand(n, *shape, generator=gen) * 0.5 + 0.5 * labels[:, None, None, None]
    return inputs, labels


def features(n: int, seed: int = 0, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) + labels[:, None], labels.to(torch.int32)


def test_float_images_take_the_images_derivation_with_train_split_statistics():
    (x, y), heldout = images(40), images(20, seed=1)
    data = tensor_data((x, y), heldout, name="bright")
    mean, std = x.double().mean(dim=(0, 2, 3)), x.double().std(dim=(0, 2, 3), correction=0)
    assert data.preset.mean is not None and data.preset.std is not None
    assert np.allclose(data.preset.mean, mean.numpy()) and np.allclose(data.preset.std, std.numpy())
    expected = attrs.evolve(derive_image_preset(input_shape=(3, 8, 8), n_classes=2, train_size=40, heldout_size=20,
                                                mean=data.preset.mean, std=data.preset.std), name="bright")
    assert data.preset == expected and data.preset.topology == "cnn" and data.preset.host_blocks == (3, 3)
    assert (data.preset.augment_padding, data.preset.hflip) == (1, True)  # ⌊8/8⌋: the images rule
    assert (data.preset.batch_size, data.preset.epochs) == (DATA_TASKS["images"].batch_size, 30)
    assert data.source.normalisation == Normalisation(mean=data.preset.mean, std=data.preset.std)
    assert data.n_classes == 2
    assert data.train_inputs.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    plain = tensor_data((x, y), heldout, augment=False).preset
    assert (plain.augment_padding, plain.hflip) == (0, False)


def test_float_images_are_normalised_without_the_pixel_scale_and_never_in_place():
    (x, y), heldout = images(16), images(8, seed=1)
    data = tensor_data((x, y), heldout, augment=False)
    before = data.heldout_inputs.clone()
    batch, _ = data.batch("heldout", slice(0, 8))  # a view of the split
    out = data.prepare_batch(batch, train=False)
    norm = data.source.normalisation
    assert norm is not None
    expected = (before - torch.tensor(norm.mean)[:, None, None]) / torch.tensor(norm.std)[:, None, None]
    assert torch.allclose(out, expected) and torch.equal(data.heldout_inputs, before)


def test_flat_features_are_an_mlp_task_without_normalisation_or_a_built_in_host():
    data = tensor_data(features(30), features(10, seed=1), name="flat")
    preset = data.preset
    assert (preset.topology, preset.input_shape, preset.n_classes, preset.host) == ("mlp", (6,), 3, FLAT_HOST)
    assert (preset.augment_padding, preset.hflip, preset.mean, preset.host_blocks) == (0, False, None, None)
    assert data.transform is None and data.source.normalisation is None
    assert data.train_inputs.dtype == torch.float32 and data.heldout_labels.dtype == torch.int64
    assert tensor_data(features(30), features(10, seed=1), n_classes=5).n_classes == 5


def test_the_source_is_a_tensors_record_that_round_trips_and_reads_well():
    data = tensor_data(images(12), images(6, seed=1), name="bright")
    source = data.source
    assert (source.kind, source.id_or_path, source.preset, source.n_train, source.n_heldout, source.subset) == (
        "tensors", "bright", "bright", 12, 6, False)
    encoded = json.loads(json.dumps(codec.encode(source)))
    assert codec.decode(DataSource, encoded) == source
    kib = (12 + 6) * (3 * 8 * 8 * 4 + 8) / 2**10  # float32 inputs and int64 labels
    assert data.path_line() == f"data: device-resident on cpu: {kib:.1f} KiB of a script's tensors (bright)"
    large = tensor_data((torch.rand(1100, 256), torch.arange(1100) % 2), features(10, d=256))
    assert large.path_line() == "data: device-resident on cpu: 1.1 MiB of a script's tensors (tensors)"


def _bad_inputs():
    x, y = images(8)
    nan = x.clone()
    nan[3, 0, 0, 0] = math.nan
    return {
        "3-D inputs": ((x[:, 0], y), "train split: inputs of dtype torch.float32 and shape (8, 8, 8)"),
        "token ids": ((torch.randint(0, 9, (8, 5)), y), "use --task text"),
        "uint8 images": (((x * 255).to(torch.uint8), y), "x.float() / 255"),
        "float labels": ((x, y.float()), "train split: labels of dtype torch.float32"),
        "2-D labels": ((x, y[:, None]), "expected (N,) integer class indices"),
        "lengths": ((x, y[:5]), "train split: 8 inputs but 5 labels"),
        "empty": ((x[:0], y[:0]), "train split is empty"),
        "non-finite": ((nan, y), "train split: 1 input(s) hold NaN or infinite values (float32), the first at row 3"),
        "negative label": ((x, torch.full((8,), -1)), "train split: label -1 at row 0 is outside [0, 2)"),
        "not a pair": ((x,), "train split: expected an (inputs, labels) pair of tensors"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_every_refusal_is_one_line_naming_the_problem(case):
    bad, words = _bad_inputs()[case]
    heldout = (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ConfigError) as caught:
        tensor_data(bad, heldout)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_held_out_refusals_name_the_held_out_split():
    train_split = images(8)
    for heldout, words in (((torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)), "heldout split: inputs of "
                            "shape (3, 4, 4) per sample, the train split's are (3, 8, 8)"),
                           ((torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])), "heldout split: label 2 at row 2 "
                            "is outside [0, 2) (n_classes)")):
        with pytest.raises(ConfigError) as caught:
            tensor_data(train_split, heldout, n_classes=2)
        assert words in str(caught.value) and "\n" not in str(caught.value)


def test_one_class_is_not_a_classification_task():
    x, _ = images(8)
    zeros = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ConfigError) as caught:
        tensor_data((x, zeros), (x, zeros))
    assert "at least 2 classes, got 1 (the largest label + 1)" in str(caught.value)
    with pytest.raises(ConfigError, match=r"got 1$"):
        tensor_data(images(8), images(4), n_classes=1)


def test_the_hash_changes_when_one_element_changes():
    (x, y), (hx, hy) = images(10), images(5, seed=1)
    base = tensor_data((x, y), (hx, hy)).source
    assert tensor_data((x.clone(), y.clone()), (hx.clone(), hy.clone())).source.sha256 == base.sha256
    nudged = x.clone()
    nudged[9, 2, 7, 7] += 1e-3
    flipped = hy.clone()
    flipped[0] = 1 - flipped[0]
    for train_split, heldout in (((nudged, y), (hx, hy)), ((x, y), (hx, flipped))):
        assert tensor_data(train_split, heldout).source.sha256 != base.sha256


class PairsOfArrays(Dataset):
    """A user's map-style Dataset: numpy inputs and plain int labels."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.numpy(), y.tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], self.y[i]


@pytest.mark.parametrize("make", [TensorDataset, PairsOfArrays])
def test_a_dataset_gives_the_same_task_data_as_its_stacked_tensors(make):
    train_split, heldout = images(12), images(6, seed=1)
    stacked = tensor_data(train_split, heldout, name="d")
    read = dataset_data(make(*train_split), make(*heldout), name="d")
    assert read.preset == stacked.preset and read.source == stacked.source
    for split in ("train_inputs", "train_labels", "heldout_inputs", "heldout_labels"):
        assert torch.equal(getattr(read, split), getattr(stacked, split))


class NoLength(Dataset):
    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(3), 0


class Triples(PairsOfArrays):
    def __getitem__(self, i: int) -> tuple[np.ndarray, int, int]:  # type: ignore[override]
        return self.x[i], self.y[i], 0


def test_a_dataset_that_cannot_be_stacked_is_one_line():
    heldout = TensorDataset(*images(4))
    for bad, words in ((NoLength(), "train split: NoLength has no len()"),
                       (Triples(*images(4)), "train split: its items are not (input, label) pairs")):
        with pytest.raises(ConfigError) as caught:
            dataset_data(bad, heldout)
        assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_trainer_trains_tensor_images_on_the_built_in_cnn_host():
    data = tensor_data(images(64), images(32, seed=1), name="bright")
    trainer = Trainer(RunConfig(seed=0, epochs=2, batch_size=16), data, torch.device("cpu"))
    results = [trainer.run_epoch() for _ in range(2)]
    host = trainer.model.host.config
    assert trainer.model.topology == "cnn" and (host.input_shape, host.n_classes) == ((3, 8, 8), 2)
    assert all(math.isfinite(r.train_loss) and math.isfinite(r.val_loss) for r in results)
    assert results[-1].val_acc > 0.5  # brightness is learnt: better than a guess


CFG = RunConfig(epochs=2, batch_size=16, checkpoint_every=1, telemetry_level="minimal", progress=False, report=False,
                device="cpu")


def test_a_script_run_records_the_tensors_and_a_resume_on_other_tensors_is_refused(tmp_path):
    data = tensor_data(images(64), images(32, seed=1), name="bright")
    run = tmp_path / "run"
    train(CFG, out=str(run), user=UserParts(data=data), stop_after=1)
    recorded = json.loads((run / "config.json").read_text())["data_source"]
    assert recorded == codec.encode(data.source) and recorded["kind"] == "tensors"
    other = tensor_data(images(64, seed=2), images(32, seed=1), name="bright")
    with pytest.raises(DataError) as caught:
        train(RunConfig(), resume=str(run), user=UserParts(data=other))
    assert "its data changed" in str(caught.value) and "\n" not in str(caught.value)
    summary = train(RunConfig(), resume=str(run), user=UserParts(data=data))
    assert summary.status == "ok" and summary.epochs == 2
