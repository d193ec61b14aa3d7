"""Run checkpoints (docs/runtime.md §7): everything needed to continue a run exactly.

    format "esper.run", schema_version 1, versions, run {run_id, controller, config, data_source},
    progress {epoch, seq}, model (the "esper.model/1" checkpoint), controller {tracker, heuristic,
    lr_factor, records, history}, governor {state, snapshot}, rng {torch, data, augment, dropout},
    diagnostics {costs, train_s, rng} (a profile computing diagnostics: its budget and `diag` generator)

A checkpoint written before the dropout stream existed has no rng.dropout; its run resumes with the
stream at its start (its dropout had drawn from the global RNG).

Written atomically (temp file, fsync, rename, fsync dir); loaded with weights_only=True. A PPO
learning run's checkpoint ("esper.rl_run", esper.shell.rl.runner) shares the envelope up to progress,
the file handling here, and the run driver's `Save` requests and `ResumePoint`.
"""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import torch

from esper import __version__
from esper.core import codec
from esper.core.governor import GovernorState
from esper.core.summary import SeedRecord
from esper.shell.checkpoint import (
    CheckpointError,
    model_checkpoint,
    read_checkpoint,
    write_atomic,
)
from esper.shell.telemetry.rundir import atomic_write_json
from esper.shell.trainer import Trainer

FORMAT, SCHEMA_VERSION = "esper.run", 1


@attrs.frozen
class Save:
    """A checkpoint a run's program asks for: `<run>/checkpoints/<name>.pt`. `latest` points
    latest.json at it and prunes the older periodic ones; False writes a side copy (PPO's `best`)."""

    name: str
    latest: bool = True


@attrs.frozen
class ResumePoint:
    """The checkpoint a run continues from: its file and its payload."""

    path: Path
    data: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def steps(self) -> int:
        """Epochs (a Trainer's run) or updates (a PPO run) done."""
        return int(self.data["progress"]["epoch"])

    @property
    def seq(self) -> int:
        """The seq of the first event after the checkpoint."""
        return int(self.data["progress"]["seq"])

    def config_values(self) -> dict[str, Any]:
        """The run's config, flat `{key: value}` (the payload keeps it by section); the `rl` table stays one
        value, as `load_config_file` gives it (its field names overlap RunConfig's)."""
        sections = self.data["run"]["config"]
        flat = {k: v for name, section in sections.items() if name != "rl" for k, v in section.items()}
        return flat | ({"rl": dict(sections["rl"])} if "rl" in sections else {})


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the esper package this process imported
GIT_TIMEOUT_S = 2.0
UNKNOWN_COMMIT = "unknown"


def git_commit(package_dir: Path) -> str:
    """The commit checked out in the git checkout whose top folder holds `package_dir` (esper's package
    folder), else "unknown": no git binary, not in a repository, no commit yet, git slower than 2 s, or a
    copy not at a checkout's top (a pip-installed esper in a project's virtual environment, whose
    enclosing repository is someone else's). GIT_* variables are dropped, so a git hook's GIT_DIR
    cannot name another repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        out = subprocess.run(["git", "-C", str(package_dir), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_COMMIT
    lines = out.splitlines()
    if len(lines) != 2 or Path(lines[0]).resolve() / package_dir.name != package_dir.resolve():
        return UNKNOWN_COMMIT
    return lines[1]


@functools.cache
def checkout_commit() -> str:
    """`git_commit` of the esper this process runs, read once per process."""
    return git_commit(PACKAGE_DIR)


def versions() -> dict[str, str]:
    """What a run's record says it ran with: esper, torch and python versions, and the git commit of
    esper's checkout ("unknown" outside one). Runs recorded before the commit was have no `git_commit`."""
    return {"esper": __version__, "torch": str(torch.__version__), "python": sys.version.split()[0],
            "git_commit": checkout_commit()}


def run_payload(trainer: Trainer, *, run_id: str, config: dict[str, Any], data_source: dict[str, Any],
                seq: int, user: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run checkpoint's payload; `user`: the record's script parts (a resume rebuilds them from it)."""
    return {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "versions": versions(),
        "run": {"run_id": run_id, "controller": trainer.cfg.controller, "config": config,
                "data_source": data_source, **({"user": user} if user else {})},
        "progress": {"epoch": trainer.epoch, "seq": seq},
        "model": model_checkpoint(trainer.model, trainer.state, trainer.optimizer),
        "controller": {"tracker": codec.encode(trainer.tracker), "heuristic": codec.encode(trainer.heuristic),
                       "lr_factor": trainer.lr_factor, "records": codec.encode(trainer.records),
                       "history": [list(h) for h in trainer.history], "train_flops": trainer.flops.total},
        "governor": {"state": codec.encode(trainer.governor), "snapshot": trainer.snapshot},
        "rng": {"torch": torch.get_rng_state(), "data": trainer.data_gen.get_state(),
                "augment": trainer.augment_gen.get_state(), "dropout": trainer.dropout_gen.get_state()},
        **({"diagnostics": trainer.diagnostics.state()} if trainer.diagnostics is not None else {}),
    }


def save_run_checkpoint(folder: Path, name: str, payload: dict[str, Any], keep: int,
                        pattern: str = "epoch-*.pt") -> Path:
    """Write `<folder>/<name>.pt` atomically, point `latest.json` at it, keep the newest `keep`
    periodic ones (`pattern`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp.*"):
        stale.unlink(missing_ok=True)
    path = write_atomic(folder / f"{name}.pt", payload)
    atomic_write_json(folder / "latest.json", {"checkpoint": path.name, "epoch": payload["progress"]["epoch"]})
    periodic = sorted(folder.glob(pattern))
    for old in periodic[:-keep] if keep > 0 else periodic:
        old.unlink(missing_ok=True)
    return path


def resolve_checkpoint(target: Path) -> Path:
    """A checkpoint file, or a run directory's newest complete one (latest.json)."""
    if target.is_dir():
        latest = target / "checkpoints" / "latest.json"
        if not latest.exists():
            raise CheckpointError(f"checkpoint not found: {target} has no checkpoints/latest.json")
        try:
            name = json.loads(latest.read_text(encoding="utf-8"))["checkpoint"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{latest} is corrupt ({exc})") from exc
        target = latest.parent / name
    if not target.exists():
        raise CheckpointError(f"checkpoint not found: {target}")
    return target


def load_run_checkpoint(target: Path, expected_format: str | tuple[str, ...] = FORMAT) -> tuple[Path, dict[str, Any]]:
    """The checkpoint (a file, or a run directory's latest) and its payload, of one of the expected formats."""
    formats = (expected_format,) if isinstance(expected_format, str) else expected_format
    path = resolve_checkpoint(target)
    data = read_checkpoint(path)
    if data.get("format") not in formats:
        what = "an esper run" if FORMAT in formats else "a PPO training run's"
        raise CheckpointError(f"{path} is not {what} checkpoint (format {data.get('format')!r})")
    if not isinstance(data.get("schema_version"), int) or data["schema_version"] > SCHEMA_VERSION:
        raise CheckpointError(f"{path} has schema {data.get('schema_version')}; this esper reads <= {SCHEMA_VERSION}")
    return path, data


def restore_trainer(trainer: Trainer, data: dict[str, Any]) -> None:
    """Put a freshly built trainer (same config) into the checkpoint's exact state."""
    try:
        controller = data["controller"]
        trainer.state = trainer.restore_snapshot({"model": data["model"], "tracker": controller["tracker"],
                                                  "heuristic": controller["heuristic"]})
        trainer.lr_factor = float(controller["lr_factor"])
        trainer.records = codec.decode(tuple[SeedRecord, ...], controller["records"])
        trainer.history = [tuple(h) for h in controller["history"]]
        trainer.flops.total = int(controller["train_flops"])
        trainer.governor = codec.decode(GovernorState, data["governor"]["state"])
        trainer.snapshot = data["governor"]["snapshot"]
        torch.set_rng_state(data["rng"]["torch"])
        trainer.data_gen.set_state(data["rng"]["data"])
        trainer.augment_gen.set_state(data["rng"]["augment"])
        if "dropout" in data["rng"]:
            trainer.dropout_gen.set_state(data["rng"]["dropout"])
        if "diagnostics" in data and trainer.diagnostics is not None:
            trainer.diagnostics.load_state(data["diagnostics"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not match this run ({type(exc).__name__}: {exc})") from exc
