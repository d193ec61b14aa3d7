"""Weights & Biases backend (docs/runtime.md §4.6, extra `esper[wandb]`): a W&B run per esper run.

The W&B run's id and name are the esper run id, so `--resume` appends to the same W&B run
(`resume="allow"`; offline, each process writes its own `offline-run-*-<id>` directory and
`wandb sync` joins them). Its config is the run's resolved config (config.json's `config`).

History step: a growth run logs at step t = its epoch (epoch.metrics, seed.metrics, diag.* of
epoch t share the row t); a PPO learning run logs at step u = its update (ppo.update u and the
rollout of batch u-1 that fed it, its per-env tuples as means). Each event's numeric fields are
logged generically (`scalars`), so a new field or a new diag kind needs no code here. `run.end` (a PPO
run's `rl.run_ended`) becomes the summary (final accuracy, status) and the exit code `finish` reports.

`wandb.init` runs on the hub's worker thread at the first event, so a slow or failing W&B
(no network, no login) delays no training step and is detached like any backend. Where the
files go: `WANDB_DIR` if set, else the run directory (`<run>/wandb/`); `WANDB_MODE=offline`
keeps everything local. Importing this module without the extra raises one ImportError that
says how to install it.
"""

import os
from collections.abc import Mapping
from typing import Any

try:
    import wandb
except ImportError as exc:
    raise ImportError(
        "Weights & Biases logging needs the 'wandb' extra: pip install 'esper[wandb]' (or run without --wandb)"
    ) from exc

from esper.core import codec
from esper.core import events as ev
from esper.shell.telemetry.hub import Record

MAX_VECTOR = 64  # a per-class vector is logged item by item; a longer list (or a matrix) stays in the JSONL


def scalars(prefix: str, value: Any) -> dict[str, float | int]:
    """The numeric leaves of a wire-encoded value: `{"a/b": 1.0, "a/v/0": 2}`; bools as 0/1; strings,
    None, matrices and long lists are left out (they are not chartable numbers)."""
    if isinstance(value, bool):
        return {prefix: int(value)}
    if isinstance(value, int | float):
        return {prefix: value}
    if isinstance(value, Mapping):
        return {k: v for key, item in value.items() for k, v in scalars(f"{prefix}/{key}", item).items()}
    if isinstance(value, list | tuple) and len(value) <= MAX_VECTOR and all(
            isinstance(v, int | float) for v in value):
        return {f"{prefix}/{i}": v for i, v in enumerate(value)}
    return {}


def event_scalars(event: ev.Event, skip: tuple[str, ...] = ()) -> dict[str, float | int]:
    """Every numeric field of `event` (exact floats, not the JSONL's 7 digits) but `skip`."""
    fields = codec.encode(event)
    return {k: v for name, value in fields.items() if name not in skip for k, v in scalars(name, value).items()}


def rollout_scalars(e: ev.RolloutDone) -> dict[str, float | int]:
    """A rollout batch's numbers; its per-env tuples (final_acc, raw_return, ...) as their means,
    `final_acc/mean`: one chart per statistic, whatever n_envs."""
    fields = codec.encode(e)
    means = {f"{name}/mean": sum(v) / len(v) for name, v in fields.items()
             if isinstance(v, list) and v and all(isinstance(x, int | float) for x in v)}
    rest = {name: v for name, v in fields.items() if name != "batch" and not isinstance(v, list)}
    return means | {k: v for name, value in rest.items() for k, v in scalars(name, value).items()}


class WandbBackend:
    name = "wandb"

    def __init__(self, run_id: str, *, project: str, entity: str | None = None,
                 config: Mapping[str, Any] | None = None, directory: str | os.PathLike[str] | None = None) -> None:
        self.run_id, self.project, self.entity = run_id, project, entity
        self._config = dict(config or {})
        self._dir = None if os.environ.get("WANDB_DIR") else directory  # the user's WANDB_DIR wins
        self._run: Any = None
        self._exit_code = 0  # until run.end / rl.run_ended says otherwise

    def _wandb_run(self) -> Any:
        if self._run is None:
            if self._dir is not None:
                os.makedirs(self._dir, exist_ok=True)
            # console="off": esper prints its own console and progress; W&B must not wrap stdout
            self._run = wandb.init(project=self.project, entity=self.entity, name=self.run_id, id=self.run_id,
                                   resume="allow", config=self._config,
                                   dir=os.fspath(self._dir) if self._dir is not None else None,
                                   settings=wandb.Settings(console="off"))
        return self._run

    def handle(self, record: Record) -> None:
        e, run = record.event, self._wandb_run()
        if isinstance(e, ev.RunEnded | ev.RLRunEnded):
            run.summary.update({k: v for k, v in codec.encode(e).items() if v is not None and k != "run_dir"})
            self._exit_code = 0 if e.status == "ok" else 1
            if e.status == "interrupted":
                run.mark_preempting()  # a resumable stop, not a failure of the code
            return
        step, values = self._scalars(e, record.env) or (0, {})
        if values:  # an event with no number to chart (a matrix, a lifecycle event) stays in the JSONL
            run.log(values, step=step)

    def _scalars(self, e: ev.Event, env: int) -> tuple[int, dict[str, Any]] | None:
        """(history step, {key: value}) of an event W&B charts, or None."""
        if isinstance(e, ev.EpochMetrics):
            prefix = f"env{env}/" if env else ""
            values = event_scalars(e, skip=("slots",))
            for s in e.slots:
                values |= {f"slot/{s.slot}/alpha": s.alpha, **scalars(f"slot/{s.slot}/contribution", s.contribution)}
            return e.epoch, {prefix + k: v for k, v in values.items()}
        if isinstance(e, ev.SeedMetrics):
            return e.epoch, {f"seed/{e.slot}/{k}": v for k, v in event_scalars(e, skip=("epoch",)).items()}
        if isinstance(e, ev.PPOUpdate):
            return e.update, {f"ppo/{k}": v for k, v in event_scalars(e, skip=("update",)).items()}
        if isinstance(e, ev.RolloutDone):
            return e.batch + 1, {f"rollout/{k}": v for k, v in rollout_scalars(e).items()}
        if e.kind.startswith("diag.") and isinstance(getattr(e, "epoch", None), int):
            name = e.kind.removeprefix("diag.")
            return e.epoch, {f"diag/{name}/{k}": v for k, v in event_scalars(e, skip=("epoch",)).items()}
        return None

    def flush(self) -> None:
        """Nothing to do: W&B's own service process writes and uploads its records as they come."""

    def close(self) -> None:
        if self._run is not None:
            self._run.finish(exit_code=self._exit_code)
            self._run = None
