import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from esper.shell.data import DataError, DatasetNotFound, load_task
from esper.shell.data.cifar import RestrictedUnpickler, restricted_load

BATCHES = [f"data_batch_{k}" for k in range(1, 6)]


def _arrays(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), [int(v) for v in rng.integers(0, 10, n)]


def _write_py(root: Path, *, protocol: int = 2, per_batch: int = 4, n_test: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k, name in enumerate([*BATCHES, "test_batch"]):
        data, labels = _arrays(n_test if name == "test_batch" else per_batch, k)
        # Bytes keys: what the original Python 2 pickles decode to with encoding="bytes".
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(len(labels))]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return folder


def _write_bin(root: Path, per_batch: int = 3, n_test: int = 5) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for k, name in enumerate([*BATCHES, "test_batch"]):
        data, labels = _arrays(n_test if name == "test_batch" else per_batch, k)
        records = np.concatenate([np.asarray(labels, np.uint8)[:, None], data], axis=1)
        (folder / f"{name}.bin").write_bytes(records.tobytes())
    return folder


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_python_layout(tmp_path: Path, protocol: int) -> None:
    _write_py(tmp_path, protocol=protocol)
    data = load_task("cifar10", device="cpu", data_dir=tmp_path)
    assert data.train_inputs.shape == (20, 3, 32, 32) and data.train_inputs.dtype == torch.uint8
    assert data.heldout_inputs.shape == (6, 3, 32, 32)
    first, labels = _arrays(4, 0)
    assert torch.equal(data.train_inputs[0], torch.from_numpy(first[0].reshape(3, 32, 32)))
    assert data.train_labels[:4].tolist() == labels
    assert data.source.kind == "local" and data.source.id_or_path.endswith("cifar-10-batches-py")
    normalisation = data.source.normalisation
    assert normalisation is not None and normalisation.mean == (0.4914, 0.4822, 0.4465)


def test_binary_layout_and_deep_preset(tmp_path: Path) -> None:
    _write_bin(tmp_path)
    data = load_task("cifar10-deep", device="cpu", data_dir=tmp_path / "cifar-10-batches-bin")
    assert (data.n_train, data.n_heldout) == (15, 5)
    first, labels = _arrays(3, 0)
    assert torch.equal(data.train_inputs[0], torch.from_numpy(first[0].reshape(3, 32, 32)))
    assert data.train_labels[:3].tolist() == labels and data.source.preset == "cifar10-deep"


def test_bad_binary_size_is_an_error(tmp_path: Path) -> None:
    folder = _write_bin(tmp_path)
    (folder / "test_batch.bin").write_bytes(b"\0" * 3000)
    with pytest.raises(DataError, match="3073-byte records"):
        load_task("cifar10", device="cpu", data_dir=tmp_path)


class _Exploit:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))

    def __init__(self, marker: Path) -> None:
        self.marker = marker


def test_restricted_unpickler_refuses_code_and_never_runs_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = tmp_path / "data_batch_1"
    payload.write_bytes(pickle.dumps({b"data": _Exploit(marker)}, protocol=2))
    with pytest.raises(DataError, match="refusing to load global"):
        restricted_load(payload)
    assert not marker.exists()
    for module, name in [("builtins", "eval"), ("posix", "system"), ("numpy", "load")]:
        with pytest.raises(pickle.UnpicklingError):
            RestrictedUnpickler.find_class(RestrictedUnpickler.__new__(RestrictedUnpickler), module, name)


def test_a_hostile_batch_in_the_layout_fails_the_load(tmp_path: Path) -> None:
    folder = _write_py(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(DataError, match=r"(posix|os)\.system"):
        load_task("cifar10", device="cpu", data_dir=tmp_path)
    assert not marker.exists()


def test_save_to_disk_folder(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def split(n: int) -> object:
        images = list(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
        return datasets.Dataset.from_dict({"img": images, "label": list(range(n))}, features=features)

    train, test = split(6), split(4)
    datasets.DatasetDict(train=train, test=test).save_to_disk(str(tmp_path / "cifar10"))
    data = load_task("cifar10", device="cpu", data_dir=tmp_path)
    assert (data.n_train, data.n_heldout) == (6, 4) and data.train_labels.tolist() == list(range(6))
    expected = np.asarray(train.with_format("numpy")["img"][0]).transpose(2, 0, 1)
    assert np.array_equal(data.train_inputs[0].numpy(), expected)
    assert data.source.kind == "local"


def test_not_found_names_the_places_the_online_call_and_the_synth_tasks(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_task("cifar10", device="cpu", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert f"--data-dir {tmp_path}" in message and "HF cache" in message
    assert 'datasets.load_dataset("uoft-cs/cifar10")' in message and "synth-images" in message


def test_hub_is_tried_after_the_cache_unless_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from esper.shell.data import hf

    calls: list[bool] = []

    def fake_load_hub(repo: str, *, cache_only: bool) -> object:
        calls.append(cache_only)
        raise hf.HubUnavailable("not cached" if cache_only else "no network")

    monkeypatch.setattr(hf, "load_hub", fake_load_hub)
    monkeypatch.setattr(hf, "hub_resolves", lambda host: True)
    with pytest.raises(DatasetNotFound, match="not cached"):
        load_task("cifar10", device="cpu")
    assert calls == [True]  # HF_HUB_OFFLINE=1: the cache only
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    calls.clear()
    with pytest.raises(DatasetNotFound, match="online: no network"):
        load_task("cifar10", device="cpu")
    assert calls == [True, False]


def test_no_dns_fails_at_once_and_the_hub_client_logs_nothing(monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Offline without HF_HUB_OFFLINE: one error, no 25 s of logged retries (`esper-run train`
    prints exactly one line)."""
    import logging
    import socket

    from esper.shell.data import hf

    calls: list[bool] = []

    def fake_load_hub(repo: str, *, cache_only: bool) -> object:
        calls.append(cache_only)
        if not cache_only:
            logging.getLogger("huggingface_hub.utils._http").warning("thrown while requesting HEAD")
        raise hf.HubUnavailable("not cached" if cache_only else "unreachable")

    def no_dns(*args: object) -> None:
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(hf, "load_hub", fake_load_hub)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DatasetNotFound, match=r"online: cannot resolve huggingface\.co \(no network\?\)"):
        load_task("cifar10", device="cpu")
    assert calls == [True]
    monkeypatch.setattr(hf, "hub_resolves", lambda host: True)
    calls.clear()
    hub_logger = logging.getLogger("huggingface_hub")
    before = hub_logger.level
    with pytest.raises(DatasetNotFound, match="online: unreachable"):
        load_task("cifar10", device="cpu")
    assert calls == [True, False] and hub_logger.level == before
    assert not [r for r in caplog.records if "thrown while requesting" in r.getMessage()]


def test_the_tasks_listing_reads_local_data_only(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`esper-run tasks` says what is here; with the network up it still must not download."""
    import os

    from esper.shell.data import hf
    from esper.shell.evaluate import list_tasks

    calls: list[bool] = []

    def fake_load_hub(repo: str, *, cache_only: bool) -> object:
        calls.append(cache_only)
        raise hf.HubUnavailable("not cached")

    monkeypatch.setattr(hf, "load_hub", fake_load_hub)
    monkeypatch.setattr(hf, "hub_resolves", lambda host: True)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    list_tasks()
    assert calls and set(calls) == {True}
    assert "HF_HUB_OFFLINE" not in os.environ
    assert "cifar10-deep" in capsys.readouterr().out
