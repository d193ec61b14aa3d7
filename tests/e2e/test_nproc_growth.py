"""No silent divergence, no hang (docs/runtime.md §11.1): `esper-run train --nproc 2` whose rank 1 measures
otherwise exits 1 with the divergence line; a rank killed mid-epoch stops the other within the bound, and
`--resume` completes the run as an uninterrupted 2-rank run would have. Every child has a deadline."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
WAIT_S = 300
KILL_BOUND_S = 45  # gloo fails the waiting collective at once; the launcher's 1 s monitor, SIGTERM, the close
WALL_COLUMNS = ("epoch_s", "samples_per_s")  # wall time: the columns that differ between equal runs
TINY = ["--val-size", "128", "--batch-size", "64", "--no-progress", "--no-report", "--telemetry-level", "minimal"]
ARGS = ["--epochs", "3", "--train-size", "1024", "--checkpoint-every", "1", *TINY]

# Imported at start-up by every Python whose path holds it: rank 1 (and only it) records val_acc + 0.5.
SITECUSTOMIZE = """
import os
if os.environ.get("RANK") == "1":
    import attrs
    from esper.shell.epoch_numbers import EpochNumbers
    _measurements = EpochNumbers.measurements
    def _shifted(numbers, epoch):
        m = _measurements(numbers, epoch)
        return attrs.evolve(m, val_acc=m.val_acc + 0.5)
    EpochNumbers.measurements = _shifted
"""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper.shell.cli", *args], capture_output=True, text=True,
                          timeout=WAIT_S, env=env or ENV)


def test_a_rank_that_measures_otherwise_stops_the_cli_run_with_exit_1_and_the_divergence_line(tmp_path: Path):
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**ENV, "PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)}
    run = tmp_path / "run"
    done = _cli("train", "--nproc", "2", "--epochs", "2", "--train-size", "128", *TINY, "--out", str(run), env=env)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("esper-run")]
    assert lines and all(line.startswith("esper-run: ranks diverged at epochs 1: rank 1 differs from rank 0 (digest ")
                         for line in lines), done.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "aborted"


def _rank_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the launcher's children (their RANK in /proc/<pid>/environ)."""
    out = {}
    for pid in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        if "RANK" in env:
            out[int(env["RANK"])] = int(pid)
    return out


def _latest_epoch(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in WALL_COLUMNS} for row in csv.DictReader(f)]


def _kill_rank_after_first_checkpoint(run: Path, rank: int) -> tuple[int, float, str]:
    """Start a 2-rank run, SIGKILL `rank` once epoch 1's checkpoint is written (the ranks are in epoch 2);
    (the launcher's exit code, seconds from the kill to the launcher's exit, its stderr)."""
    launcher = subprocess.Popen([sys.executable, "-m", "esper.shell.cli", "train", "--nproc", "2", *ARGS,
                                 "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=ENV)
    try:
        deadline = time.monotonic() + WAIT_S
        while _latest_epoch(run) < 1:
            assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint of epoch 1"
            time.sleep(0.05)
        assert _latest_epoch(run) == 1, "the run passed epoch 2 before the kill"
        os.kill(_rank_pids(launcher.pid)[rank], signal.SIGKILL)
        killed = time.monotonic()
        _, err = launcher.communicate(timeout=WAIT_S)
        return launcher.returncode, time.monotonic() - killed, err
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_a_rank_killed_mid_epoch_stops_the_other_and_resume_completes_the_run(tmp_path: Path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    code, seconds, err = _kill_rank_after_first_checkpoint(run, rank=1)
    print(f"rank 1 killed: the launcher exited {code} {seconds:.1f} s later")
    assert seconds < KILL_BOUND_S, (code, seconds, err)
    assert code == 137 and "esper-run: rank 1 of 2 exited with 137; every rank was stopped" in err, err
    assert json.loads((run / "summary.json").read_text())["status"] in ("aborted", "interrupted")

    resumed = _cli("train", "--resume", str(run), "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert _cli("train", "--nproc", "2", *ARGS, "--out", str(reference)).returncode == 0
    assert _rows(run) == _rows(reference)  # epoch 1 written before the kill, epochs 2-3 after the resume
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
