"""`esper-run train`: one run, top to bottom, whatever grows the network (docs/runtime.md §2, §4.6, §7; docs/rl.md §8).

    resume?  the checkpoint → its config, with the flags a resume may change
    open     device → process settings (once per process, esper.shell.process) → data → run directory
             (config.json when new) → the program: a Trainer's epochs (heuristic, static, a trained
             policy: `run.EpochRun`) or PPO's rollout batches (`rl.runner.PPORun`)
             → on resume: restore it; cut its CSV and events.jsonl back to the checkpoint
             → telemetry hub
    loop     start event; while steps done < total: one step → the checkpoints it asks for
             (atomic; latest.json; a CheckpointSaved event)
    close    the program's closing checkpoints and last events → hub, run directory → summary file
             → report PNGs (ok runs) → printed summary
    fail     an exception: status aborted, the run tagged so the CLI writes <run>/error.txt;
             Ctrl-C or SIGTERM (esper.shell.interrupt): interrupted; inside a step, the program is first
             put back to the last finished step (a payload kept in memory at every boundary), so its
             closing checkpoint is that boundary, labelled with it, and a resume repeats the cut step

A step is one epoch of a Trainer's run and one batch (rollout + PPO update) of a learning run; a
checkpoint's `progress.epoch` counts steps for both, and a resume continues to the configured total.
"""

import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol

import attrs
import torch

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.events import CheckpointSaved, Event
from esper.core.tasks import task_preset
from esper.shell.checkpoint import write_atomic
from esper.shell.data.loading import load_task
from esper.shell.data.taskdata import TaskData
from esper.shell.interrupt import signals_interrupt
from esper.shell.nets.hosts import host_config
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.rl.runner import PPORun
from esper.shell.run import EpochRun
from esper.shell.run_checkpoint import ResumePoint, Save, load_run_checkpoint, save_run_checkpoint, versions
from esper.shell.run_config import RunConfig, resolve
from esper.shell.telemetry import RunDirectory, TelemetryHub, make_run_id, open_hub
from esper.shell.telemetry.rundir import tag_failed_run


class Program(Protocol):
    """What one kind of run adds to the shared lifecycle (`EpochRun`, `PPORun`)."""

    unit: str  # what a step is, plural: "epochs", "updates"
    periodic: str  # glob of the periodic checkpoints, the newest `keep_checkpoints` kept
    keep_checkpoints: int

    @property
    def steps(self) -> int: ...  # steps done

    @property
    def total(self) -> int: ...  # steps the run ends at

    def restore(self, data: dict[str, Any]) -> None: ...  # also over a step cut short (Ctrl-C)
    def started(self, resumed: ResumePoint | None) -> Event: ...
    def step(self, hub: TelemetryHub) -> list[Save]: ...
    def payload(self, seq: int) -> dict[str, Any]: ...  # self-contained: later steps do not change it
    def closing(self, status: str, error: BaseException | None) -> list[Save]: ...
    def last_events(self, status: str, error: BaseException | None) -> list[Event]: ...
    def summary(self, status: str, dropped: dict[str, int]) -> Any: ...  # writes the summary file
    def print_summary(self, summary: Any) -> None: ...


class ProgramKind(Protocol):
    """The class of a program: its checkpoint format and how it is opened."""

    FORMAT: ClassVar[str]  # checkpoint format
    RESUMABLE: ClassVar[tuple[str, ...]]  # config keys a resume may change
    CSV: ClassVar[tuple[str, str]]  # (file, step column): the result CSV cut back on resume
    LIVE_PROGRESS: ClassVar[bool]  # the console's live progress display

    @staticmethod
    def devices(device: torch.device) -> list[torch.device]: ...  # one copy of the data on each

    @classmethod
    def open(cls, cfg: RunConfig, data: list[TaskData], devices: list[torch.device], run_dir: RunDirectory,
             record: dict[str, Any], stop_after: int | None) -> Program: ...

    @staticmethod
    def read_summary(run_dir: Path) -> Any: ...  # a finished run's summary file; None when absent


@attrs.define
class Run:
    """An open run: what the loop and the close need."""

    cfg: RunConfig
    program: Program
    run_dir: RunDirectory
    hub: TelemetryHub
    boundary: dict[str, Any] | None = None  # the payload at the last finished step (or the start)
    in_step: bool = False  # a step is under way: the program is between two boundaries
    seq: int | None = None  # after a roll back: the boundary's seq, which checkpoints then carry


def program_kind(cfg: RunConfig) -> ProgramKind:
    """PPO without `--policy` learns a policy; every other run is a Trainer's."""
    return PPORun if cfg.controller == "ppo" and cfg.policy is None else EpochRun


def train(cfg: RunConfig, *, out: str | None = None, resume: str | None = None,
          stop_after: int | None = None) -> Any:
    """Run (or continue) one run; returns its summary (a `RunSummary`, or a PPO run's rl_summary dict).
    `stop_after` ends the run after that many steps in total (tests; a run cut short on purpose).
    User errors are raised as typed exceptions (the CLI prints them in one line)."""
    kind = program_kind(cfg)
    point = ResumePoint(*load_run_checkpoint(Path(resume), kind.FORMAT)) if resume is not None else None
    if point is not None:
        cfg = merge_resume(resolve(point.config_values(), {}), cfg, kind.RESUMABLE)
    device = resolve_device(cfg.device)
    with signals_interrupt(), process_settings(ProcessSettings.for_run(cfg.deterministic, device)):
        devices = kind.devices(device)
        data = [load_data(cfg, d) for d in devices]
        run_dir, record = open_directory(cfg, data[0], point, out)
        program = kind.open(cfg, data, devices, run_dir, record, stop_after)
        if point is not None:
            program.restore(point.data)
            if program.steps >= program.total and (finished := kind.read_summary(run_dir.path)) is not None:
                print(f"nothing to do: {program.steps}/{program.total} {program.unit} done")
                return finished
            cut_back(run_dir.path, point.steps, point.seq, kind.CSV)
        hub = open_hub(record["run_id"], run_dir, level=cfg.telemetry_level, profile=cfg.profile,
                       progress=(cfg.progress or None) if kind.LIVE_PROGRESS else None, tensorboard=cfg.tensorboard,
                       events_copy=cfg.events, start_seq=point.seq if point is not None else 0)
        return drive(Run(cfg, program, run_dir, hub), point)


def open_directory(cfg: RunConfig, data: TaskData, point: ResumePoint | None,
                   out: str | None) -> tuple[RunDirectory, dict[str, Any]]:
    """A new run directory with its config.json, or the resumed run's own; and the run's record
    (run id, config, data source, versions) that checkpoints carry."""
    if point is None:
        run_id = make_run_id(cfg.task, cfg.controller, cfg.seed)
        run_dir = RunDirectory(out or f"runs/{run_id}")
        data_source = codec.encode(data.source)
    else:
        run_id, data_source = point.data["run"]["run_id"], point.data["run"]["data_source"]
        run_dir = RunDirectory(point.run_dir, resume=True)
    record = {"run_id": run_id, "config": cfg.to_sections(), "data_source": data_source, "versions": versions()}
    if point is None:
        run_dir.write_config(record)
    return run_dir, record


def drive(run: Run, resumed: ResumePoint | None = None) -> Any:
    """Start event, steps and the checkpoints they ask for; every way out closes the run."""
    status, error = "ok", None
    try:
        run.hub.emit(run.program.started(resumed))
        run.boundary = run.program.payload(seq=run.hub.next_seq)
        while run.program.steps < run.program.total:
            run.in_step = True
            saves = run.program.step(run.hub)
            run.in_step = False
            for save in saves:
                checkpoint(run, save)
            run.boundary = run.program.payload(seq=run.hub.next_seq)
    except BaseException as exc:
        status, error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "aborted"), exc
        if isinstance(exc, KeyboardInterrupt) and run.in_step and run.boundary is not None:
            roll_back(run)
        if isinstance(exc, Exception):
            tag_failed_run(exc, run.run_dir.path)  # the CLI writes the traceback to <run>/error.txt
        raise
    finally:
        summary = close(run, status, error)
    return summary


def roll_back(run: Run) -> None:
    """An interrupt inside a step: the program back to the last finished step, whose seq the closing
    checkpoint carries, so a resume cuts the cut step's events and rows and runs it again whole."""
    assert run.boundary is not None
    run.program.restore(run.boundary)
    run.seq = int(run.boundary["progress"]["seq"])


def checkpoint(run: Run, save: Save) -> Path:
    """Write the program's checkpoint atomically (after the events before it are on disk) and say so."""
    started = time.perf_counter()
    run.hub.flush()
    payload = run.program.payload(seq=run.hub.next_seq if run.seq is None else run.seq)
    if save.latest:
        path = save_run_checkpoint(run.run_dir.checkpoints, save.name, payload, run.program.keep_checkpoints,
                                   pattern=run.program.periodic)
    else:
        run.run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
        path = write_atomic(run.run_dir.checkpoints / f"{save.name}.pt", payload)
    run.hub.emit(CheckpointSaved(path=str(path), epoch=run.program.steps, bytes=path.stat().st_size,
                                 seconds=time.perf_counter() - started))
    return path


def close(run: Run, status: str, error: BaseException | None) -> Any:
    """Closing checkpoints and last events, then the hub and the run directory; the summary, the
    report of an ok run, the printed summary."""
    for save in run.program.closing(status, error):
        checkpoint(run, save)
    for event in run.program.last_events(status, error):
        run.hub.emit(event)
    dropped = run.hub.close()
    summary = run.program.summary(status, dropped)
    run.run_dir.close()
    if status == "ok" and run.cfg.report:
        draw_report(run.run_dir.path)
    run.program.print_summary(summary)
    return summary


# --- what every run shares ----------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name} is not available on this machine; use --device cpu")
    return torch.device(name)


def load_data(cfg: RunConfig, device: torch.device) -> TaskData:
    """The task's data; text windows follow the host's block size when --host overrides it."""
    block = None
    if cfg.host is not None and task_preset(cfg.task).modality == "text":
        block = getattr(host_config(cfg.host), "block_size", None)
    return load_task(cfg.task, device=device, data_dir=cfg.data_dir, data_seed=cfg.data_seed,
                     train_size=cfg.train_size, val_size=cfg.val_size, tokenizer=cfg.tokenizer, block_size=block)


def merge_resume(saved: RunConfig, flags: RunConfig, resumable: tuple[str, ...]) -> RunConfig:
    """The saved config, with the overrides a resume allows (the flags differing from defaults)."""
    defaults = RunConfig()
    changed = {f.name: getattr(flags, f.name) for f in attrs.fields(RunConfig)
               if getattr(flags, f.name) != getattr(defaults, f.name)}
    refused = sorted(k for k, v in changed.items() if k not in resumable and v != getattr(saved, k))
    if refused:
        raise ConfigError(f"--resume cannot change {', '.join(refused)}; only {', '.join(resumable)} may differ")
    return attrs.evolve(saved, **{k: v for k, v in changed.items() if k in resumable})


def cut_back(run_dir: Path, steps: int, seq: int, result_csv: tuple[str, str]) -> None:
    """The result CSV to the checkpoint's step, events.jsonl to its seq (cut lines kept aside in
    events.discarded.jsonl): the resumed run appends what the uninterrupted one would have."""
    cut_csv(run_dir / result_csv[0], result_csv[1], steps)
    events = run_dir / "events.jsonl"
    if events.exists():
        keep, cut = [], []
        for line in events.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                (keep if json.loads(line)["seq"] < seq else cut).append(line)
            except (json.JSONDecodeError, KeyError):
                cut.append(line)  # a torn last line from the kill
        events.write_text("".join(keep), encoding="utf-8")
        if cut:
            with (run_dir / "events.discarded.jsonl").open("a", encoding="utf-8") as f:
                f.writelines(cut)


def cut_csv(path: Path, column: str, last: int) -> None:
    """Keep the header and the rows whose `column` is at most `last` (a torn row from a kill goes
    too), in the file's own line ending, so a resumed file equals the uninterrupted run's."""
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as f:
        ending = "\r\n" if f.readline().endswith("\r\n") else "\n"
        f.seek(0)
        rows = list(csv.reader(f))
    if not rows:
        return
    where = rows[0].index(column)

    def step(row: list[str]) -> float:
        try:
            return int(row[where])
        except (IndexError, ValueError):
            return math.inf

    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator=ending).writerows([rows[0], *(r for r in rows[1:] if step(r) <= last)])


def draw_report(run_dir: Path) -> None:
    """The run's PNGs; a drawing failure costs the pictures (one warning), never the run's data."""
    from esper.shell.report import ReportError, write_report  # matplotlib: only when drawing

    try:
        write_report(run_dir)
    except (ReportError, OSError, ValueError) as exc:
        print(f"esper-run: warning: report not drawn ({exc}); retry with esper-run report {run_dir}",
              file=sys.stderr)
