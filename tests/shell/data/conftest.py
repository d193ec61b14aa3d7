from pathlib import Path

import pytest

from esper.shell.data import TaskData, fashion_mnist, load_task


@pytest.fixture(autouse=True)
def isolated_data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test reads the machine's caches, the network or an installed Debian dataset."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian-package")
    return cache


@pytest.fixture(scope="session")
def synth_images_task() -> TaskData:
    """The default task at its real sizes (8,000 + 2,000), generated once per session."""
    return load_task("synth-images", device="cpu")
