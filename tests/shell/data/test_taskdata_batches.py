import pytest
import torch

from esper.core.tasks import task_preset
from esper.shell.data import DataError, DataSource, TaskData, subset_indices, windows


def _images(n_train: int, n_heldout: int) -> TaskData:
    source = DataSource(preset="synth-images", kind="procedural", id_or_path="test", fingerprint="f",
                        sha256="s", n_train=n_train, n_heldout=n_heldout, subset=False)
    return TaskData(preset=task_preset("synth-images"), source=source, device=torch.device("cpu"),
                    train_inputs=torch.zeros((n_train, 3, 4, 4), dtype=torch.uint8),
                    train_labels=torch.arange(n_train), heldout_inputs=torch.zeros((n_heldout, 3, 4, 4),
                                                                                  dtype=torch.uint8),
                    heldout_labels=torch.arange(n_heldout))


def test_train_batches_drop_the_last_partial_batch_and_cover_a_permutation() -> None:
    data = _images(1_000, 10)
    batches = list(data.train_batches(128, torch.Generator().manual_seed(0)))
    assert len(batches) == 7 and all(b.shape == (128,) for b in batches)
    seen = torch.cat(batches)
    assert seen.unique().numel() == 896  # no index twice
    full = torch.cat(list(data.train_batches(100, torch.Generator().manual_seed(0))))
    assert torch.equal(full.sort().values, torch.arange(1_000))  # every index exactly once


def test_train_permutation_comes_from_the_data_generator() -> None:
    data = _images(300, 10)
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    first = torch.cat(list(data.train_batches(50, generator)))
    second = torch.cat(list(data.train_batches(50, generator)))
    generator.set_state(state)
    assert torch.equal(torch.cat(list(data.train_batches(50, generator))), first)
    assert not torch.equal(first, second)  # a fresh permutation every epoch


def test_max_batches_caps_training_only() -> None:
    data = _images(1_000, 250)
    assert len(list(data.train_batches(100, torch.Generator(), max_batches=3))) == 3
    assert len(list(data.train_batches(100, torch.Generator(), max_batches=50))) == 10
    assert len(list(data.heldout_batches(100))) == 3


def test_a_split_smaller_than_one_batch_is_an_error_at_call_time() -> None:
    data = _images(100, 10)
    with pytest.raises(DataError, match="fewer than one batch of 128"):
        data.train_batches(128, torch.Generator())
    with pytest.raises(ValueError):
        data.train_batches(0, torch.Generator())


def test_heldout_batches_keep_the_last_partial_batch() -> None:
    data = _images(10, 1_050)
    slices = list(data.heldout_batches(1_000))
    assert slices == [slice(0, 1_000), slice(1_000, 1_050)]
    seen = torch.cat([data.heldout_labels[s] for s in slices])
    assert torch.equal(seen, torch.arange(1_050))


def test_batch_returns_raw_inputs_and_labels_on_the_device() -> None:
    data = _images(64, 8)
    index = torch.tensor([3, 1, 2])
    x, y = data.batch("train", index)
    assert x.shape == (3, 3, 4, 4) and x.dtype == torch.uint8 and y.tolist() == [3, 1, 2]
    with pytest.raises(ValueError):
        data.batch("test", index)


def test_windows_are_shifted_views() -> None:
    tokens = torch.arange(2 * 8 + 3)
    inputs, targets = windows(tokens, 8, "t")
    assert inputs.shape == targets.shape == (2, 8)
    assert inputs[1].tolist() == list(range(8, 16)) and targets[1].tolist() == list(range(9, 17))
    assert inputs.data_ptr() == tokens.data_ptr()  # views: nothing copied
    with pytest.raises(DataError, match="one window"):
        windows(torch.arange(8), 8, "tiny")


def test_subset_indices_fixed_sorted_and_bounded() -> None:
    first = subset_indices(100, 10, 0, 0, "--train-size")
    assert first is not None and torch.equal(first, subset_indices(100, 10, 0, 0, "--train-size"))
    assert torch.equal(first, first.sort().values) and first.unique().numel() == 10
    assert not torch.equal(first, subset_indices(100, 10, 1, 0, "--train-size"))
    assert subset_indices(100, None, 0, 0, "--train-size") is None
    with pytest.raises(DataError, match="--val-size 101"):
        subset_indices(100, 101, 0, 1, "--val-size")
