"""Ctrl-C (SIGINT) and a scheduler's SIGTERM close a run as interrupted at its last finished epoch;
`--resume` then reproduces the uninterrupted run (docs/runtime.md §7).

Each run is a child `esper-run train` process signalled while it trains; every wait has a deadline,
so a test can fail but never hang.
"""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SMALL = ["--train-size", "1024", "--val-size", "256", "--batch-size", "64", "--no-progress", "--no-report",
         "--telemetry-level", "minimal"]
EPOCHS = 6
# A static seed trains from epoch 1, so seed state crosses every interruption; no periodic checkpoint:
# the closing one is the only resume point.
ARGS = ["--epochs", str(EPOCHS), *SMALL, "--controller", "static", "--static-seeds", "late:conv_light",
        "--checkpoint-every", "100"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
WAIT_S = 300
WALL_COLUMNS = ("epoch_s",)  # wall time: the only metrics.csv column that differs between equal runs


def sigint_as_at_a_terminal() -> None:
    """preexec_fn of a child to be sent SIGINT: Ctrl-C's default disposition, whatever the test runner's. A shell
    starts a background job (`make test &`, nohup, some CI runners) with SIGINT ignored and children inherit
    that, so esper-run, rightly keeping an ignored SIGINT ignored, would never see the signal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "esper.shell.cli", *args]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=WAIT_S, env=ENV)


def _rows(path: Path) -> int:
    """Complete data rows of a CSV being appended to (a torn last line is not counted)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    return max(text.count("\n") - 1, 0)


def _started(run: Path) -> bool:
    events = run / "events.jsonl"
    return events.exists() and '"run.start"' in events.read_text(encoding="utf-8")


def interrupt(run: Path, args: list[str], *, sig: int, after_rows: int, delay_s: float = 0.0,
              csv_name: str = "metrics.csv") -> subprocess.CompletedProcess:
    """Start (or resume, with args `--resume RUN`) a run, wait until it has driven and written
    `after_rows` result rows, wait `delay_s` more, send `sig`, and return the finished process."""
    with (run.parent / f"{run.name}.stderr").open("w+") as err:
        child = subprocess.Popen(_cli("train", *args), stdout=subprocess.DEVNULL, stderr=err, env=ENV, text=True,
                                 preexec_fn=sigint_as_at_a_terminal)
        try:
            deadline = time.monotonic() + WAIT_S
            while not (_started(run) and _rows(run / csv_name) >= after_rows):
                assert child.poll() is None, f"the run ended before row {after_rows}"
                assert time.monotonic() < deadline, f"no row {after_rows} after {WAIT_S}s"
                time.sleep(0.02)
            time.sleep(delay_s)
            child.send_signal(sig)
            child.wait(timeout=WAIT_S)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        err.seek(0)
        return subprocess.CompletedProcess(child.args, child.returncode, "", err.read())


def metrics(run: Path) -> list[dict[str, str]]:
    """metrics.csv's rows without wall time ([] before the first epoch ends: no file yet)."""
    if not (run / "metrics.csv").exists():
        return []
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in WALL_COLUMNS} for row in csv.DictReader(f)]


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_closed_as_interrupted(run: Path, result: subprocess.CompletedProcess, sig: int) -> int:
    """Exit 128 + sig, one stderr line, status interrupted, run.end, and `interrupted.pt` at the last
    finished epoch; returns that epoch."""
    assert result.returncode == 128 + sig, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("esper-run: interrupted"), result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "interrupted"
    end = _events(run)[-1]
    assert end["event"] == "run.end" and end["fields"]["status"] == "interrupted"
    latest = json.loads((run / "checkpoints" / "latest.json").read_text(encoding="utf-8"))
    assert latest["checkpoint"] == "interrupted.pt"
    saved = torch.load(run / "checkpoints" / "interrupted.pt", weights_only=True)
    done = saved["progress"]["epoch"]
    assert summary["epochs"] == end["fields"]["epochs"] == done
    # A signal between an epoch's row and the step's return leaves that row: the resume cuts it.
    assert len(metrics(run)) in (done, done + 1)
    return done


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    whole = tmp_path_factory.mktemp("reference") / "whole"
    result = _run("train", "--out", str(whole), *ARGS)
    assert result.returncode == 0, result.stderr
    return whole


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_mid_epoch_closes_at_the_last_finished_epoch_and_resume_is_exact(tmp_path, reference, sig):
    # The signal goes out as epoch 2's row lands: the run is then inside epoch 3, part-way.
    run = tmp_path / "run"
    result = interrupt(run, ["--out", str(run), *ARGS], sig=sig, after_rows=2)
    done = assert_closed_as_interrupted(run, result, sig)
    assert done < EPOCHS
    resumed = _run("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert metrics(run) == metrics(reference)
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["status"] == "ok"


@pytest.mark.slow
def test_ctrl_c_and_sigterm_at_random_points_of_five_runs_resume_to_the_uninterrupted_run(tmp_path, reference):
    """Each run is signalled twice (SIGINT and SIGTERM, in a random order, after a random number of
    rows plus a random part of an epoch), then resumed to its end; its metrics.csv equals the
    uninterrupted run's but for wall time."""
    rng = random.Random(15)
    epoch_s = max(float(r["epoch_s"]) for r in csv.DictReader((reference / "metrics.csv").open()))
    for i in range(5):
        run = tmp_path / f"run{i}"
        signals = rng.sample([signal.SIGINT, signal.SIGTERM], 2)
        # Row counts and delays keep each signal inside the training (a signal during the closing of a
        # finished run is not what this test is about).
        first = rng.randrange(0, EPOCHS - 2)
        points = [(signals[0], first, rng.uniform(0, 0.8 * epoch_s)),
                  (signals[1], rng.randrange(first + 1, EPOCHS - 1), rng.uniform(0, 0.8 * epoch_s))]
        args = ["--out", str(run), *ARGS]
        for sig, rows, delay in points:
            print(f"run {i}: {signal.Signals(sig).name} after {rows} rows + {delay:.2f}s")  # shown on failure
            result = interrupt(run, args, sig=sig, after_rows=rows, delay_s=delay)
            if result.returncode == 0:
                break  # the run ended before the signal (the last epoch was short): nothing to resume
            assert_closed_as_interrupted(run, result, sig)
            args = ["--resume", str(run)]
        if args[0] == "--resume":
            resumed = _run("train", *args)
            assert resumed.returncode == 0, f"run {i}: {resumed.stderr}"
        assert metrics(run) == metrics(reference), f"run {i}: {points}"
