"""`esper-run train`: one run, top to bottom, whatever grows the network (docs/runtime.md §2, §4.6, §7; docs/rl.md §8).

    resume?  the run directory locked → its checkpoint → its config, with the flags a resume may change
             (a start that never reached a checkpoint: its config.json, started afresh)
    open     device → process settings (once per process, esper.shell.process) → data → the program:
             a Trainer's epochs (heuristic, static, a trained policy: `run.EpochRun`) or PPO's rollout
             batches (`rl.runner.PPORun`); every user error is raised here, before anything is written
             → new: the run directory created and locked (<run>/.lock, held to the run's end), config.json
             → on resume: restore it; cut its CSV and events.jsonl back to the checkpoint
             → telemetry hub
    loop     start event; while steps done < total: one step → the checkpoints it asks for
             (atomic; latest.json; a CheckpointSaved event)
    close    the program's closing checkpoints and last events → hub, run directory → summary file
             → report PNGs (ok runs) → printed summary
    diverged the steps all done but a final metric not finite: status diverged, then TrainingDiverged (exit 1)
    fail     an exception: status aborted, the run tagged so the CLI writes <run>/error.txt;
             Ctrl-C or SIGTERM (esper.shell.interrupt): interrupted; inside a step, the program is first
             put back to the last finished step (a payload kept in memory at every boundary), so its
             closing checkpoint is that boundary, labelled with it, and a resume repeats the cut step

A step is one epoch of a Trainer's run and one batch (rollout + PPO update) of a learning run; a
checkpoint's `progress.epoch` counts steps for both, and a resume continues to the configured total.
"""

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol

import attrs
import torch

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.events import CheckpointSaved, Event
from esper.core.tasks import IMAGES_TASK, task_preset
from esper.shell.checkpoint import write_atomic
from esper.shell.data.budget import data_budget_bytes
from esper.shell.data.image_folder import ImageOptions
from esper.shell.data.images_task import check_unchanged
from esper.shell.data.loading import load_task
from esper.shell.data.source import require_same_data
from esper.shell.data.streamed import LoaderSettings
from esper.shell.data.taskdata import TaskData
from esper.shell.dist import Ranks, bind_device, process_group
from esper.shell.interrupt import signals_interrupt
from esper.shell.nets.hosts import host_config
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.rl.runner import PPORun
from esper.shell.run import EpochRun
from esper.shell.run_checkpoint import ResumePoint, Save, load_run_checkpoint, save_run_checkpoint, versions
from esper.shell.run_config import RunConfig, load_config_file, resolve
from esper.shell.telemetry import RunDirectory, TelemetryHub, make_run_id, open_hub, require_extras
from esper.shell.telemetry.rundir import (
    RunDirectoryError,
    clear_for_a_fresh_start,
    cut_back,
    locked,
    never_checkpointed,
    tag_failed_run,
)
from esper.shell.trainer import TrainingDiverged
from esper.shell.user_code import UserParts, resumed_parts, user_record


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
    def non_finite(self) -> str | None: ...  # the final metrics that are not finite ("val_loss=nan"); None: all are
    def digest(self) -> str: ...  # a hash of what every rank must hold equal at a boundary (esper.shell.dist)
    def print_summary(self, summary: Any) -> None: ...


class ProgramKind(Protocol):
    """The class of a program: its checkpoint format and how it is opened."""

    FORMAT: ClassVar[str]  # checkpoint format
    RESUMABLE: ClassVar[tuple[str, ...]]  # config keys a resume may change
    CSVS: ClassVar[tuple[tuple[str, str], ...]]  # (file, step column) of each result CSV cut back on resume
    LIVE_PROGRESS: ClassVar[bool]  # the console's live progress display

    @staticmethod
    def devices(device: torch.device) -> list[torch.device]: ...  # one copy of the data on each

    @classmethod
    def open(cls, cfg: RunConfig, data: list[TaskData], devices: list[torch.device], run_dir: RunDirectory,
             record: dict[str, Any], stop_after: int | None, ranks: Ranks, user: UserParts | None = None,
             ) -> Program: ...

    @staticmethod
    def read_summary(run_dir: Path) -> Any: ...  # a finished run's summary file; None when absent


@attrs.define
class Run:
    """An open run: what the loop and the close need."""

    cfg: RunConfig
    program: Program
    run_dir: RunDirectory
    hub: TelemetryHub
    ranks: Ranks = attrs.field(factory=Ranks)
    boundary: dict[str, Any] | None = None  # the payload at the last finished step (or the start)
    in_step: bool = False  # a step is under way: the program is between two boundaries
    seq: int | None = None  # after a roll back: the boundary's seq, which checkpoints then carry


def program_kind(cfg: RunConfig) -> ProgramKind:
    """PPO without `--policy` learns a policy; every other run is a Trainer's."""
    return PPORun if cfg.controller == "ppo" and cfg.policy is None else EpochRun


def train(cfg: RunConfig, *, out: str | None = None, resume: str | None = None,
          stop_after: int | None = None, user: UserParts | None = None) -> Any:
    """Run (or continue) one run; returns its summary (a `RunSummary`, or a PPO run's rl_summary dict).
    `stop_after` ends the run after that many steps in total (tests; a run cut short on purpose).
    The run is validated (data, trainer or policy, slots, seeds) before anything is written, and its
    directory locked from its first write to the run's end (`locked`: a second writer is refused).
    Under a launcher every rank runs this (esper.shell.dist): rank 0 finds, locks and writes the run
    directory, every rank opens the same program; a failure of any rank while opening stops them all.
    User errors are raised as typed exceptions (the CLI prints them in one line). `user`: a script's own
    data, host factory and catalogue (esper.shell.user_code; a resume passes them again)."""
    with contextlib.ExitStack() as held:
        ranks = held.enter_context(process_group(cfg.dist_timeout))
        cfg, point, run_id, path, restart = locate(with_world(cfg, ranks), out, resume, held, ranks)
        if resume is not None:  # the script's parts again, or those the run recorded (by import path)
            user = resumed_parts(recorded(path, point).get("user"), user)
        run_dir = RunDirectory(path, resume=point is not None or restart, create=False)  # checked, not created
        kind = program_kind(cfg)
        device = bind_device(resolve_device(cfg.device), ranks)
        with signals_interrupt(), process_settings(ProcessSettings.for_run(cfg.deterministic, device)):
            program, record = open_program(kind, cfg, device, run_dir, point, run_id, stop_after, ranks, user)
            finished = prepare_directory(kind, program, run_dir, record, point, held, ranks,
                                         lock=resume is None and not restart)
            if finished is not None:
                return finished
            hub = open_hub(record["run_id"], run_dir if ranks.main else None,
                           level=cfg.telemetry_level if ranks.main else "off", profile=cfg.profile,
                           progress=(cfg.progress or None) if kind.LIVE_PROGRESS else None,
                           tensorboard=cfg.tensorboard, wandb=wandb_target(cfg, record), events_copy=cfg.events,
                           start_seq=point.seq if point is not None else 0)
            return drive(Run(cfg, program, run_dir, hub, ranks), point)


def with_world(cfg: RunConfig, ranks: Ranks) -> RunConfig:
    """`nproc` is the launcher's world size (torchrun without --nproc); a flag that says otherwise is an error."""
    if cfg.nproc == ranks.world:
        return cfg
    if cfg.nproc != 1:
        raise ConfigError(f"--nproc {cfg.nproc}, but the launcher started {ranks.world} rank(s)")
    return attrs.evolve(cfg, nproc=ranks.world)


def locate(cfg: RunConfig, out: str | None, resume: str | None, held: contextlib.ExitStack,
           ranks: Ranks) -> tuple[RunConfig, ResumePoint | None, str, Path, bool]:
    """(config, checkpoint, run id, directory, restart): rank 0 finds and locks the run directory and
    reads its checkpoint; every rank gets rank 0's answer. A resume runs at the world size that wrote it."""
    found, failed = None, None
    if ranks.main:
        try:
            found = _locate(cfg, out, resume, held)
        except Exception as exc:
            failed = exc
    ranks.together(failed)
    cfg, point, run_id, path, restart = ranks.broadcast(found)
    if cfg.nproc != ranks.world:
        raise ConfigError(f"{path} was written by {cfg.nproc} rank(s); resume it with --nproc {cfg.nproc} "
                          f"(or that many torchrun ranks), not {ranks.world}")
    return cfg, point, run_id, path, restart


def _locate(cfg: RunConfig, out: str | None, resume: str | None,
            held: contextlib.ExitStack) -> tuple[RunConfig, ResumePoint | None, str, Path, bool]:
    if resume is not None:
        cfg, point, run_id, path = open_resume(cfg, Path(resume), held)
    else:
        point, run_id = None, make_run_id(cfg.task, cfg.controller, cfg.seed)
        path = Path(out or f"runs/{run_id}")
    require_extras(tensorboard=cfg.tensorboard, wandb=cfg.wandb)  # before anything is written
    restart = point is None and never_checkpointed(path)  # cleared by start_directory, under the lock
    if resume is None and restart:  # perhaps a run still before its first checkpoint: refused at once
        held.enter_context(locked(path))
    return cfg, point, run_id, path, restart


def open_program(kind: "ProgramKind", cfg: RunConfig, device: torch.device, run_dir: RunDirectory,
                 point: ResumePoint | None, run_id: str, stop_after: int | None,
                 ranks: Ranks, user: UserParts | None = None) -> tuple["Program", dict[str, Any]]:
    """Data, the run's record and its program, on every rank; nothing written yet."""
    failed, opened = None, None
    try:
        devices = kind.devices(device)
        data = [user.task_data(d) if user and user.data else load_data(cfg, d) for d in devices]
        if ranks.main:
            print(data[0].path_line())
        record = run_record(cfg, data[0], point, run_id, user)
        opened = kind.open(cfg, data, devices, run_dir, record, stop_after, ranks, user), record
    except Exception as exc:
        failed = exc
    ranks.together(failed)
    assert opened is not None
    return opened


def prepare_directory(kind: "ProgramKind", program: "Program", run_dir: RunDirectory, record: dict[str, Any],
                      point: ResumePoint | None, held: contextlib.ExitStack, ranks: Ranks, *, lock: bool) -> Any:
    """A new run's directory (rank 0), or the program restored from its checkpoint (every rank) and the
    results cut back to it (rank 0). Returns the summary of a run with nothing left to do, else None."""
    failed, finished = None, None
    try:
        if point is None:
            if ranks.main:
                start_directory(run_dir, record, held, lock=lock)
        else:
            program.restore(point.data)
            if ranks.main and program.steps >= program.total:
                finished = kind.read_summary(run_dir.path)
            if ranks.main and finished is None:
                cut_back(run_dir.path, point.steps, point.seq, kind.CSVS)
    except Exception as exc:
        failed = exc
    ranks.together(failed)
    finished = ranks.broadcast(finished)
    if finished is not None and ranks.main:
        print(f"nothing to do: {program.steps}/{program.total} {program.unit} done")
    return finished


def wandb_target(cfg: RunConfig, record: dict[str, Any]) -> dict[str, Any] | None:
    """The W&B backend's keywords (`--wandb`): project, entity, the run's resolved config; None without."""
    if not cfg.wandb:
        return None
    return {"project": cfg.wandb_project, "entity": cfg.wandb_entity, "config": record["config"]}


def open_resume(cfg: RunConfig, target: Path,
                held: contextlib.ExitStack) -> tuple[RunConfig, ResumePoint | None, str, Path]:
    """`--resume TARGET` → (config, checkpoint, run id, directory), the directory locked. A run
    directory's lock is taken before its latest checkpoint is read (a writer still running may move it
    on); a checkpoint file's after it is validated. A start that never reached a checkpoint starts
    afresh from its config.json (point None)."""
    if target.is_dir():
        require_config(target)
        held.enter_context(locked(target))
        if never_checkpointed(target):  # cleared by start_directory
            saved = resolve(load_config_file(target / "config.json"), {})
            run_id = str(RunDirectory(target, resume=True, create=False).read_config()["run_id"])
            return merge_resume(saved, cfg, program_kind(saved).RESUMABLE), None, run_id, target
    point = ResumePoint(*load_run_checkpoint(target, (EpochRun.FORMAT, PPORun.FORMAT)))
    saved = resolve(point.config_values(), {})
    kind = program_kind(saved)  # the run's own kind: `--resume RUN` needs no --controller
    if not target.is_dir():
        require_config(point.run_dir)
        held.enter_context(locked(point.run_dir))
    merged = merge_resume(saved, cfg, kind.RESUMABLE)
    return merged, point, point.data["run"]["run_id"], point.run_dir


def require_config(run_dir: Path) -> None:
    """A run directory keeps its config.json (the run's record beside its results)."""
    if not (run_dir / "config.json").is_file():
        raise RunDirectoryError(f"cannot resume: {run_dir} has no config.json, so it is not a whole run "
                                "directory; restore the file or start a new run with another --out")


def recorded(path: Path, point: ResumePoint | None) -> dict[str, Any]:
    """The record of a run being resumed: its checkpoint's, else (never checkpointed) its config.json."""
    return point.data["run"] if point is not None else RunDirectory(path, resume=True, create=False).read_config()


def run_record(cfg: RunConfig, data: TaskData, point: ResumePoint | None, run_id: str,
               user: UserParts | None = None) -> dict[str, Any]:
    """The run's record (run id, config, data source, this session's data path, versions; a script's parts
    by import path, when it has any) that config.json and checkpoints carry."""
    if point is None:
        data_source = codec.encode(data.source)
    else:
        data_source = point.data["run"]["data_source"]
        check_unchanged(data_source, data.source)  # an images run re-derives its task: its own message
        require_same_data(data_source, data.source, f"cannot resume {point.run_dir}")
    parts = user_record(user)
    return {"run_id": run_id, "config": cfg.to_sections(), "data_source": data_source, "data_path": data.path,
            "versions": versions(), **({"user": parts} if parts else {})}


def start_directory(run_dir: RunDirectory, record: dict[str, Any], held: contextlib.ExitStack, *,
                    lock: bool) -> None:
    """A new run's directory: created and locked (`lock`; held to the run's end), checked again under
    the lock (another start may have won the race), what a start that never checkpointed left cleared,
    config.json."""
    if lock:
        held.enter_context(locked(run_dir.path))
    if never_checkpointed(run_dir.path):
        print(f"{run_dir.path} never reached a checkpoint: starting it afresh")
        clear_for_a_fresh_start(run_dir.path)
    run_dir.check(resume=False)
    run_dir.create()
    run_dir.write_config(record)


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
            run.ranks.check_agreement(run.program.digest, f"{run.program.unit} {run.program.steps}")
            boundary = run.program.payload(seq=run.hub.next_seq)  # once per step: the checkpoints' too
            for save in saves:
                checkpoint(run, save, boundary)
            run.boundary = at_seq(boundary, run.hub.next_seq)
        if (bad := run.program.non_finite()) is not None:
            status = "diverged"  # a run whose final metrics are not finite never ends ok
    except BaseException as exc:
        status, error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "aborted"), exc
        if isinstance(exc, KeyboardInterrupt) and run.in_step and run.boundary is not None:
            roll_back(run)
        if isinstance(exc, Exception) and run.ranks.main:
            tag_failed_run(exc, run.run_dir.path)  # the CLI writes the traceback to <run>/error.txt
        raise
    finally:
        summary = close(run, status, error)
    if status == "diverged":
        diverged = TrainingDiverged(f"training diverged: final {bad} after {run.program.steps} {run.program.unit} "
                                    "(status diverged)")
        tag_failed_run(diverged, run.run_dir.path)
        raise diverged  # exit 1, as a governor abort
    return summary


def roll_back(run: Run) -> None:
    """An interrupt inside a step: the program back to the last finished step, whose seq the closing
    checkpoint carries, so a resume cuts the cut step's events and rows and runs it again whole."""
    assert run.boundary is not None
    run.program.restore(run.boundary)
    run.seq = int(run.boundary["progress"]["seq"])


def at_seq(payload: dict[str, Any], seq: int) -> dict[str, Any]:
    """`payload` with its events cut at `seq` (a shallow copy: the state it holds is shared)."""
    return {**payload, "progress": {**payload["progress"], "seq": seq}}


def checkpoint(run: Run, save: Save, payload: dict[str, Any] | None = None) -> Path | None:
    """Write the program's checkpoint (`payload`, the state after the step just run, or a fresh one)
    atomically, after the events before it are on disk, and say so; rank 0 alone writes (every rank
    holds the same state)."""
    if not run.ranks.main:
        return None
    started = time.perf_counter()
    run.hub.flush()
    seq = run.hub.next_seq if run.seq is None else run.seq
    payload = run.program.payload(seq=seq) if payload is None else at_seq(payload, seq)
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
    if not run.ranks.main:  # rank 0 writes the summary, the report and the console
        return None
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
                     train_size=cfg.train_size, val_size=cfg.val_size, tokenizer=cfg.tokenizer, block_size=block,
                     text_column=cfg.text_column, images=ImageOptions.of(cfg) if cfg.task == IMAGES_TASK else None,
                     data_budget=data_budget_bytes(device, cfg.data_budget),
                     loader=LoaderSettings.auto(cfg.data_workers))


def merge_resume(saved: RunConfig, flags: RunConfig, resumable: tuple[str, ...]) -> RunConfig:
    """The saved config, with the overrides a resume allows (the flags differing from defaults)."""
    defaults = RunConfig()
    changed = {f.name: getattr(flags, f.name) for f in attrs.fields(RunConfig)
               if getattr(flags, f.name) != getattr(defaults, f.name)}
    if set(flags.rl) <= set(saved.rl):  # --rl settings that restate recorded values change nothing
        changed.pop("rl", None)
    refused = sorted(k for k, v in changed.items() if k not in resumable and v != getattr(saved, k))
    if refused:
        raise ConfigError(f"--resume cannot change {', '.join(refused)}; only {', '.join(resumable)} may differ")
    return attrs.evolve(saved, **{k: v for k, v in changed.items() if k in resumable})


def draw_report(run_dir: Path) -> None:
    """The run's PNGs; a drawing failure costs the pictures (one warning), never the run's data."""
    from esper.shell.report import ReportError, write_report  # matplotlib: only when drawing

    try:
        write_report(run_dir)
    except (ReportError, OSError, ValueError) as exc:
        print(f"esper-run: warning: report not drawn ({exc}); retry with esper-run report {run_dir}",
              file=sys.stderr)
