"""A Trainer's run of E epochs: heuristic, static, or a trained policy deciding (docs/runtime.md §2, §4.6, §7).

The run driver (`esper.shell.driver`) opens, loops, checkpoints and closes every run; this is what a
Trainer's run adds to it:

    open     the trainer (with `--policy RUN_DIR`, the trained policy decides)
    step     trainer.run_epoch → its events and epoch.metrics → a metrics.csv row
             → `epoch-NNNN` every `checkpoint_every` (default 5) epochs before the last
    close    `final` (ok) or `interrupted` (Ctrl-C, SIGTERM: the last finished epoch) checkpoint;
             a governor abort's event; run.end
             → summary.json (every status) → the summary table

`--resume` restores the trainer exactly (run checkpoint, esper.shell.run_checkpoint) and continues to
the configured total; a resume may change only RESUMABLE.
"""

import math
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch

from esper.core import codec
from esper.core.actions import FactoredAction
from esper.core.errors import ConfigError
from esper.core.events import Event, GovernorAbort, RunEnded, RunResumed, RunStarted
from esper.core.summary import RunSummary
from esper.shell.data.taskdata import TaskData
from esper.shell.dist import Ranks, digest
from esper.shell.run_checkpoint import FORMAT, ResumePoint, Save, restore_trainer, run_payload
from esper.shell.run_config import RunConfig
from esper.shell.telemetry import RunDirectory, TelemetryHub, print_summary
from esper.shell.trainer import Trainer, TrainingDiverged
from esper.shell.user_code import UserParts

RESUMABLE = ("epochs", "device", "precision", "compile", "telemetry_level", "profile", "events", "tensorboard",
             "wandb", "wandb_project", "wandb_entity", "progress", "checkpoint_every", "keep_checkpoints",
             "dist_timeout", "data_budget", "data_workers")  # the data path: speed and memory, not the numbers
CHECKPOINT_EVERY = 5  # epochs between periodic checkpoints when --checkpoint-every is not given


def build_trainer(cfg: RunConfig, data: TaskData, device: torch.device, ranks: Ranks | None = None,
                  user: UserParts | None = None) -> Trainer:
    """The run's trainer, data-parallel over `ranks` (esper.shell.data_parallel); `--controller ppo
    --policy RUN_DIR` decides with the trained policy (on every rank, from the same measurements);
    `user`: a script's own host factory and catalogue."""
    if cfg.controller != "ppo":
        return Trainer(cfg, data, device, ranks=ranks, **(user.trainer_kwargs() if user else {}))
    from esper.shell.rl.policy_run import PolicyDecider, load_policy

    saved = load_policy(cfg.policy)
    trainer = Trainer(cfg, data, device, measure_fossils=True, ranks=ranks, **(user.trainer_kwargs() if user else {}))
    trainer.decider = PolicyDecider(saved, trainer)
    return trainer


class EpochRun:
    """The driver's program for a Trainer's run: one step is one epoch."""

    FORMAT: ClassVar[str] = FORMAT
    RESUMABLE: ClassVar[tuple[str, ...]] = RESUMABLE
    CSVS: ClassVar[tuple[tuple[str, str], ...]] = (("metrics.csv", "epoch"),)
    LIVE_PROGRESS: ClassVar[bool] = True
    unit, periodic = "epochs", "epoch-*.pt"

    def __init__(self, cfg: RunConfig, trainer: Trainer, run_dir: RunDirectory, record: dict[str, Any],
                 stop_after: int | None = None, ranks: Ranks | None = None) -> None:
        self.cfg, self.trainer, self.run_dir, self.record = cfg, trainer, run_dir, record
        self.ranks = ranks or Ranks()
        self.keep_checkpoints = cfg.keep_checkpoints
        self.stop_after = stop_after
        self.clock = time.perf_counter()
        self.ended: RunSummary | None = None  # the summary at run.end, before the hub's dropped counts
        self.last_train_loss: float | None = None  # the last epoch run in this process
        self.last_action: FactoredAction | None = None  # the last epoch's decision (the boundary digest)

    @staticmethod
    def devices(device: torch.device) -> list[torch.device]:
        return [device]

    @classmethod
    def open(cls, cfg: RunConfig, data: list[TaskData], devices: list[torch.device], run_dir: RunDirectory,
             record: dict[str, Any], stop_after: int | None, ranks: Ranks | None = None,
             user: UserParts | None = None) -> "EpochRun":
        ranks = ranks or Ranks()
        return cls(cfg, build_trainer(cfg, data[0], devices[0], ranks, user), run_dir, record, stop_after, ranks)

    @staticmethod
    def read_summary(run_dir: Path) -> RunSummary | None:
        """summary.json of a finished run (None: killed before writing it)."""
        run = RunDirectory(run_dir, resume=True)
        return run.read_summary() if run.summary_path.exists() else None

    @property
    def steps(self) -> int:
        return self.trainer.epoch

    @property
    def total(self) -> int:
        return self.trainer.epochs if self.stop_after is None else min(self.trainer.epochs, self.stop_after)

    def restore(self, data: dict[str, Any]) -> None:
        restore_trainer(self.trainer, data)
        if self.trainer.epoch > self.trainer.epochs:
            raise ConfigError(f"--epochs {self.trainer.epochs} is below the {self.trainer.epoch} epochs already done")

    def started(self, resumed: ResumePoint | None) -> Event:
        if resumed is not None:
            return RunResumed(checkpoint=str(resumed.path), from_epoch=resumed.steps, from_seq=resumed.seq)
        cfg, trainer, record = self.cfg, self.trainer, self.record
        return RunStarted(task=cfg.task, controller=cfg.controller, seed=cfg.seed, epochs=trainer.epochs,
                          device=str(trainer.device), precision="bf16" if trainer.autocast else "fp32",
                          host_params=trainer.model.host_params, config=record["config"],
                          data_source=record["data_source"], versions=record["versions"],
                          data_path=record.get("data_path"))

    def step(self, hub: TelemetryHub) -> list[Save]:
        result = self.trainer.run_epoch()
        self.last_train_loss = result.train_loss
        hub.set_epoch(result.epoch)
        hub.emit_all(result.events, epoch=result.epoch)
        hub.emit(result.metrics, epoch=result.epoch)
        self.last_action = result.action
        if self.ranks.main:
            self.run_dir.append_metrics(result.metrics)
        if result.epoch % (self.cfg.checkpoint_every or CHECKPOINT_EVERY) == 0 and result.epoch < self.trainer.epochs:
            return [Save(f"epoch-{result.epoch:04d}")]
        return []

    def digest(self) -> str:
        """The lifecycle state and the last action: what every rank of a data-parallel run decides alike."""
        return digest(codec.encode((self.trainer.state, self.last_action)))

    def payload(self, seq: int) -> dict[str, Any]:
        return run_payload(self.trainer, run_id=self.record["run_id"], config=self.record["config"],
                           data_source=self.record["data_source"], seq=seq, user=self.record.get("user"))

    def closing(self, status: str, error: BaseException | None) -> list[Save]:
        """A crash mid-epoch leaves the model half-stepped: no checkpoint of an aborted run (its last
        periodic one stays the resume point); nor of a diverged one (non-finite weights). An interrupted
        run was put back to its last finished epoch by the driver, so `interrupted` is that epoch, the start
        included (a resume point)."""
        if status in ("aborted", "diverged") or (status == "ok" and self.trainer.epoch == 0):
            return []
        return [Save("final" if status == "ok" else "interrupted")]

    def last_events(self, status: str, error: BaseException | None) -> list[Event]:
        trainer = self.trainer
        events: list[Event] = []
        if isinstance(error, TrainingDiverged) and self.cfg.governor:  # not a NaN with --no-governor
            events.append(trainer.abort_event or GovernorAbort(epoch=trainer.epoch + 1, reason="panic",
                                                               rollbacks=trainer.governor.rollbacks))
        s = self.ended = self._summary(status, {})
        events.append(RunEnded(
            status=status, epochs=trainer.epoch, final_val_acc=s.final_val_acc, final_val_loss=s.final_val_loss,
            best_val_acc=s.best_val_acc, best_val_loss=min((h[2] for h in trainer.history), default=None),
            best_epoch=s.best_epoch, params=s.total_params, seed_params=s.seed_params,
            seeds_germinated=len(trainer.records), seeds_fossilized=s.count("fossilized"),
            seeds_culled=s.count("culled"), rollbacks=trainer.governor.rollbacks, wall_s=s.wall_s,
            run_dir=str(self.run_dir.path)))
        return events

    def non_finite(self) -> str | None:
        """The last epoch's losses and accuracy that are not finite, e.g. "val_loss=nan, train_loss=nan"."""
        last = self.trainer.history[-1] if self.trainer.history else None
        values = {"val_acc": last[1], "val_loss": last[2]} if last else {}
        if self.last_train_loss is not None:
            values["train_loss"] = self.last_train_loss
        bad = [f"{name}={value}" for name, value in values.items() if not math.isfinite(value)]
        return ", ".join(bad) or None

    def summary(self, status: str, dropped: dict[str, int]) -> RunSummary:
        """summary.json, whatever the status: the summary at run.end with the hub's dropped counts."""
        summary = attrs.evolve(self.ended or self._summary(status, {}), dropped=dropped)
        self.run_dir.write_summary(summary)
        return summary

    def print_summary(self, summary: RunSummary) -> None:
        print_summary(summary, self.run_dir.path, table=self.cfg.telemetry_level != "off")

    def _summary(self, status: str, dropped: dict[str, int]) -> RunSummary:
        cfg, trainer = self.cfg, self.trainer
        history = trainer.history
        best = max(history, key=lambda h: h[1]) if history else None
        counts = trainer.model.param_counts()
        return RunSummary(
            run_id=self.record["run_id"], status=status, task=cfg.task, controller=cfg.controller, seed=cfg.seed,
            epochs=trainer.epoch, final_val_acc=history[-1][1] if history else None,
            final_val_loss=history[-1][2] if history else None,
            best_val_acc=best[1] if best else None, best_epoch=int(best[0]) if best else None,
            host_params=counts.host, seed_params=counts.live + counts.fossilized,
            wall_s=time.perf_counter() - self.clock, data_source=self.record["data_source"],
            dropped=dropped, seeds=trainer.records, train_flops=trainer.flops.total)
