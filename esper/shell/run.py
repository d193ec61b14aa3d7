"""`esper-run train`: one run of E epochs, top to bottom (docs/runtime.md §2, §4.6, §7).

    resolve device and data → run directory and config.json → telemetry hub → trainer
    → for each epoch: run_epoch, telemetry, metrics.csv row, periodic checkpoint
    → final checkpoint, summary.json, summary table

`--resume` rebuilds the trainer from the checkpoint's own config, restores it exactly, cuts
metrics.csv and events.jsonl back to the checkpoint and continues to the configured total.
"""

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.events import CheckpointSaved, GovernorAbort, RunEnded, RunResumed, RunStarted
from esper.core.summary import RunSummary
from esper.core.tasks import task_preset
from esper.shell.checkpoint import CheckpointError
from esper.shell.data.loading import load_task
from esper.shell.data.taskdata import TaskData
from esper.shell.nets.hosts import host_config
from esper.shell.run_checkpoint import (
    load_run_checkpoint,
    restore_trainer,
    run_payload,
    save_run_checkpoint,
    versions,
)
from esper.shell.run_config import RunConfig, resolve
from esper.shell.telemetry import RunDirectory, TelemetryHub, make_run_id, open_hub, print_summary
from esper.shell.telemetry.rundir import tag_failed_run
from esper.shell.trainer import Trainer, TrainingDiverged

RESUMABLE = ("epochs", "device", "precision", "telemetry_level", "profile", "events", "tensorboard",
             "progress", "checkpoint_every", "keep_checkpoints")


def load_data(cfg: RunConfig, device: torch.device) -> TaskData:
    """The task's data; text windows follow the host's block size when --host overrides it."""
    block = None
    if cfg.host is not None and task_preset(cfg.task).modality == "text":
        block = getattr(host_config(cfg.host), "block_size", None)
    return load_task(cfg.task, device=device, data_dir=cfg.data_dir, data_seed=cfg.data_seed,
                     train_size=cfg.train_size, val_size=cfg.val_size, tokenizer=cfg.tokenizer, block_size=block)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name} is not available on this machine; use --device cpu")
    return torch.device(name)


@attrs.define
class Run:
    cfg: RunConfig
    run_id: str
    run_dir: RunDirectory
    trainer: Trainer
    hub: TelemetryHub
    config_record: dict[str, Any]
    started: float = attrs.field(factory=time.perf_counter)


def train(cfg: RunConfig, *, out: str | None = None, resume: str | None = None) -> RunSummary | None:
    """Run (or continue) one training run; returns its summary (None for a PPO learning run, whose
    summary is rl_summary.json). Raises user errors as typed exceptions."""
    if cfg.controller == "ppo" and cfg.policy is None:
        from esper.shell.rl.runner import train_ppo

        train_ppo(cfg, out=out, resume=resume)
        return None
    if resume is not None:
        return _resume(cfg, Path(resume))
    device = resolve_device(cfg.device)
    data = load_data(cfg, device)
    run_id = make_run_id(cfg.task, cfg.controller, cfg.seed)
    run_dir = RunDirectory(out or f"runs/{run_id}")
    record = {"run_id": run_id, "config": cfg.to_sections(), "data_source": codec.encode(data.source),
              "versions": versions()}
    run_dir.write_config(record)
    trainer = _trainer(cfg, data, device)
    hub = _hub(cfg, run_id, run_dir, start_seq=0)
    run = Run(cfg, run_id, run_dir, trainer, hub, record)
    hub.emit(RunStarted(task=cfg.task, controller=cfg.controller, seed=cfg.seed, epochs=trainer.epochs,
                        device=str(device), precision="bf16" if trainer.autocast else "fp32",
                        host_params=trainer.model.host_params,
                        config=record["config"], data_source=record["data_source"], versions=record["versions"]))
    return _loop(run)


def _trainer(cfg: RunConfig, data: TaskData, device: torch.device) -> Trainer:
    """The run's trainer; `--controller ppo --policy RUN_DIR` decides with the trained policy."""
    if cfg.controller != "ppo":
        return Trainer(cfg, data, device)
    from esper.shell.rl.policy_run import PolicyDecider, load_policy

    saved = load_policy(cfg.policy)
    trainer = Trainer(cfg, data, device, measure_fossils=True)
    trainer.decider = PolicyDecider(saved, trainer)
    return trainer


def draw_report(run_dir: Path) -> None:
    """The run's PNGs; a drawing failure costs the pictures (one warning), never the run's data."""
    from esper.shell.report import ReportError, write_report

    try:
        write_report(run_dir)
    except (ReportError, OSError, ValueError) as exc:
        print(f"esper-run: warning: report not drawn ({exc}); retry with esper-run report {run_dir}",
              file=sys.stderr)


def _hub(cfg: RunConfig, run_id: str, run_dir: RunDirectory, start_seq: int) -> TelemetryHub:
    return open_hub(run_id, run_dir, level=cfg.telemetry_level, profile=cfg.profile, progress=cfg.progress or None,
                    tensorboard=cfg.tensorboard, events_copy=cfg.events, start_seq=start_seq)


def _loop(run: Run) -> RunSummary:
    trainer, hub = run.trainer, run.hub
    status = "ok"
    try:
        while trainer.epoch < trainer.epochs:
            result = trainer.run_epoch()
            hub.set_epoch(result.epoch)
            hub.emit_all(result.events, epoch=result.epoch)
            hub.emit(result.metrics, epoch=result.epoch)
            run.run_dir.append_metrics(result.metrics)
            if result.epoch % run.cfg.checkpoint_every == 0 and result.epoch < trainer.epochs:
                _checkpoint(run, f"epoch-{result.epoch:04d}")
    except TrainingDiverged as exc:
        status = "aborted"
        hub.emit(getattr(trainer, "abort_event", GovernorAbort(epoch=trainer.epoch + 1, reason="panic",
                                                               rollbacks=trainer.governor.rollbacks)))
        tag_failed_run(exc, run.run_dir.path)
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except Exception as exc:
        # A crash mid-epoch leaves the model half-stepped: no "final" checkpoint (the last periodic
        # one stays the resume point), status "aborted", and the traceback goes to <run>/error.txt.
        status = "aborted"
        tag_failed_run(exc, run.run_dir.path)
        raise
    finally:
        _finish(run, status)
    return run.run_dir.read_summary()


def _checkpoint(run: Run, name: str) -> None:
    started = time.perf_counter()
    run.hub.flush()
    payload = run_payload(run.trainer, run_id=run.run_id, config=run.config_record["config"],
                          data_source=run.config_record["data_source"], seq=run.hub.next_seq)
    path = save_run_checkpoint(run.run_dir.path / "checkpoints", name, payload, run.cfg.keep_checkpoints)
    run.hub.emit(CheckpointSaved(path=str(path), epoch=run.trainer.epoch, bytes=path.stat().st_size,
                                 seconds=time.perf_counter() - started))


def _summary(run: Run, status: str, dropped: dict[str, int]) -> RunSummary:
    trainer = run.trainer
    history = trainer.history
    best = max(history, key=lambda h: h[1]) if history else None
    counts = trainer.model.param_counts()
    return RunSummary(
        run_id=run.run_id, status=status, task=run.cfg.task, controller=run.cfg.controller, seed=run.cfg.seed,
        epochs=trainer.epoch, final_val_acc=history[-1][1] if history else None,
        final_val_loss=history[-1][2] if history else None,
        best_val_acc=best[1] if best else None, best_epoch=int(best[0]) if best else None,
        host_params=counts.host, seed_params=counts.live + counts.fossilized,
        wall_s=time.perf_counter() - run.started, data_source=run.config_record["data_source"],
        dropped=dropped, seeds=trainer.records, train_flops=trainer.flops.total)


def _finish(run: Run, status: str) -> None:
    trainer = run.trainer
    if trainer.epoch > 0 and status != "aborted":
        _checkpoint(run, "final" if status == "ok" else "interrupted")
    provisional = _summary(run, status, {})
    run.hub.emit(RunEnded(status=status, epochs=trainer.epoch, final_val_acc=provisional.final_val_acc,
                          final_val_loss=provisional.final_val_loss, best_val_acc=provisional.best_val_acc,
                          best_val_loss=min((h[2] for h in trainer.history), default=None),
                          best_epoch=provisional.best_epoch, params=provisional.total_params,
                          seed_params=provisional.seed_params, seeds_germinated=len(trainer.records),
                          seeds_fossilized=provisional.count("fossilized"),
                          seeds_culled=provisional.count("culled"), rollbacks=trainer.governor.rollbacks,
                          wall_s=provisional.wall_s, run_dir=str(run.run_dir.path)))
    dropped = run.hub.close()
    summary = attrs.evolve(provisional, dropped=dropped)
    run.run_dir.write_summary(summary)
    run.run_dir.close()
    if run.cfg.report and status == "ok":
        draw_report(run.run_dir.path)
    print_summary(summary, run.run_dir.path, table=run.cfg.telemetry_level != "off")


# --- resume -----------------------------------------------------------------------------------


def _resume(flags: RunConfig, target: Path) -> RunSummary:
    path, data = load_run_checkpoint(target)
    saved = resolve({k: v for s in data["run"]["config"].values() for k, v in s.items()}, {})
    cfg = merge_resume(saved, flags)
    run_dir_path = path.parent.parent
    done = int(data["progress"]["epoch"])
    total = cfg.epochs or saved.epochs
    if total is not None and total < done:
        raise ConfigError(f"--epochs {total} is below the {done} epochs already done")
    record = json.loads((run_dir_path / "config.json").read_text(encoding="utf-8"))
    device = resolve_device(cfg.device)
    task_data = load_data(cfg, device)
    trainer = _trainer(cfg, task_data, device)
    restore_trainer(trainer, data)
    if trainer.epoch >= trainer.epochs:
        print(f"nothing to do: {trainer.epoch}/{trainer.epochs} epochs done")
        return RunDirectory(run_dir_path, resume=True).read_summary()
    seq = int(data["progress"]["seq"])
    cut_back(run_dir_path, done, seq)
    run_dir = RunDirectory(run_dir_path, resume=True)
    hub = _hub(cfg, data["run"]["run_id"], run_dir, start_seq=seq)
    run = Run(cfg, data["run"]["run_id"], run_dir, trainer, hub, record)
    hub.emit(RunResumed(checkpoint=str(path), from_epoch=done, from_seq=seq))
    return _loop(run)


def merge_resume(saved: RunConfig, flags: RunConfig, resumable: tuple[str, ...] = RESUMABLE) -> RunConfig:
    """The saved config, with the overrides a resume allows (the flags differing from defaults)."""
    defaults = RunConfig()
    changed = {f.name: getattr(flags, f.name) for f in attrs.fields(RunConfig)
               if getattr(flags, f.name) != getattr(defaults, f.name)}
    refused = sorted(k for k, v in changed.items() if k not in resumable and v != getattr(saved, k))
    if refused:
        raise ConfigError(f"--resume cannot change {', '.join(refused)}; only {', '.join(resumable)} may differ")
    return attrs.evolve(saved, **{k: v for k, v in changed.items() if k in resumable})


def cut_back(run_dir: Path, epoch: int, seq: int) -> None:
    """metrics.csv to the checkpoint's epoch, events.jsonl to its seq (cut lines kept aside)."""
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        with metrics.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if int(r[rows[0].index("epoch")]) <= epoch]
        with metrics.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(kept)
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


__all__ = ["CheckpointError", "train"]
