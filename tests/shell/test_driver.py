"""The run driver's shared lifecycle (open → loop → checkpoint → close/fail) on a stub program, its
resume helpers, and resume through a real Trainer run."""

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from esper.core.errors import ConfigError
from esper.core.events import Event, RunResumed
from esper.shell.driver import Run, drive, merge_resume, train
from esper.shell.interrupt import Terminated, exit_code, signals_interrupt
from esper.shell.run_checkpoint import ResumePoint, Save, checkout_commit
from esper.shell.run_config import RunConfig
from esper.shell.telemetry import RunDirectory, open_hub
from esper.shell.telemetry.rundir import cut_back, cut_csv, failed_run_dir
from esper.shell.trainer import TrainingDiverged


class StubProgram:
    """A program of `total` steps that asks for a checkpoint every second step and a closing one."""

    unit, periodic, keep_checkpoints = "steps", "step-*.pt", 1

    def __init__(self, total: int, fail_at: int | None = None, error: BaseException | None = None) -> None:
        self.total, self.steps, self.fail_at, self.error = total, 0, fail_at, error
        self.closed_with: tuple[str, BaseException | None] | None = None
        self.bad_metrics: str | None = None  # what non_finite() reports at the end

    def started(self, resumed: ResumePoint | None) -> Event:
        return RunResumed(checkpoint="stub", from_epoch=self.steps)

    def step(self, hub: Any) -> list[Save]:
        if self.steps + 1 == self.fail_at:
            raise self.error or RuntimeError("stub fault")
        self.steps += 1
        return [Save(f"step-{self.steps:04d}")] if self.steps % 2 == 0 else []

    def digest(self) -> str:
        return str(self.steps)

    def payload(self, seq: int) -> dict[str, Any]:
        return {"format": "stub", "schema_version": 1, "progress": {"epoch": self.steps, "seq": seq}}

    def restore(self, data: dict[str, Any]) -> None:
        self.steps = data["progress"]["epoch"]

    def closing(self, status: str, error: BaseException | None) -> list[Save]:
        self.closed_with = (status, error)
        return [Save("final")] if status == "ok" else []

    def last_events(self, status: str, error: BaseException | None) -> list[Event]:
        return []

    def summary(self, status: str, dropped: dict[str, int]) -> dict[str, Any]:
        return {"status": status, "steps": self.steps}

    def print_summary(self, summary: Any) -> None:
        pass

    def non_finite(self) -> str | None:
        return self.bad_metrics


def _run(tmp_path: Path, program: StubProgram) -> Run:
    run_dir = RunDirectory(tmp_path / "run")
    hub = open_hub("stub-run", run_dir, level="normal", console=False)
    return Run(RunConfig(report=False), program, run_dir, hub)  # type: ignore[arg-type]


def _events(run: Run) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run.run_dir.events_path.read_text().splitlines()]


def test_the_loop_writes_the_checkpoints_the_program_asks_for_and_says_so(tmp_path):
    run = _run(tmp_path, StubProgram(total=5))
    assert drive(run) == {"status": "ok", "steps": 5}
    folder = run.run_dir.checkpoints
    assert sorted(p.name for p in folder.glob("*.pt")) == ["final.pt", "step-0004.pt"]  # keep 1 periodic
    assert json.loads((folder / "latest.json").read_text()) == {"checkpoint": "final.pt", "epoch": 5}
    events = _events(run)
    assert events[0]["event"] == "run.resume"
    saved = [(e["fields"]["path"].rsplit("/", 1)[1], e["fields"]["epoch"]) for e in events
             if e["event"] == "checkpoint.saved"]
    assert saved == [("step-0002.pt", 2), ("step-0004.pt", 4), ("final.pt", 5)]


def test_a_crash_aborts_the_run_and_tags_the_error_with_its_directory(tmp_path):
    program = StubProgram(total=5, fail_at=3)
    run = _run(tmp_path, program)
    with pytest.raises(RuntimeError, match="stub fault") as caught:
        drive(run)
    assert program.closed_with == ("aborted", caught.value)
    assert failed_run_dir(caught.value) == run.run_dir.path  # the CLI writes <run>/error.txt
    assert sorted(p.name for p in run.run_dir.checkpoints.glob("*.pt")) == ["step-0002.pt"]
    assert _events(run)[-1]["event"] == "checkpoint.saved"  # the hub was closed and flushed


def test_ctrl_c_is_an_interrupted_run_and_no_error_file(tmp_path):
    program = StubProgram(total=5, fail_at=2, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as caught:
        drive(_run(tmp_path, program))
    assert program.closed_with is not None and program.closed_with[0] == "interrupted"
    assert failed_run_dir(caught.value) is None


class HalfSteppingProgram(StubProgram):
    """Interrupted inside step `fail_at` after changing its state and emitting one event."""

    def step(self, hub: Any) -> list[Save]:
        if self.steps + 1 == self.fail_at:
            self.steps += 1
            hub.emit(RunResumed(checkpoint="half a step", from_epoch=self.steps))
            raise self.error or KeyboardInterrupt()
        return super().step(hub)

    def closing(self, status: str, error: BaseException | None) -> list[Save]:
        super().closing(status, error)
        return [Save("interrupted")] if status == "interrupted" else []

    def summary(self, status: str, dropped: dict[str, int]) -> dict[str, Any]:
        return {"status": status, "steps": self.steps}


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), Terminated("signal SIGTERM")])
def test_an_interrupt_inside_a_step_checkpoints_the_last_finished_step_with_its_seq(tmp_path, interrupt):
    program = HalfSteppingProgram(total=5, fail_at=4, error=interrupt)
    run = _run(tmp_path, program)
    with pytest.raises(KeyboardInterrupt):
        drive(run)
    assert program.steps == 3, "the half step is put back to the last finished one"
    saved = torch.load(run.run_dir.checkpoints / "interrupted.pt", weights_only=True)
    assert saved["progress"]["epoch"] == 3
    events = _events(run)
    half = next(e["seq"] for e in events if e["fields"].get("checkpoint") == "half a step")
    assert saved["progress"]["seq"] == half, "a resume cuts the half step's events"
    assert json.loads((run.run_dir.checkpoints / "latest.json").read_text())["checkpoint"] == "interrupted.pt"


def test_an_interrupt_before_the_first_step_ends_is_a_resume_point_at_the_start(tmp_path):
    program = HalfSteppingProgram(total=5, fail_at=1)
    run = _run(tmp_path, program)
    with pytest.raises(KeyboardInterrupt):
        drive(run)
    saved = torch.load(run.run_dir.checkpoints / "interrupted.pt", weights_only=True)
    assert saved["progress"] == {"epoch": 0, "seq": 1}  # after run.resume (the stub's start event)


def test_sigterm_raises_terminated_inside_the_block_and_the_old_handler_comes_back():
    def mine(signum: int, frame: Any) -> None:
        raise AssertionError("the caller's handler ran inside the block")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with pytest.raises(Terminated) as caught, signals_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once; without one the test fails after 5 s
        assert isinstance(caught.value, KeyboardInterrupt) and exit_code(caught.value) == 143
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exit_code(KeyboardInterrupt()) == 130


def test_cut_csv_keeps_the_header_the_earlier_rows_and_the_files_line_ending(tmp_path):
    metrics, ppo = tmp_path / "metrics.csv", tmp_path / "ppo.csv"
    metrics.write_text('epoch,action\n1,"germinate(a, b)"\n2,wait\n3,wait\n4,wa', newline="")  # a torn last row
    ppo.write_bytes(b"update,loss\r\n1,0.5\r\n2,0.25\r\n")
    cut_csv(metrics, "epoch", 2)
    cut_csv(ppo, "update", 1)
    assert metrics.read_bytes() == b'epoch,action\n1,"germinate(a, b)"\n2,wait\n'
    assert ppo.read_bytes() == b"update,loss\r\n1,0.5\r\n"
    cut_csv(tmp_path / "absent.csv", "epoch", 1)  # nothing to cut


def test_cut_back_sets_later_events_aside_and_cuts_every_result_csv(tmp_path):
    lines = [json.dumps({"seq": s, "event": "x"}) + "\n" for s in range(4)] + ['{"seq": 4, "ev']
    (tmp_path / "events.jsonl").write_text("".join(lines))
    (tmp_path / "ppo.csv").write_text("update,loss\n1,0.5\n2,0.25\n")
    (tmp_path / "episodes.csv").write_text("update,env\n1,0\n1,1\n2,0\n2,1\n")  # a PPO run's second CSV
    cut_back(tmp_path, 1, 2, [("ppo.csv", "update"), ("episodes.csv", "update"), ("metrics.csv", "epoch")])
    assert (tmp_path / "events.jsonl").read_text() == "".join(lines[:2])
    assert (tmp_path / "events.discarded.jsonl").read_text() == "".join(lines[2:])
    assert (tmp_path / "ppo.csv").read_text() == "update,loss\n1,0.5\n"
    assert (tmp_path / "episodes.csv").read_text() == "update,env\n1,0\n1,1\n"


def test_merge_resume_takes_the_resumable_flags_and_refuses_the_others():
    saved = RunConfig(epochs=4, seed=3)
    merged = merge_resume(saved, RunConfig(epochs=6, progress=False), ("epochs", "progress"))
    assert (merged.epochs, merged.progress, merged.seed) == (6, False, 3)
    assert merge_resume(saved, RunConfig(seed=3), ("epochs",)) == saved  # the same value is no change
    with pytest.raises(ConfigError, match="cannot change seed"):
        merge_resume(saved, RunConfig(seed=4), ("epochs",))


def test_merge_resume_keeps_the_recorded_rl_settings_and_refuses_a_changed_one():
    saved = RunConfig(controller="ppo", rl={"lr": 1e-3, "hidden": 16})
    assert merge_resume(saved, RunConfig(controller="ppo"), ("episodes",)) == saved
    assert merge_resume(saved, RunConfig(controller="ppo", rl={"lr": 1e-3}), ("episodes",)) == saved  # restated
    with pytest.raises(ConfigError, match="cannot change rl"):
        merge_resume(saved, RunConfig(controller="ppo", rl={"lr": 1e-2}), ("episodes",))


SMALL = RunConfig(epochs=2, train_size=128, val_size=64, batch_size=64, telemetry_level="minimal",
                  progress=False, report=False, device="cpu")


def test_resume_extends_a_run_twice_and_then_has_nothing_to_do(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(SMALL, out=str(out)).epochs == 2
    assert json.loads((out / "config.json").read_text())["versions"]["git_commit"] == checkout_commit()
    assert train(RunConfig(epochs=3), resume=str(out)).epochs == 3
    capsys.readouterr()
    # The checkpoint carries the config the run continued with (epochs 3), so a plain resume is done.
    assert train(RunConfig(), resume=str(out)).epochs == 3
    assert "nothing to do: 3/3 epochs done" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--epochs 2 is below the 3 epochs already done"):
        train(RunConfig(epochs=2), resume=str(out))


def test_a_finished_run_killed_before_its_summary_is_closed_by_a_resume(tmp_path, capsys):
    out = tmp_path / "run"
    train(SMALL, out=str(out))
    (out / "summary.json").unlink()
    summary = train(RunConfig(), resume=str(out))
    assert "nothing to do" not in capsys.readouterr().out
    assert summary.status == "ok" and json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_non_finite_final_metrics_end_the_run_diverged_not_ok(tmp_path):
    program = StubProgram(total=3)
    program.bad_metrics = "val_loss=nan"
    run = _run(tmp_path, program)
    with pytest.raises(TrainingDiverged, match="val_loss=nan") as caught:
        drive(run)
    assert program.closed_with == ("diverged", None) and program.steps == 3
    assert failed_run_dir(caught.value) == run.run_dir.path  # the CLI writes <run>/error.txt, exits 1
