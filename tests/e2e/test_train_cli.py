"""`esper-run train` end to end on small synth-images runs: the run directory, user errors,
and exact resume after SIGKILL."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from esper.shell.cli import main

SMALL = ["--train-size", "512", "--val-size", "256", "--batch-size", "64", "--no-progress"]


def _run(*args: str) -> subprocess.CompletedProcess:
    # HF offline: a missing hub dataset fails at once instead of after the client's retries.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "esper.shell.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_small_run_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), *SMALL, "--checkpoint-every", "2"]) == 0
    for name in ("config.json", "events.jsonl", "metrics.csv", "summary.json", "checkpoints/final.pt",
                 "checkpoints/epoch-0002.pt", "checkpoints/latest.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["epochs"] == 3 and summary["task"] == "synth-images"
    assert summary["data_source"]["kind"] == "procedural"
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["train"]["epochs"] == 3 and config["data_source"]["n_train"] == 512
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    kinds = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert kinds[0] == "run.start" and kinds[-1] == "run.end" and kinds.count("epoch.metrics") == 3


@pytest.mark.parametrize(("args", "needle"), [
    (["--task", "nope"], "nope"),
    (["--controller", "oracle"], "controller"),
    (["--epochs", "0"], "epochs"),
    (["--epochs", "many"], "epochs"),
    (["--task", "cifar10", "--data-dir", "/nonexistent"], "cifar10"),
])
def test_user_errors_are_one_line_with_exit_2(tmp_path, args, needle):
    result = _run("train", "--out", str(tmp_path / "r"), *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-run: error:") and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_evaluate_reproduces_the_final_accuracy_and_tasks_lists_presets(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), *SMALL, "--telemetry-level", "off"]) == 0
    result = _run("evaluate", str(out), "--json")
    assert result.returncode == 0, result.stderr
    evaluated = json.loads(result.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert evaluated["val_acc"] == pytest.approx(summary["final_val_acc"], abs=1e-9)
    assert evaluated["params"] == summary["total_params"]
    listing = _run("tasks")
    assert listing.returncode == 0
    for name, params in (("synth-images", "6,418"), ("fashion-mnist", "6,274"), ("cifar10-deep", "99,922"),
                         ("synth-stories", "644,224")):
        line = next(line for line in listing.stdout.splitlines() if line.startswith(name + " "))
        assert params in line


def test_existing_run_directory_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = _run("train", "--epochs", "1", "--out", str(out), *SMALL)
    assert result.returncode == 2 and "not empty" in result.stderr
    assert (out / "precious.txt").read_text() == "keep me"


def _final_tensors(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]["tensors"]


def _metrics(run: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [{k: v for k, v in r.items() if k != "epoch_s"} for r in rows]


def sigkill_after_checkpoint(out: Path, args: list[str], checkpoint: str, *, wait_s: float) -> None:
    """`esper-run train --out OUT ARGS` in a child (one thread), SIGKILLed once checkpoints/CHECKPOINT exists."""
    child = subprocess.Popen([sys.executable, "-m", "esper.shell.cli", "train", "--out", str(out), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + wait_s
    while not (out / "checkpoints" / checkpoint).exists():
        assert child.poll() is None and time.monotonic() < deadline, "child ended before its checkpoint"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()


def resume_to_the_uninterrupted_run(killed: Path, whole: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """`--resume KILLED` ends with WHOLE's final weights, metrics and summary (wall time and run id aside);
    (the resume's process, the summary)."""
    resumed = _run("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    a, b = _final_tensors(whole), _final_tensors(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(whole) == _metrics(killed)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (whole, killed))
    for s in (sa, sb):
        s.pop("wall_s"), s.pop("run_id")
    assert sa == sb
    return resumed, sa


def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path):
    # Long enough for the heuristic to germinate before the kill (C5 needs 11 epochs left).
    args = ["--epochs", "16", *SMALL, "--checkpoint-every", "4", "--telemetry-level", "minimal",
            "--min-germinate-epoch", "1", "--plateau-epochs", "0"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _run("train", "--out", str(whole), *args).returncode == 0
    sigkill_after_checkpoint(killed, args, "epoch-0008.pt", wait_s=300)
    _, sa = resume_to_the_uninterrupted_run(killed, whole)
    assert sa["seeds"] and sa["seeds"][0]["germinated_epoch"] < 8, "the kill must come after a germination"


class _ClosedPipe:
    """A stdout whose reader has gone, as under `esper-run tasks | head -1`."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        raise OSError("no file descriptor")


def test_a_closed_stdout_stops_quietly_without_a_traceback_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["tasks"]) == 141
    assert not (tmp_path / "error.txt").exists()
    assert capsys.readouterr().err == ""


def test_a_crash_mid_run_keeps_the_last_checkpoint_and_writes_its_traceback_in_the_run(
        tmp_path, monkeypatch, capsys):
    """An unexpected exception: exit 1, one line naming <run>/error.txt, status "aborted", no "final"
    checkpoint of half-stepped weights, and the user's own error.txt untouched."""
    from esper.shell.trainer import Trainer

    real_run_epoch = Trainer.run_epoch

    def crash_in_epoch_3(self):
        if self.epoch == 2:
            raise RuntimeError("simulated device fault")
        return real_run_epoch(self)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "error.txt").write_text("the user's notes")
    monkeypatch.setattr(Trainer, "run_epoch", crash_in_epoch_3)
    out = tmp_path / "run"
    assert main(["train", "--epochs", "4", "--out", str(out), *SMALL, "--checkpoint-every", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"esper-run: RuntimeError: simulated device fault; traceback in {out / 'error.txt'}"]
    assert "simulated device fault" in (out / "error.txt").read_text()
    assert (tmp_path / "error.txt").read_text() == "the user's notes"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "aborted" and summary["epochs"] == 2
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["epoch-0002.pt"]


def test_a_crash_outside_a_run_writes_its_traceback_to_a_new_temporary_file(tmp_path, monkeypatch, capsys):
    import esper.shell.evaluate

    def broken() -> None:
        raise ValueError("simulated bug")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(esper.shell.evaluate, "list_tasks", broken)
    assert main(["tasks"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    prefix = "esper-run: ValueError: simulated bug; traceback in "
    assert line.startswith(prefix)
    path = Path(line[len(prefix):])
    try:
        assert path.parent != tmp_path and path.name.startswith("esper-run-error-")
        assert "simulated bug" in path.read_text()
    finally:
        path.unlink()
    assert list(tmp_path.iterdir()) == []
