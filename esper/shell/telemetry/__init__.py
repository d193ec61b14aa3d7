"""Telemetry (docs/runtime.md §4): the per-run hub, its backends and the run directory.

The event values and their wire form live in the pure core (`esper.core.events`,
`esper.core.wire`); this package stamps, queues and writes them. The TensorBoard and Weights &
Biases backends are imported lazily (`esper.shell.telemetry.tensorboard`, `.wandb`) because their
extras are optional; `require_extras` checks them before a run writes anything.
"""

import importlib
import os
from collections.abc import Mapping
from typing import Any, TextIO

from esper.core.errors import ConfigError
from esper.core.wire import Level, Profile
from esper.shell.telemetry.console import ConsoleBackend, done_line, epoch_line, print_summary
from esper.shell.telemetry.hub import Backend, Record, TelemetryHub
from esper.shell.telemetry.jsonl import JsonlBackend, read_records
from esper.shell.telemetry.rundir import (
    MetricsCsv,
    RunDirectory,
    RunDirectoryError,
    atomic_write_json,
    make_run_id,
)

__all__ = [
    "Backend", "ConsoleBackend", "JsonlBackend", "Level", "MetricsCsv", "Profile", "Record",
    "RunDirectory", "RunDirectoryError", "TelemetryHub", "atomic_write_json", "done_line",
    "epoch_line", "make_run_id", "open_hub", "print_summary", "read_records", "require_extras",
]


def require_extras(*, tensorboard: bool = False, wandb: bool = False) -> None:
    """The optional backends a run asks for can be imported; otherwise one ConfigError (exit 2) that
    says which extra to install, raised before the run directory is touched."""
    for wanted, module in ((tensorboard, "tensorboard"), (wandb, "wandb")):
        if wanted:
            try:
                importlib.import_module(f"esper.shell.telemetry.{module}")
            except ImportError as exc:
                raise ConfigError(str(exc)) from exc


def open_hub(
    run_id: str,
    run_dir: RunDirectory | None,
    *,
    level: Level | str = Level.NORMAL,
    profile: Profile | str = Profile.STANDARD,
    console: bool = True,
    progress: bool | None = None,
    console_file: TextIO | None = None,
    tensorboard: bool = False,
    wandb: Mapping[str, Any] | None = None,
    events_copy: str | os.PathLike[str] | None = None,
    env: int = 0,
    start_seq: int = 0,
    stderr: TextIO | None = None,
) -> TelemetryHub:
    """A hub wired as the CLI flags ask (§4.6). At level `off` it has no backend at all, so no
    `events.jsonl` is created; results files are the run directory's business either way. `wandb`:
    the W&B backend's project, entity and config (`WandbBackend`'s keywords), None for none."""
    level = Level.parse(level)
    hub = TelemetryHub(run_id, level=level, profile=profile, env=env, start_seq=start_seq, stderr=stderr)
    if level == Level.OFF:
        return hub
    if run_dir is not None:
        hub.attach(run_dir.events_backend())
    if events_copy is not None:
        hub.attach(JsonlBackend(events_copy, name=f"events:{os.fspath(events_copy)}"))
    if console:
        hub.attach(ConsoleBackend(file=console_file, progress=progress))
    if tensorboard:
        from esper.shell.telemetry.tensorboard import TensorBoardBackend  # optional extra

        log_dir = run_dir.tensorboard_dir if run_dir is not None else f"runs/{run_id}/tb"
        hub.attach(TensorBoardBackend(log_dir))
    if wandb is not None:
        from esper.shell.telemetry.wandb import WandbBackend  # optional extra

        hub.attach(WandbBackend(run_id, directory=run_dir.wandb_dir if run_dir is not None else None, **wandb))
    return hub
