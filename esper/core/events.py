"""Lifecycle events: frozen values the core returns and the shell turns into telemetry.

Each class has a stable wire name (`kind`) and `to_dict()` with JSON types.
"""

from typing import Any, ClassVar

import attrs

from esper.core.stages import Stage


def _plain(value: Any) -> Any:
    if isinstance(value, Stage):
        return value.name
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if attrs.has(type(value)):
        return {k: _plain(v) for k, v in attrs.asdict(value, recurse=False).items()}
    return value


class Event:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in attrs.asdict(self, recurse=False).items()}


@attrs.frozen(kw_only=True)
class SeedGerminated(Event):
    kind: ClassVar[str] = "seed.germinated"
    slot: str
    seed_id: str
    blueprint: str
    tempo: int
    curve: str
    n_params: int
    epoch: int


@attrs.frozen(kw_only=True)
class StageChanged(Event):
    kind: ClassVar[str] = "seed.stage_changed"
    slot: str
    seed_id: str
    from_stage: Stage
    to_stage: Stage
    reason: str
    epoch: int
    previous_epochs_in_stage: int


@attrs.frozen(kw_only=True)
class GateEvaluated(Event):
    kind: ClassVar[str] = "seed.gate_evaluated"
    slot: str
    seed_id: str | None
    gate: str
    passed: bool
    reason: str | None
    checks: tuple[Any, ...]


@attrs.frozen(kw_only=True)
class SeedFossilized(Event):
    kind: ClassVar[str] = "seed.fossilized"
    slot: str
    seed_id: str
    contribution: float | None
    n_params: int
    age: int
    epoch: int


@attrs.frozen(kw_only=True)
class SeedCulled(Event):
    kind: ClassVar[str] = "seed.culled"
    slot: str
    seed_id: str
    reason: str
    stage: Stage
    age: int
    contribution: float | None
    epoch: int


@attrs.frozen(kw_only=True)
class SeedRetired(Event):
    kind: ClassVar[str] = "seed.retired"
    slot: str
    seed_id: str
    history: tuple[tuple[Stage, int], ...]
    cull_reason: str | None


@attrs.frozen(kw_only=True)
class ActionRejected(Event):
    kind: ClassVar[str] = "controller.action_rejected"
    action: Any
    reason: str
