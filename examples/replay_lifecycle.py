"""Replay a run's `events.jsonl` through the pure lifecycle and check every transition it logged.

    esper-run train --out runs/h ...            (telemetry level normal or debug: the default)
    python examples/replay_lifecycle.py runs/h

The lifecycle is a pure function of (state, measurements, action), so a run's log is enough to
re-derive it. Per boundary e, from the records of epoch e:

    m             = EpochMeasurements(e, val_acc, per-seed contribution / shadow_gain / grad_ratio)
                    (epoch.metrics and seed.metrics; a `nonfinite` cull says the seed was not finite)
    view          = record(state, m)                  or rollback(states[snapshot], state, m) after
                                                      a governor.rollback
    state, events = apply_action(view, action, rules) the action is epoch.metrics' `action`

and the replayed lifecycle events the run's telemetry level admits (germinated, stage_changed,
gate_evaluated, fossilized, culled, retired, action_rejected) must equal the logged ones, in order,
field by field (floats to the 7 digits the wire keeps). The replayed state at the newest checkpoint
must equal the checkpoint's. The rules (config, catalogue, probed validation table) come from the
run's config and checkpoint, as the trainer built them.

Prints a line per seed and `replayed E epochs, N events, M transitions: K mismatches`; exit 0, 1 on
a mismatch, 2 when RUN_DIR cannot be replayed (no events, level minimal, no checkpoint).
"""

import argparse
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from itertools import zip_longest
from pathlib import Path
from typing import Any

import attrs

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.config import Rules
from esper.core.errors import LifecycleError
from esper.core.events import Event, SeedGerminated, StageChanged
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.seed import LifecycleState
from esper.core.stages import Stage
from esper.core.tasks import TASKS
from esper.core.wire import Level, Profile, WireError, admits, event_fields, from_dict, to_wire
from esper.shell.checkpoint import CheckpointError, load_model_checkpoint
from esper.shell.run_checkpoint import load_run_checkpoint
from esper.shell.run_config import load_config_file, resolve
from esper.shell.telemetry.jsonl import read_records

LIFECYCLE_KINDS = frozenset({"seed.germinated", "seed.stage_changed", "seed.gate_evaluated", "seed.fossilized",
                             "seed.culled", "seed.retired", "controller.action_rejected"})
VIEW_FIELDS = ("seed_id", "stage", "alpha", "epochs_in_stage", "age")
ABS_TOL, REL_TOL = 1e-6, 1e-5  # the wire keeps 7 significant digits; the replay starts from them
_ACTION = re.compile(r"^(?P<op>[A-Z]+)(?:\((?P<args>[^)]*)\))?$")


class CannotReplay(Exception):
    """The run directory does not hold what a replay needs (a user error: exit 2)."""


@attrs.define
class EpochLog:
    """The records of one epoch the replay reads."""

    metrics: dict[str, Any] | None = None
    seeds: list[dict[str, Any]] = attrs.field(factory=list)
    lifecycle: list[Event] = attrs.field(factory=list)
    rollback: dict[str, Any] | None = None


@attrs.frozen
class Run:
    rules: Rules
    initial: LifecycleState
    level: Level
    profile: Profile
    checkpoint: LifecycleState  # the newest checkpoint's state
    epochs: dict[int, EpochLog]


# --- reading the run ---------------------------------------------------------------------------


def load_run(run_dir: Path) -> Run:
    if not (run_dir / "events.jsonl").is_file():
        raise CannotReplay(f"{run_dir} has no events.jsonl (not a run directory, or telemetry level off)")
    cfg = resolve(load_config_file(run_dir / "config.json"), {})
    level, profile = Level.parse(cfg.telemetry_level), Profile.parse(cfg.profile)
    if level < Level.NORMAL:
        raise CannotReplay(f"{run_dir} was logged at level {level.name.lower()}: the replay needs normal or "
                           "debug (seed.metrics carry the measurements)")
    preset = TASKS[cfg.task]
    config = preset.lifecycle_config(cfg.epochs or preset.epochs, max_seeds=cfg.max_seeds)
    try:
        _, saved = load_run_checkpoint(run_dir)
        loaded = load_model_checkpoint(saved["model"], lifecycle=config)
    except CheckpointError as exc:
        raise CannotReplay(str(exc)) from None
    rules = loaded.model.rules(config)
    state = lifecycle.initial_state(loaded.model.topology, loaded.model.host.slot_specs,
                                    set(cfg.slots) if cfg.slots else None)
    for entry in cfg.static_seeds:  # a static baseline's fixed seeds, as the trainer plants them
        slot_id, blueprint = entry.split(":")
        state, _ = lifecycle.plant_fossil(state, slot_id, blueprint, rules)
    return Run(rules, state, level, profile, loaded.state, read_epochs(run_dir / "events.jsonl"))


def read_epochs(path: Path) -> dict[int, EpochLog]:
    """Group the records the replay needs by their epoch stamp, decoding lifecycle events."""
    epochs: dict[int, EpochLog] = defaultdict(EpochLog)
    for record in read_records(path):
        kind, epoch, fields = record["event"], record["epoch"], record["fields"]
        if kind == "epoch.metrics":
            epochs[epoch].metrics = fields
        elif kind == "seed.metrics":
            epochs[epoch].seeds.append(fields)
        elif kind == "governor.rollback":
            epochs[epoch].rollback = fields
        elif kind in LIFECYCLE_KINDS:
            try:
                epochs[epoch].lifecycle.append(from_dict(kind, fields))
            except WireError as exc:
                raise CannotReplay(f"{path}: seq {record['seq']}: {exc}") from None
    return dict(epochs)


def parse_action(text: str) -> FactoredAction:
    """`str(FactoredAction)` back: `WAIT`, `CULL(slot=1)`, `GERMINATE(slot=0, blueprint=2, tempo=1)`."""
    match = _ACTION.match(text.strip())
    if match is None:
        raise ValueError(f"not an action: {text!r}")
    heads = dict(part.split("=") for part in (match["args"] or "").replace(" ", "").split(",") if part)
    return FactoredAction(Op[match["op"]], **{k: int(v) for k, v in heads.items()})


def measurements(epoch: int, log: EpochLog) -> EpochMeasurements:
    """What `record` stored at this boundary: seed.metrics is the recorded view's measurements."""
    assert log.metrics is not None
    val_acc = float(log.metrics["val_acc"])
    nonfinite = {e.slot for e in log.lifecycle if isinstance(e, StageChanged) and e.reason == "nonfinite"}
    slots = tuple(SlotMeasurement(slot_id=s["slot"], contribution=_number(s["contribution"]),
                                  shadow_gain=_number(s["shadow_gain"]), grad_ratio=_number(s["grad_ratio"]),
                                  seed_finite=s["slot"] not in nonfinite) for s in log.seeds)
    return EpochMeasurements(epoch=epoch, val_acc=val_acc if math.isfinite(val_acc) else 0.0, slots=slots)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


# --- replaying and comparing -------------------------------------------------------------------


def replay_epoch(run: Run, states: dict[int, LifecycleState],
                 epoch: int) -> tuple[LifecycleState, LifecycleState, list[Event]]:
    """Boundary `epoch` through the pure lifecycle: (view, state after, every event in the trainer's order)."""
    log, state = run.epochs[epoch], states[epoch - 1]
    assert log.metrics is not None
    m = measurements(epoch, log)
    if log.rollback is not None:
        snapshot = states[int(log.rollback["snapshot_epoch"])]
        view, events = lifecycle.rollback(snapshot, state, EpochMeasurements(epoch=epoch, val_acc=m.val_acc),
                                          run.rules)
    else:
        view, events = lifecycle.record(state, m), ()
    after, acted = lifecycle.apply_action(view, parse_action(log.metrics["action"]), run.rules)
    return view, after, [*events, *acted]


def differences(logged: Any, replayed: Any, path: str = "", source: str = "logged") -> list[str]:
    """Where two wire values differ (floats within the wire's precision count as equal)."""
    if isinstance(logged, dict) and isinstance(replayed, dict):
        keys = list(dict.fromkeys([*logged, *replayed]))
        return [d for k in keys for d in differences(logged.get(k), replayed.get(k), f"{path}.{k}", source)]
    if isinstance(logged, list) and isinstance(replayed, list) and len(logged) == len(replayed):
        return [d for i, (a, b) in enumerate(zip(logged, replayed, strict=True))
                for d in differences(a, b, f"{path}[{i}]", source)]
    if _is_number(logged) and _is_number(replayed):
        if math.isclose(float(logged), float(replayed), rel_tol=REL_TOL, abs_tol=ABS_TOL):
            return []
    elif logged == replayed:
        return []
    return [f"{path.lstrip('.')}: {source} {logged!r}, replayed {replayed!r}"]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare_epoch(epoch: int, logged: list[Event], replayed: Iterable[Event]) -> list[str]:
    out = []
    for i, (mine, theirs) in enumerate(zip_longest(logged, replayed)):
        where = f"epoch {epoch} event {i}"
        if theirs is None or mine is None:
            missing = "replayed" if theirs is None else "logged"
            event = mine if theirs is None else theirs
            out.append(f"{where}: {event.kind} {_label(event)} not {missing}")
        elif mine.kind != theirs.kind:
            out.append(f"{where}: logged {mine.kind} {_label(mine)}, replayed {theirs.kind} {_label(theirs)}")
        else:
            out += [f"{where} {mine.kind} {_label(mine)}: {d}" for d in differences(event_fields(mine),
                                                                                   event_fields(theirs))]
    return out


def compare_view(epoch: int, logged: list[dict[str, Any]], view: LifecycleState) -> list[str]:
    """seed.metrics shows each seed of the recorded view: its stage, α and counters must be the replay's."""
    out = []
    for fields in logged:
        seed = view.slot(fields["slot"]).seed
        mine = {k: fields[k] for k in VIEW_FIELDS}
        theirs = to_wire({k: getattr(seed, k) for k in VIEW_FIELDS}) if seed is not None else None
        out += [f"epoch {epoch} seed.metrics {fields['seed_id']}: {d}" for d in differences(mine, theirs)]
    return out


def _label(event: Event) -> str:
    return str(getattr(event, "seed_id", None) or getattr(event, "slot", None) or "")


@attrs.define
class Replay:
    epochs: int = 0
    events: int = 0
    transitions: int = 0
    mismatches: list[str] = attrs.field(factory=list)
    states: dict[int, LifecycleState] = attrs.field(factory=dict)


def replay(run: Run) -> Replay:
    out = Replay(states={0: run.initial})
    epoch = 1
    while epoch in run.epochs and run.epochs[epoch].metrics is not None:
        log = run.epochs[epoch]
        try:
            view, state, produced = replay_epoch(run, out.states, epoch)
        except (LifecycleError, KeyError, ValueError) as exc:
            out.mismatches.append(f"epoch {epoch}: the pure lifecycle refuses the logged boundary ({exc})")
            break
        shown = [e for e in produced if admits(run.level, run.profile, e)]
        out.mismatches += compare_epoch(epoch, log.lifecycle, shown) + compare_view(epoch, log.seeds, view)
        out.events += len(log.lifecycle)
        out.transitions += sum(isinstance(e, StageChanged) for e in log.lifecycle)
        out.states[epoch], out.epochs, epoch = state, epoch, epoch + 1
    final = out.states.get(run.checkpoint.epoch)
    if final is None:
        out.mismatches.append(f"the replay did not reach the checkpoint's epoch {run.checkpoint.epoch}")
    else:
        out.mismatches += [f"state at checkpoint epoch {run.checkpoint.epoch}: {d}"
                           for d in differences(to_wire(run.checkpoint), to_wire(final), source="saved")]
    return out


# --- report --------------------------------------------------------------------------------------


def seed_lines(run: Run) -> list[str]:
    """One line per seed: slot, blueprint, every stage with the epoch it began, the last reason."""
    seeds: dict[str, dict[str, Any]] = {}
    for epoch in sorted(run.epochs):
        for event in run.epochs[epoch].lifecycle:
            if isinstance(event, SeedGerminated):
                seeds[event.seed_id] = {"slot": event.slot, "blueprint": event.blueprint, "path": []}
            elif isinstance(event, StageChanged) and event.seed_id in seeds:
                seeds[event.seed_id]["path"].append(f"{event.to_stage.name}@{event.epoch}")
                if event.to_stage in (Stage.CULLED, Stage.FOSSILIZED):
                    seeds[event.seed_id]["fate"] = f"{event.to_stage.name.lower()}: {event.reason}"
    return [f"{seed_id:<10} {s['slot']:<8} {s['blueprint']:<14} {' → '.join(s['path'])}  ({s.get('fate', 'live')})"
            for seed_id, s in seeds.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a heuristic or static run directory")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run_dir)
    except (CannotReplay, OSError, ValueError) as exc:
        print(f"replay_lifecycle: error: {exc}", file=sys.stderr)
        return 2
    result = replay(run)
    for line in seed_lines(run):
        print(line)
    for line in result.mismatches:
        print(f"MISMATCH {line}")
    print(f"replayed {result.epochs} epochs, {result.events} events, {result.transitions} transitions: "
          f"{len(result.mismatches)} mismatches")
    return 1 if result.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
