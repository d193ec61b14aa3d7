"""docs/runtime.md §5.7: for any split size, batch size, epoch seed and rank count, the streamed path
reads exactly the resident path's batches (train: each rank's shard of every full batch of one
`randperm`; held-out: every sample once, in order), and sizes parse to their binary multiples."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.core.tasks import task_preset
from esper.shell.data import DataSource, Normalisation
from esper.shell.data.image_source import ArraySource
from esper.shell.data.loading import image_task_data
from esper.shell.data.taskdata import TaskData
from esper.shell.data_parallel import shard_rows, shard_slice
from esper.shell.dist import Ranks
from esper.shell.run_config import parse_bytes

PRESET = task_preset("synth-images")


def _paths(n_train: int, n_heldout: int) -> tuple[TaskData, TaskData]:
    rng = np.random.default_rng(n_train * 1000 + n_heldout)
    splits = {split: ArraySource(rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8), rng.integers(0, 10, n))
              for split, n in (("train", n_train), ("heldout", n_heldout))}
    source = DataSource(preset=PRESET.name, kind="procedural", id_or_path="p", fingerprint="f", sha256="s",
                        n_train=n_train, n_heldout=n_heldout, subset=True,
                        normalisation=Normalisation(mean=(0.5,) * 3, std=(0.25,) * 3))
    resident = image_task_data(PRESET, source, splits, torch.device("cpu"), budget=None)
    return resident, image_task_data(PRESET, source, splits, torch.device("cpu"), budget=0)


@settings(deadline=None)
@given(st.integers(1, 60), st.integers(1, 30), st.integers(1, 16), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_the_streamed_path_reads_the_resident_batches(n_train, n_heldout, batch, seed, world):
    if n_train < batch:
        n_train = batch  # a split smaller than one batch is refused on both paths alike
    resident, streamed = _paths(n_train, n_heldout)
    for rank in range(world):
        ranks = Ranks(rank=rank, world=world) if world > 1 else Ranks()
        shards = [[shard_rows(i, ranks) for i in d.train_batches(batch, torch.Generator().manual_seed(seed))]
                  for d in (resident, streamed)]
        assert all(torch.equal(a, b) for a, b in zip(*shards, strict=True))
        pairs = zip(resident.batches("train", shards[0]), streamed.batches("train", shards[1]), strict=True)
        assert all(torch.equal(x, sx) and torch.equal(y, sy) for (x, y), (sx, sy) in pairs)
        held = [shard_slice(c, ranks) for c in resident.heldout_batches(batch)]
        pairs = zip(resident.batches("heldout", held), streamed.batches("heldout", held), strict=True)
        assert all(torch.equal(x, sx) and torch.equal(y, sy) for (x, y), (sx, sy) in pairs)


@given(st.integers(0, 2**20), st.sampled_from([("", 1), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)]),
       st.sampled_from(["", "B", "iB"]))
def test_sizes_parse_to_their_binary_multiples(n, unit, tail):
    suffix, factor = unit
    assert parse_bytes(f"{n}{suffix}{tail if suffix or tail == 'B' else ''}") == n * factor
