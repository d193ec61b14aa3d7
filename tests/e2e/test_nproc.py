"""`esper-run train --nproc N` (docs/runtime.md §9): N local ranks through torch.distributed's launcher,
rank 0 alone writing the run directory; a resume runs at the world size that wrote the run.
Every child has a deadline: a test may fail, never hang."""

import json
import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
TINY = ["--epochs", "2", "--train-size", "256", "--val-size", "128", "--batch-size", "64", "--no-progress",
        "--no-report", "--checkpoint-every", "1"]


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esper.shell.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def test_two_ranks_write_one_run_directory_and_a_resume_keeps_the_world_size(tmp_path: Path):
    run = tmp_path / "run"
    done = _cli("train", "--nproc", "2", *TINY, "--out", str(run))
    assert done.returncode == 0, done.stderr
    assert json.loads((run / "config.json").read_text())["config"]["dist"]["nproc"] == 2
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header + 2 epochs, written once
    kinds = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert kinds.count("run.end") == 1 and kinds.count("run.start") == 1
    assert done.stdout.count("done: val") == 1  # rank 0's console only

    refused = _cli("train", "--resume", str(run), "--epochs", "3")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"esper-run: error: {run} was written by 2 rank(s); resume it with --nproc 2 (or that many torchrun ranks), "
        "not 1"]


def test_a_user_error_on_every_rank_is_one_line_and_exit_2(tmp_path: Path):
    # A data folder that is missing whatever this machine has installed: fashion-mnist would fall through an
    # empty --data-dir to Debian's dataset-fashion-mnist package where it is installed (docs/runtime.md §5.2).
    missing = tmp_path / "none"
    failed = _cli("train", "--nproc", "2", *TINY, "--task", "images", "--data-dir", str(missing),
                  "--out", str(tmp_path / "run"))
    assert failed.returncode == 2, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("esper-run")]
    assert errors == [f"esper-run: error: --data-dir {missing} is not a folder"]
    assert not (tmp_path / "run").exists()
