"""The run directory under concurrency and failed starts (issue 15, defects 2, 6, 7): one writer at a
time (an OS lock a killed owner does not leave behind), nothing written by a start that fails
validation, a start that never reached a checkpoint restarted rather than stuck, and a resume without
config.json refused in one line."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esper.shell.cli import main

SMALL = ["--train-size", "256", "--val-size", "128", "--batch-size", "64", "--no-progress", "--no-report"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper.shell.cli", *args], capture_output=True, text=True,
                          timeout=300, env=ENV)


def _background(*args: str) -> subprocess.Popen:
    """A long run in the background, at low priority so the runs the test waits for get the CPU."""
    return subprocess.Popen([sys.executable, "-m", "esper.shell.cli", "train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV, preexec_fn=lambda: os.nice(15))


def _one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-run: error:") and needle in lines[0], lines


def _epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open(newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _events(run: Path) -> list[str]:
    return [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]


def _wait_for(child: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 240
    while not ready():
        assert child.poll() is None, f"the first run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.05)


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)


def test_a_second_writer_is_refused_and_a_killed_owner_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "run"
    # No checkpoint while it runs: without the lock a second start would take the directory for a dead one.
    first = _background("--out", str(run), "--epochs", "500", "--checkpoint-every", "1000", *SMALL)
    try:
        _wait_for(first, lambda: (run / "metrics.csv").exists() and len(_epochs(run)) >= 1, "metrics row")
        _one_line_error(_run("train", "--out", str(run), "--epochs", "2", *SMALL), "in use by another run")
        _one_line_error(_run("train", "--resume", str(run), "--epochs", "2"), "in use by another run")
        assert first.poll() is None and (run / "config.json").exists() and _events(run)[0] == "run.start"
    finally:
        _kill(first)
    # The killed owner's lock went with it; it never checkpointed, so the resume starts it afresh.
    resumed = _run("train", "--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "never reached a checkpoint: starting it afresh" in resumed.stdout
    assert _epochs(run) == [1, 2] and _events(run).count("run.start") == 1 and _events(run)[-1] == "run.end"
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"


def test_a_killed_owner_with_a_checkpoint_is_resumed(tmp_path):
    run = tmp_path / "run"
    first = _background("--out", str(run), "--epochs", "500", "--checkpoint-every", "1", *SMALL,
                        "--telemetry-level", "off")
    try:
        _wait_for(first, lambda: (run / "checkpoints" / "latest.json").exists(), "checkpoint")
    finally:
        _kill(first)
    done = json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"]
    resumed = _run("train", "--resume", str(run), "--epochs", str(done + 1))
    assert resumed.returncode == 0, resumed.stderr
    assert _epochs(run) == list(range(1, done + 2))


@pytest.mark.parametrize("args", [
    ["--slots", "early,bogus"],
    ["--controller", "static", "--static-seeds", "mid:nosuchbp"],
    ["--controller", "ppo", "--policy", "{empty}"],
], ids=["slots", "static-seeds", "policy"])
def test_a_start_that_fails_validation_writes_nothing(tmp_path, args, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    args = [a.format(empty=tmp_path / "empty") for a in args]
    assert main(["train", "--out", str(out), "--epochs", "2", *SMALL, *args]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()
    assert list((tmp_path / "empty").iterdir()) == []


def _never_checkpointed(tmp_path: Path) -> Path:
    """A run as a kill before its first checkpoint leaves it: config.json, events, metrics rows."""
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "2", *SMALL]) == 0
    for path in [*(run / "checkpoints").iterdir(), run / "summary.json"]:
        path.unlink()
    return run


@pytest.mark.parametrize("how", ["same --out", "--resume"])
def test_a_start_that_never_checkpointed_starts_afresh(tmp_path, how, capsys):
    run = _never_checkpointed(tmp_path)
    run_id = json.loads((run / "config.json").read_text())["run_id"]
    again = ["--out", str(run), "--epochs", "3", *SMALL] if how == "same --out" else ["--resume", str(run)]
    assert main(["train", *again]) == 0
    assert "never reached a checkpoint: starting it afresh" in capsys.readouterr().out
    assert _epochs(run) == ([1, 2, 3] if how == "same --out" else [1, 2])
    assert _events(run).count("run.start") == 1 and not (run / "events.discarded.jsonl").exists()
    assert (json.loads((run / "config.json").read_text())["run_id"] == run_id) == (how == "--resume")


def test_a_directory_with_files_a_run_does_not_write_is_never_cleared(tmp_path, capsys):
    run = _never_checkpointed(tmp_path)
    (run / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(run), "--epochs", "2", *SMALL]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "mine" and (run / "metrics.csv").exists()


def test_resume_without_config_json_is_one_line_and_exit_2(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--epochs", "2", *SMALL, "--telemetry-level", "off"]) == 0
    (run / "config.json").unlink()
    _one_line_error(_run("train", "--resume", str(run), "--epochs", "3"), "has no config.json")
    _one_line_error(_run("train", "--resume", str(run / "checkpoints" / "final.pt"), "--epochs", "3"),
                    "has no config.json")
    assert _epochs(run) == [1, 2]
