"""Bad checkpoints on `--resume`: one line on stderr, exit 2, nothing in the run directory lost."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from esper.shell.cli import main

SMALL = ["--train-size", "256", "--val-size", "128", "--batch-size", "64", "--no-progress",
         "--telemetry-level", "off"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), *SMALL]) == 0
    return out


def _resume(target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper.shell.cli", "train", "--resume", str(target)],
                          capture_output=True, text=True, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-run: error:") and needle in lines[0], lines
    assert "Traceback" not in result.stderr


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(run), str(target)], check=True)
    return target


def test_resume_of_a_finished_run_has_nothing_to_do(finished_run):
    result = _resume(finished_run)
    assert result.returncode == 0 and "nothing to do: 2/2 epochs done" in result.stdout


def test_missing_checkpoint(tmp_path):
    _one_line_error(_resume(tmp_path / "nowhere.pt"), "checkpoint not found")


def test_truncated_checkpoint(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    final = run / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    _one_line_error(_resume(final), "final.pt")
    assert (run / "summary.json").exists() and (run / "metrics.csv").exists()


def test_garbage_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    _one_line_error(_resume(junk), "junk.pt")


def test_pickled_object_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    import torch

    evil, legacy = tmp_path / "evil.pt", tmp_path / "legacy.pt"
    torch.save({"format": "esper.run", "x": Payload()}, evil)  # torch's zip format
    with legacy.open("wb") as f:  # a bare pickle
        pickle.dump({"format": "esper.run", "x": Payload()}, f)
    _one_line_error(_resume(evil), "evil.pt")
    _one_line_error(_resume(legacy), "legacy.pt")
    assert not marker.exists()


def test_foreign_and_newer_checkpoints(finished_run, tmp_path):
    import torch

    data = torch.load(finished_run / "checkpoints" / "final.pt", weights_only=True)
    foreign, newer = tmp_path / "foreign.pt", tmp_path / "newer.pt"
    torch.save({"format": "something-else"}, foreign)
    torch.save({**data, "schema_version": 99}, newer)
    _one_line_error(_resume(foreign), "not an esper run checkpoint")
    _one_line_error(_resume(newer), "schema 99")
