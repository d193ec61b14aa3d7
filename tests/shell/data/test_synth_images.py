from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from esper.core import codec
from esper.shell.data import DataSource, ImageTransform, TaskData, load_task
from esper.shell.data import synth_images as si
from esper.shell.nets.hosts import host_for


def _small(data_seed: int, split: str = "train", n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    return si.generate(n, si.split_generator(data_seed, split))


def test_same_seed_same_bytes_other_seed_or_split_other_bytes() -> None:
    x0, y0 = _small(0)
    x0_again, y0_again = _small(0)
    assert torch.equal(x0, x0_again) and torch.equal(y0, y0_again)
    x1, _ = _small(1)
    heldout, _ = _small(0, "heldout")
    assert not torch.equal(x0, x1)
    assert not torch.equal(x0, heldout)


def test_generation_uses_no_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    x_a, _ = _small(0, n=20)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    x_b, _ = _small(0, n=20)
    assert torch.equal(x_a, x_b)


def test_shape_dtype_and_balanced_labels() -> None:
    x, y = _small(3, n=250)
    assert x.shape == (250, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [25] * 10
    assert 20 < float(x.float().std()) < 100  # neither blank nor saturated


def test_chunks_render_like_one_block() -> None:
    """The bytes do not depend on the rendering block size (only the draws matter)."""
    generator = si.split_generator(0, "train")
    labels = torch.arange(40) % 10
    reference = si._render_chunk(labels, generator)
    original = si._RENDER_BLOCK
    try:
        si._RENDER_BLOCK = 7
        again = si._render_chunk(labels, si.split_generator(0, "train"))
    finally:
        si._RENDER_BLOCK = original
    assert torch.equal(reference, again)


def test_full_task_and_its_source_record(synth_images_task: TaskData) -> None:
    data = synth_images_task
    assert data.train_inputs.shape == (8_000, 3, 32, 32) and data.train_inputs.dtype == torch.uint8
    assert data.heldout_inputs.shape == (2_000, 3, 32, 32)
    assert torch.bincount(data.train_labels).tolist() == [800] * 10
    assert torch.bincount(data.heldout_labels).tolist() == [200] * 10
    record = codec.encode(data.source)
    assert record["preset"] == "synth-images" and record["kind"] == "procedural"
    assert record["id_or_path"] == "synth-images/v1"
    assert (record["n_train"], record["n_heldout"], record["subset"]) == (8_000, 2_000, False)
    mean, std = si.channel_stats(data.train_inputs)
    assert record["normalisation"] == {"mean": list(mean), "std": list(std)}
    assert all(0.2 < m < 0.8 for m in mean) and all(0.1 < s < 0.4 for s in std)
    assert record["tokenizer"] is None and len(record["sha256"]) == 64
    assert codec.decode(DataSource, record) == data.source


def test_sha256_stable_across_loads_and_changed_by_data_seed(synth_images_task: TaskData) -> None:
    again = load_task("synth-images", device="cpu")
    assert again.source == synth_images_task.source  # same bytes, same record
    other_seed = load_task("synth-images", device="cpu", data_seed=1, train_size=500, val_size=100)
    assert other_seed.source.subset and (other_seed.source.n_train, other_seed.source.n_heldout) == (500, 100)
    assert other_seed.source.sha256 != again.source.sha256
    assert other_seed.source.fingerprint != again.source.fingerprint


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny convolutions run faster on one thread (and far faster on a loaded machine), and the
    result no longer depends on the thread count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@pytest.mark.usefixtures("one_thread")
def test_the_task_is_learnable() -> None:
    """A few hundred steps of the preset's 6.4K-parameter host beat chance (0.1) clearly."""
    x, y = si.generate(2_000, si.split_generator(0, "train"))
    x_test, y_test = si.generate(500, si.split_generator(0, "heldout"))
    mean, std = si.channel_stats(x)
    transform = ImageTransform(padding=0, hflip=False, mean=mean, std=std, device="cpu")
    host = host_for("synth-images", torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(host.parameters(), lr=0.01)
    draws = torch.Generator().manual_seed(0)
    inputs = transform(x, False)
    for _ in range(300):
        index = torch.randint(0, len(y), (64,), generator=draws)
        loss = F.cross_entropy(host(inputs[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    host.eval()
    with torch.no_grad():
        accuracy = (host(transform(x_test, False)).argmax(1) == y_test).float().mean()
    assert float(accuracy) > 0.18
