"""docs/runtime.md §5.7: the device-resident and the streamed data paths give the same batches, in the
same order, and the same training numbers; the data budget decides which path a task takes.

Tolerance of the loss comparison: none (bitwise). On the CPU both paths feed the model byte-identical
uint8 batches in the same order, augmented by the same generator on the device, through the same
deterministic kernels, so every float is computed the same way; a difference would be a real bug
(a batch read out of order, an RNG draw the other path does not make), not rounding.
"""

import sys
import types

import numpy as np
import pytest
import torch

from esper.core.tasks import task_preset
from esper.shell.data import DataSource, Normalisation, load_task
from esper.shell.data.budget import DEFAULT_FRACTION, available_ram, data_budget_bytes
from esper.shell.data.image_source import ArraySource, nbytes
from esper.shell.data.loading import image_task_data
from esper.shell.data.streamed import LoaderSettings, worker_start
from esper.shell.data.taskdata import TaskData
from esper.shell.run_config import RunConfig, parse_bytes
from esper.shell.trainer import Trainer

SIZES = {"train_size": 320, "val_size": 96}


@pytest.fixture(scope="module")
def synth_splits() -> tuple[DataSource, dict[str, ArraySource]]:
    """synth-images (a subset), generated once: its record and its splits as in-memory sources."""
    data = load_task("synth-images", device="cpu", **SIZES)
    return data.source, {split: ArraySource(getattr(data, f"{split}_inputs").numpy(),
                                            getattr(data, f"{split}_labels").numpy()) for split in ("train", "heldout")}


def _synth(splits: tuple[DataSource, dict[str, ArraySource]], budget: int | None, workers: int = 0) -> TaskData:
    source, arrays = splits
    return image_task_data(task_preset("synth-images"), source, arrays, torch.device("cpu"), budget=budget,
                           loader=LoaderSettings(workers=workers))


def _fashion_like(_splits: object, budget: int | None, workers: int = 0) -> TaskData:
    """fashion-mnist's preset (1×28×28, 10 classes) over random images: its real files are not needed."""
    rng = np.random.default_rng(7)
    splits = {split: ArraySource(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8),
                                 rng.integers(0, 10, n).astype(np.int64))
              for split, n in (("train", 256), ("heldout", 80))}
    source = DataSource(preset="fashion-mnist", kind="procedural", id_or_path="test", fingerprint="f", sha256="s",
                        n_train=256, n_heldout=80, subset=True,
                        normalisation=Normalisation(mean=(0.5,), std=(0.25,)))
    return image_task_data(task_preset("fashion-mnist"), source, splits, torch.device("cpu"), budget=budget,
                           loader=LoaderSettings(workers=workers))


TASKS = {"synth-images": _synth, "fashion-mnist-like": _fashion_like}


def _epoch(data: TaskData, seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(index, x, y) of one epoch's training batches."""
    generator = torch.Generator().manual_seed(seed)
    indices = list(data.train_batches(64, generator))
    return [(index, x, y) for index, (x, y) in zip(indices, data.batches("train", indices), strict=True)]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("workers", [0, 2])
def test_both_paths_read_the_same_batches_index_for_index(task, workers, synth_splits):
    resident, streamed = TASKS[task](synth_splits, None), TASKS[task](synth_splits, 0, workers)
    assert (resident.path, streamed.path) == ("resident", "streamed")
    assert streamed.train_inputs.device.type == "meta" and streamed.n_train == resident.n_train
    for seed in (0, 1):  # two epochs' orders: the loader's sampler is refilled, never reshuffled
        ours, theirs = _epoch(resident, seed), _epoch(streamed, seed)
        assert len(ours) == len(theirs) == resident.n_train // 64  # the last partial batch dropped on both
        for (i, x, y), (j, sx, sy) in zip(ours, theirs, strict=True):
            assert torch.equal(i, j) and torch.equal(x, sx) and torch.equal(y, sy)
            assert torch.equal(x, resident.train_inputs[i])  # the row each index names
    chunks = list(resident.heldout_batches(40))
    pairs = zip(resident.batches("heldout", chunks), streamed.batches("heldout", chunks), strict=True)
    assert all(torch.equal(x, sx) and torch.equal(y, sy) for (x, y), (sx, sy) in pairs)
    assert torch.equal(streamed.batch("heldout", slice(3, 9))[0], resident.heldout_inputs[3:9])
    streamed.streamed.close()


def test_with_jax_loaded_workers_start_from_a_forkserver_and_read_the_same_batches(synth_splits, monkeypatch):
    """JAX's threads do not survive a fork (esper.core.xp imports it for interop): the workers start from
    a forkserver then, with the sources pickled, and still read the resident path's batches."""
    monkeypatch.setitem(sys.modules, "jax", sys.modules.get("jax") or types.ModuleType("jax"))
    assert worker_start() == "forkserver"
    resident, streamed = TASKS["synth-images"](synth_splits, None), TASKS["synth-images"](synth_splits, 0, 2)
    ours, theirs = _epoch(resident, 0), _epoch(streamed, 0)
    assert streamed.streamed._loaders["train"][0].multiprocessing_context.get_start_method() == "forkserver"
    assert all(torch.equal(x, sx) and torch.equal(y, sy) for (_, x, y), (_, sx, sy) in zip(ours, theirs, strict=True))
    streamed.streamed.close()
    monkeypatch.delitem(sys.modules, "jax")
    assert worker_start() is None  # fork: no pickling of the sources


def _first_epoch(data: TaskData, task: str) -> tuple[tuple[float, ...], list[torch.Tensor], torch.Tensor]:
    cfg = RunConfig(task="synth-images" if task == "synth-images" else "fashion-mnist", epochs=2, batch_size=64)
    torch.manual_seed(0)
    trainer = Trainer(cfg, data, torch.device("cpu"))
    result = trainer.run_epoch()
    numbers = (result.train_loss, result.train_acc, result.val_loss, result.val_acc)
    return numbers, [p.detach().clone() for p in trainer.model.parameters()], torch.get_rng_state()


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("workers", [0, 2])
def test_the_first_epoch_trains_to_bitwise_equal_numbers_and_leaves_the_generators_alike(task, workers,
                                                                                        synth_splits):
    resident, streamed = TASKS[task](synth_splits, None), TASKS[task](synth_splits, 0, workers)
    numbers, weights, rng = _first_epoch(resident, task)
    s_numbers, s_weights, s_rng = _first_epoch(streamed, task)
    assert numbers == s_numbers
    assert all(torch.equal(a, b) for a, b in zip(weights, s_weights, strict=True))
    assert torch.equal(rng, s_rng), "the loader drew from torch's global generator"
    streamed.streamed.close()


def test_data_that_fits_the_budget_stays_resident_and_a_byte_more_streams(synth_splits):
    size = sum(nbytes(split) for split in synth_splits[1].values())
    assert size == (320 + 96) * (3 * 32 * 32 + 8)
    assert _synth(synth_splits, size).path == "resident"
    assert _synth(synth_splits, size - 1).path == "streamed"
    assert load_task("synth-stories", device="cpu", train_size=8, val_size=4, block_size=16,
                     data_budget=0).path == "resident"  # text stays resident (docs/runtime.md §5.7)


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("4096", 4096), ("512K", 512 << 10), ("1.5M", 3 << 19), ("2G", 2 << 30), ("2gib", 2 << 30),
    ("1T", 1 << 40), (" 3 MB ", 3 << 20),
])
def test_sizes_parse_with_binary_suffixes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "G", "2X", "1e9", "two", "1.2.3"])
def test_a_size_that_is_not_one_is_refused(text):
    with pytest.raises(ValueError, match="not a size in bytes"):
        parse_bytes(text)


def test_the_default_budget_is_a_fraction_of_free_memory(monkeypatch):
    assert data_budget_bytes("cpu", 123) == 123 and data_budget_bytes("cuda", 0) == 0  # a flag wins, unprobed
    ram = available_ram()
    assert ram > 0 and abs(data_budget_bytes("cpu", None) - ram * DEFAULT_FRACTION) < 0.05 * ram
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (8 << 30, 80 << 30))
    assert data_budget_bytes(torch.device("cuda:0"), None) == int((8 << 30) * DEFAULT_FRACTION)


@pytest.mark.gpu
def test_on_a_gpu_the_streamed_path_feeds_the_batches_of_the_resident_one():
    cuda = torch.device("cuda")
    resident = load_task("synth-images", device=cuda, **SIZES)
    streamed = load_task("synth-images", device=cuda, **SIZES, data_budget=0, loader=LoaderSettings(workers=2))
    ours, theirs = _epoch(resident, 0), _epoch(streamed, 0)
    for (i, x, y), (j, sx, sy) in zip(ours, theirs, strict=True):
        assert torch.equal(i.cpu(), j) and torch.equal(x, sx) and torch.equal(y, sy) and sx.device.type == "cuda"
    streamed.streamed.close()
