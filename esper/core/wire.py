"""The wire side of events (docs/runtime.md §4.2–4.4): registry, levels, profiles and the JSON codec.

Pure: the shell stamps `seq`/`time` and writes the line; everything about *what* an event
looks like on the wire, at which level it is emitted and whether it may be dropped is decided
here, so the schema round trip (`to_wire` → JSON → `from_dict`) is testable without I/O.
Events are written and read by `esper.core.codec` (the format of every file); the wire only
rounds floats to 7 significant digits, spells NaN/±Inf as strings, and ignores unknown fields.
"""

import math
from collections.abc import Mapping
from enum import Enum, IntEnum, StrEnum
from typing import Any

from esper.core import codec, diag_events
from esper.core import events as ev
from esper.core.actions import FactoredAction, Op
from esper.core.gates import Check
from esper.core.stages import Stage

SCHEMA_VERSION = 1
FLOAT_DIGITS = 7  # significant digits of every float on the wire


class Level(IntEnum):
    """`--telemetry-level`; an event is emitted iff its level is ≤ the run's (and the run's is not OFF)."""

    OFF = 0
    MINIMAL = 1
    NORMAL = 2
    DEBUG = 3

    @classmethod
    def parse(cls, name: "str | Level") -> "Level":
        return name if isinstance(name, Level) else cls[name.strip().upper()]


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Profile(Enum):
    """`--profile`: which diagnostics are computed (and so emitted) and their time budget."""

    MINIMAL = "minimal"
    STANDARD = "standard"
    DIAGNOSTIC = "diagnostic"
    RESEARCH = "research"

    @classmethod
    def parse(cls, name: "str | Profile") -> "Profile":
        return name if isinstance(name, Profile) else cls(name.strip().lower())

    @property
    def budget(self) -> float:
        """Share of the epoch's train time the diagnostics may spend (§4.4)."""
        return _PROFILE_BUDGET[self]

    @property
    def diagnostics(self) -> frozenset[str]:
        """The `diag.*` kinds this profile computes."""
        return _PROFILE_DIAGS[self]

    @property
    def detailed(self) -> bool:
        """Per-layer gradient norms in `diag.gradients` (diagnostic and research)."""
        return self in (Profile.DIAGNOSTIC, Profile.RESEARCH)

    @property
    def sharpness_directions(self) -> int:
        return 4 if self == Profile.RESEARCH else 2


_PROFILE_BUDGET = {Profile.MINIMAL: 0.0, Profile.STANDARD: 0.02, Profile.DIAGNOSTIC: 0.10,
                   Profile.RESEARCH: 0.25}
_STANDARD = frozenset({"diag.gradients"})
_DIAGNOSTIC = _STANDARD | {"diag.weights", "diag.sharpness", "diag.per_class", "diag.activations",
                           "diag.isolation", "diag.skipped"}
_PROFILE_DIAGS = {
    Profile.MINIMAL: frozenset(),
    Profile.STANDARD: _STANDARD | {"diag.skipped"},
    Profile.DIAGNOSTIC: _DIAGNOSTIC,
    Profile.RESEARCH: _DIAGNOSTIC | {"diag.confusion"},
}

# --- registry ---------------------------------------------------------------------------------


def _event_classes() -> dict[str, type[ev.Event]]:
    # From the module's namespace rather than `Event.__subclasses__()`: `attrs.frozen` replaces
    # each class, and the replaced original lingers among the subclasses until collected.
    found: dict[str, type[ev.Event]] = {}
    for cls in (*vars(ev).values(), *vars(diag_events).values()):
        if not (isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event):
            continue
        if cls.kind in found:
            raise TypeError(f"event kind {cls.kind!r} used by {found[cls.kind]} and {cls}")
        found[cls.kind] = cls
    return dict(sorted(found.items()))


EVENT_TYPES: dict[str, type[ev.Event]] = _event_classes()

M, N, D = Level.MINIMAL, Level.NORMAL, Level.DEBUG
# Level per kind (§4.3). `seed.gate_evaluated` is N when it fails and D when it passes (level_of).
LEVELS: dict[str, Level] = {
    "run.start": M, "run.resume": M, "run.end": M,
    "epoch.metrics": N, "seed.metrics": N,
    "seed.germinated": M, "seed.stage_changed": M, "seed.fossilized": M, "seed.culled": M,
    "seed.retired": M, "seed.gate_evaluated": N, "controller.action_rejected": M,
    "host.stabilised": N, "host.destabilised": N, "controller.input_missing": M,
    "governor.anomaly": N, "governor.rollback": M, "governor.abort": M,
    "checkpoint.saved": M, "checkpoint.loaded": M, "telemetry.dropped": M, "telemetry.warning": M,
    "ppo.update": M, "rl.run_started": M, "rl.run_ended": M, "rl.rollout_done": M, "rl.env_truncated": M,
    "rl.anomaly": M,
    "diag.gradients": N, "diag.sharpness": N, "diag.per_class": N, "diag.confusion": N,
    "diag.weights": N, "diag.activations": N, "diag.isolation": N, "diag.skipped": D,
}
_W, _E = Severity.WARNING, Severity.ERROR
SEVERITIES: dict[str, Severity] = {
    "controller.input_missing": _W, "controller.action_rejected": _W, "governor.anomaly": _W,
    "governor.rollback": _W, "governor.abort": _E, "telemetry.dropped": _W, "telemetry.warning": _W,
    "rl.env_truncated": _W, "rl.anomaly": _W,
}
# Kinds that bypass the hub's queue bound: a few per epoch, and a run is unreadable without them.
_NEVER_DROPPED_PREFIXES = ("run.", "seed.", "governor.", "checkpoint.", "telemetry.", "rl.")
_DROPPABLE_EXCEPTIONS = frozenset({"seed.metrics"})


def level_of(event: ev.Event) -> Level:
    """The lowest telemetry level at which `event` is emitted; unknown kinds default to NORMAL."""
    if isinstance(event, ev.GateEvaluated):
        return Level.DEBUG if event.passed else Level.NORMAL
    return LEVELS.get(event.kind, Level.NORMAL)


def severity_of(event: ev.Event) -> Severity:
    if isinstance(event, ev.GateEvaluated) and not event.passed:
        return Severity.INFO  # a failing gate is routine: the seed just stays
    return SEVERITIES.get(event.kind, Severity.INFO)


def droppable(kind: str) -> bool:
    """May the hub drop this kind when a backend's queue is full?"""
    return kind in _DROPPABLE_EXCEPTIONS or not kind.startswith(_NEVER_DROPPED_PREFIXES)


def admits(level: Level, profile: Profile, event: ev.Event) -> bool:
    """Would a run at `level` with `profile` emit `event`? Diagnostics also need the profile."""
    if level == Level.OFF or level_of(event) > level:
        return False
    return not event.kind.startswith("diag.") or event.kind in profile.diagnostics


def wants(level: Level, profile: Profile, kind: str) -> bool:
    """Should the shell compute the diagnostic behind `kind`? (A dropped event is not computed.)"""
    return level != Level.OFF and LEVELS.get(kind, Level.NORMAL) <= level and kind in profile.diagnostics


# --- encoding ---------------------------------------------------------------------------------


def to_wire(value: Any, digits: int | None = FLOAT_DIGITS) -> Any:
    """JSON-ready copy (`codec.encode`): floats to `digits` significant digits (None: exact),
    NaN/±Inf as strings. Events use 7 digits; results files that must reproduce a run use None."""
    return _floats(codec.encode(value), digits)


def _floats(data: Any, digits: int | None) -> Any:
    if isinstance(data, float):
        return _wire_float(data, digits)
    if isinstance(data, Mapping):
        return {str(k): _floats(v, digits) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_floats(v, digits) for v in data]
    if data is None or isinstance(data, str | int):  # bool is an int
        return data
    raise TypeError(f"cannot put {type(data).__name__} {data!r} on the wire")


def _wire_float(x: float, digits: int | None) -> float | str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x if digits is None else float(f"{x:.{digits}g}")


def event_fields(event: ev.Event) -> dict[str, Any]:
    """The record's `fields`: every attrs field of the event, wire-encoded."""
    fields: dict[str, Any] = to_wire(event)
    return fields


# --- decoding ---------------------------------------------------------------------------------


class WireError(ValueError):
    """A record that does not decode to an event of its kind."""


def from_dict(kind: str, fields: Mapping[str, Any]) -> ev.Event:
    """Rebuild the event of wire name `kind` from its record's `fields` (inverse of `event_fields`).

    Unknown field names are ignored so a v1 reader accepts records from a writer that added an
    optional field; a missing required field raises `WireError`.
    """
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise WireError(f"unknown event kind {kind!r}")
    try:
        event: ev.Event = _WIRE.structure(fields, cls)
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"bad {kind} record: {exc!r}") from exc
    return event


def _stage_or_plain(value: Any) -> Any:
    # Gate checks hold Stages next to numbers and bools; on the wire a Stage is its name, and no
    # other check value is a string, so a Stage name decodes back to the Stage.
    return Stage[value] if isinstance(value, str) and value in Stage.__members__ else value


def _decode_check(data: Mapping[str, Any], _: Any = None) -> Check:
    return Check(name=data["name"], value=_stage_or_plain(data["value"]),
                 threshold=_stage_or_plain(data["threshold"]), passed=data["passed"], code=data["code"])


def _decode_action(data: Any, _: Any = None) -> Any:
    if isinstance(data, Mapping) and "op" in data:
        op = data["op"]
        return FactoredAction(Op[op] if isinstance(op, str) else Op(op), data.get("slot", 0),
                              data.get("blueprint", 0), data.get("tempo", 0))
    return data


def _float_from_wire(value: Any, _: Any) -> float:
    return float(value)  # also turns "nan"/"inf"/"-inf" back into floats


# A v1 reader ignores fields a newer writer added. Fields typed `Any` in the lifecycle events
# hold core values rather than plain JSON: their hooks rebuild them.
_WIRE = codec.make_converter(forbid_extra_keys=False, float_hook=_float_from_wire, field_hooks={
    (ev.GateEvaluated, "checks"): lambda v, _: tuple(_decode_check(c) for c in v),
    (ev.ActionRejected, "action"): _decode_action,
})
