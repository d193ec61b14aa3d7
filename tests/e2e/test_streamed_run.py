"""`esper-run train` on the streamed data path (docs/runtime.md §5.7): `--data-budget 0` streams the
default task through DataLoader workers to the resident run's numbers, says so, resumes exactly after
SIGKILL, and a budget that is not a size is a one-line user error."""

import json
import os
import signal
import subprocess
import time

import torch

from esper.shell.cli import main
from tests.e2e.test_interrupt import ENV, _cli, _rows, _started, assert_closed_as_interrupted, sigint_as_at_a_terminal
from tests.e2e.test_train_cli import (
    SMALL,
    _final_tensors,
    _metrics,
    _run,
    resume_to_the_uninterrupted_run,
    sigkill_after_checkpoint,
)


def test_data_budget_0_streams_to_the_resident_run_s_numbers_and_says_so(tmp_path, capsys):
    resident, streamed = tmp_path / "resident", tmp_path / "streamed"
    args = ["--epochs", "2", *SMALL, "--no-report"]
    assert main(["train", "--out", str(resident), *args]) == 0
    assert "data: device-resident on cpu" in capsys.readouterr().out
    assert main(["train", "--out", str(streamed), *args, "--data-budget", "0", "--data-workers", "1"]) == 0
    assert "data: streamed to cpu by a DataLoader (1 worker)" in capsys.readouterr().out
    records = [json.loads((run / "config.json").read_text()) for run in (resident, streamed)]
    assert [r["data_path"] for r in records] == ["resident", "streamed"]
    assert records[1]["config"]["data"]["data_budget"] == 0
    starts = [json.loads((run / "events.jsonl").read_text().splitlines()[0]) for run in (resident, streamed)]
    assert [s["fields"]["data_path"] for s in starts] == ["resident", "streamed"]
    assert _metrics(resident) == _metrics(streamed)
    a, b = _final_tensors(resident), _final_tensors(streamed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_then_resume_on_the_streamed_path_equals_the_uninterrupted_run(tmp_path):
    args = ["--epochs", "6", *SMALL, "--checkpoint-every", "2", "--telemetry-level", "minimal", "--no-report",
            "--min-germinate-epoch", "1", "--plateau-epochs", "0", "--data-budget", "0", "--data-workers", "1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _run("train", "--out", str(whole), *args).returncode == 0
    sigkill_after_checkpoint(killed, args, "epoch-0004.pt", wait_s=120)  # its DataLoader worker is orphaned
    assert not (killed / "summary.json").exists(), "the kill came too late to interrupt the run"
    resumed, _ = resume_to_the_uninterrupted_run(killed, whole)
    assert "data: streamed" in resumed.stdout


def test_ctrl_c_reaching_the_loader_s_workers_too_closes_the_run_as_interrupted(tmp_path):
    # A terminal's Ctrl-C goes to the whole process group, workers included: the run still closes as
    # interrupted (esper.shell.interrupt), without a worker's error, and resumes.
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--epochs", "6", *SMALL, "--no-report", "--data-budget", "0",
            "--data-workers", "1"]
    with (tmp_path / "stderr").open("w+") as err:
        child = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=err, env=ENV, start_new_session=True,
                                 preexec_fn=sigint_as_at_a_terminal)
        deadline = time.monotonic() + 120
        while not (_started(run) and _rows(run / "metrics.csv") >= 2):
            assert child.poll() is None and time.monotonic() < deadline, "the run ended before its second row"
            time.sleep(0.02)
        time.sleep(0.2)  # inside epoch 3, its loader reading ahead
        os.killpg(child.pid, signal.SIGINT)
        child.wait(timeout=120)
        err.seek(0)
        result = subprocess.CompletedProcess(child.args, child.returncode, "", err.read())
    assert assert_closed_as_interrupted(run, result, signal.SIGINT) < 6
    assert "DataLoader" not in result.stderr, result.stderr
    resumed = _run("train", "--resume", str(run))
    assert resumed.returncode == 0 and "data: streamed" in resumed.stdout, resumed.stderr


def test_a_budget_that_is_not_a_size_is_one_line_with_exit_2(tmp_path):
    result = _run("train", "--out", str(tmp_path / "r"), "--data-budget", "lots")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esper-run: error:") and "--data-budget" in lines[0]
    assert "'lots' is not a size in bytes" in lines[0] and not (tmp_path / "r").exists()
