import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from esper.core import codec
from esper.shell.data import DataError, DatasetNotFound, fashion_mnist, load_task

REAL_DEBIAN_DIR = fashion_mnist.DEBIAN_DIR  # read at import, before any fixture patches it


def _write_idx(folder: Path, n_train: int = 30, n_test: int = 20, *, seed: int = 0,
               image_magic: int = 2051, label_magic: int = 2049, side: int = 28,
               truncate_train_images: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = rng.integers(0, 256, (n, side, side), dtype=np.uint8).tobytes()
        if truncate_train_images and prefix == "train":
            pixels = pixels[:-5]
        labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", image_magic, n, side, side) + pixels))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", label_magic, n) + labels))
    return folder


def test_loads_idx_files_from_data_dir(tmp_path: Path) -> None:
    folder = _write_idx(tmp_path / "fm")
    data = load_task("fashion-mnist", device="cpu", data_dir=folder)
    assert data.train_inputs.shape == (30, 1, 28, 28) and data.train_inputs.dtype == torch.uint8
    assert data.heldout_inputs.shape == (20, 1, 28, 28)
    assert data.train_labels.tolist() == [i % 10 for i in range(30)]
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as handle:
        first = np.frombuffer(handle.read()[16:16 + 784], dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(data.train_inputs[0, 0].numpy(), first)
    record = codec.encode(data.source)
    assert (record["kind"], record["id_or_path"], record["n_train"], record["n_heldout"]) == (
        "local", str(folder), 30, 20)
    assert record["normalisation"] == {"mean": [0.286], "std": [0.353]}
    transformed = data.prepare_batch(data.train_inputs[:4], True, torch.Generator().manual_seed(0))
    assert transformed.shape == (4, 1, 28, 28) and transformed.dtype == torch.float32


def test_lookup_order_data_dir_then_debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = _write_idx(tmp_path / "debian", n_train=12, seed=1)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", debian)
    local = _write_idx(tmp_path / "local" / "fashion-mnist", n_train=14, seed=2)
    from_local = load_task("fashion-mnist", device="cpu", data_dir=tmp_path / "local")
    assert from_local.source.kind == "local" and from_local.n_train == 14
    assert from_local.source.id_or_path == str(local)
    from_debian = load_task("fashion-mnist", device="cpu")
    assert from_debian.source.kind == "debian" and from_debian.n_train == 12
    # An empty --data-dir falls through to the next place in the order.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_task("fashion-mnist", device="cpu", data_dir=empty).source.kind == "debian"


def test_not_found_names_every_place_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_task("fashion-mnist", device="cpu", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"--data-dir {tmp_path}" in message
    assert str(fashion_mnist.DEBIAN_DIR) in message and "HF cache" in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"image_magic": 2049}, "magic 2049, expected 2051"),
    ({"label_magic": 2051}, "magic 2051, expected 2049"),
    ({"truncate_train_images": True}, "header says 30 images"),
    ({"side": 27}, "27×27, expected 28×28"),
])
def test_bad_files_are_errors_not_fallbacks(tmp_path: Path, kwargs: dict, match: str) -> None:
    folder = _write_idx(tmp_path / "bad", **kwargs)
    with pytest.raises(DataError, match=match):
        load_task("fashion-mnist", device="cpu", data_dir=folder)


def test_label_count_mismatch_and_non_gzip(tmp_path: Path) -> None:
    folder = _write_idx(tmp_path / "fm")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 2049, 3) + b"\0\1\2"))
    with pytest.raises(DataError, match="20 heldout images but 3 labels"):
        load_task("fashion-mnist", device="cpu", data_dir=folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        load_task("fashion-mnist", device="cpu", data_dir=folder)


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DEBIAN_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_debian_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", REAL_DEBIAN_DIR)
    data = load_task("fashion-mnist", device="cpu")
    assert data.source.kind == "debian"
    assert (data.n_train, data.n_heldout) == (60_000, 10_000)
    assert torch.bincount(data.train_labels).tolist() == [6_000] * 10
    pixels = data.train_inputs.float() / 255
    assert float(pixels.mean()) == pytest.approx(0.2860, abs=5e-4)
    assert float(pixels.std()) == pytest.approx(0.3530, abs=5e-4)


def test_hf_cache_is_last_and_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    from esper.shell.data import hf

    rng = np.random.default_rng(0)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def split(n: int) -> object:
        images = list(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        return datasets.Dataset.from_dict({"image": images, "label": [i % 10 for i in range(n)]},
                                          features=features)

    calls: list[tuple[str, bool]] = []
    cached = datasets.DatasetDict(train=split(12), test=split(5))

    def fake_load_hub(repo: str, *, cache_only: bool) -> object:
        calls.append((repo, cache_only))
        return cached

    monkeypatch.setattr(hf, "load_hub", fake_load_hub)
    data = load_task("fashion-mnist", device="cpu")
    assert calls == [("zalando-datasets/fashion_mnist", True)]
    assert (data.source.kind, data.source.id_or_path) == ("hf", "zalando-datasets/fashion_mnist")
    assert data.train_inputs.shape == (12, 1, 28, 28) and data.n_heldout == 5
    expected = np.asarray(cached["train"].with_format("numpy")["image"][0])
    assert np.array_equal(data.train_inputs[0, 0].numpy(), expected)

    # The decoded arrays are cached under the source fingerprint: no second decode.
    monkeypatch.setattr(hf, "images_nchw", lambda *_: pytest.fail("decoded twice"))
    assert load_task("fashion-mnist", device="cpu").source == data.source
