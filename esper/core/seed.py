"""Frozen lifecycle values: `SlotSpec`, `SeedState`, `SlotState`, `LifecycleState` (docs/lifecycle.md §2).

Plain Python scalars only, so states hash, compare and serialise exactly. Each class checks
its invariants on construction (and so on every `attrs.evolve`, and on `esper.core.codec.decode`,
which writes and reads them as JSON types, enums by name).
"""

import itertools

import attrs

from esper.core.alpha import Curve
from esper.core.catalogue import TOPOLOGIES
from esper.core.errors import LifecycleError
from esper.core.stages import COOLING, EDGES, HAS_MODULE, Stage

MAX_HISTORY = 7  # GERMINATED, TRAINING, BLENDING, PROBATIONARY, CULLED, EMBARGOED, RESETTING


@attrs.frozen
class SlotSpec:
    """Where a host offers a slot: features of `dim` channels/width with `feature_shape` per sample."""

    name: str
    index: int
    position: int
    dim: int
    feature_shape: tuple[int, ...] = attrs.field(converter=tuple)


def _fail(owner: str, message: str) -> None:
    raise LifecycleError(f"invalid {owner}: {message}")


@attrs.frozen(kw_only=True)
class SeedState:
    seed_id: str
    slot_id: str
    blueprint: str
    blueprint_index: int
    dim: int
    n_params: int
    tempo: int
    curve: Curve = attrs.field(converter=Curve)
    stage: Stage = attrs.field(converter=Stage)
    previous_stage: Stage = attrs.field(converter=Stage)
    epochs_in_stage: int = 0
    previous_epochs_in_stage: int = 0
    age: int = 0
    germinated_epoch: int
    acc_at_germination: float
    acc_at_stage_start: float
    ramp_step: int = 0
    alpha: float = 0.0
    contribution: float | None = None
    shadow_gain: float | None = None
    grad_ratio: float | None = None
    seed_finite: bool = True
    cull_reason: str | None = None
    history: tuple[tuple[Stage, int], ...] = attrs.field(
        converter=lambda h: tuple((Stage(s), int(e)) for s, e in h)
    )

    def __attrs_post_init__(self) -> None:
        who = f"seed {self.seed_id}"
        if self.stage == Stage.DORMANT:
            _fail(who, "a seed is never DORMANT (the slot holds None)")
        if not 0.0 <= self.alpha <= 1.0:
            _fail(who, f"alpha {self.alpha} outside [0, 1]")
        if self.stage in (Stage.PROBATIONARY, Stage.FOSSILIZED) and self.alpha != 1.0:
            _fail(who, f"alpha must be 1 in {self.stage}, got {self.alpha}")
        if self.stage not in (Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED) and self.alpha:
            _fail(who, f"alpha must be 0 in {self.stage}, got {self.alpha}")
        if (self.cull_reason is not None) != (self.stage in COOLING):
            _fail(who, f"cull_reason {self.cull_reason!r} does not match stage {self.stage}")
        if not 0 <= self.epochs_in_stage <= self.age:
            _fail(who, f"epochs_in_stage {self.epochs_in_stage} not in [0, age={self.age}]")
        if self.blueprint == "noop":
            _fail(who, "noop is never germinated")
        if self.grad_ratio is not None and not self.grad_ratio >= 0.0:
            _fail(who, f"grad_ratio {self.grad_ratio} must be >= 0")
        if not self.ramp_step_fits():
            _fail(who, f"ramp_step {self.ramp_step} impossible in {self.stage} with tempo {self.tempo}")
        self._check_history(who)

    def ramp_step_fits(self) -> bool:
        if self.stage == Stage.BLENDING:
            return 1 <= self.ramp_step <= self.tempo
        if self.stage in (Stage.PROBATIONARY, Stage.FOSSILIZED):
            return self.ramp_step == self.tempo
        return self.ramp_step == 0

    def _check_history(self, who: str) -> None:
        stages = [stage for stage, _ in self.history]
        if not 1 <= len(stages) <= MAX_HISTORY or stages[0] != Stage.GERMINATED or stages[-1] != self.stage:
            _fail(who, f"history {stages} must start GERMINATED and end in {self.stage}")
        if any((a, b) not in EDGES for a, b in itertools.pairwise(stages)):
            _fail(who, f"history {stages} holds a step that is not a legal edge")

    @property
    def has_module(self) -> bool:
        return self.stage in HAS_MODULE


@attrs.frozen(kw_only=True)
class SlotState:
    slot_id: str
    index: int
    dim: int
    enabled: bool = True
    seed: SeedState | None = None
    germinations: int = 0
    culls: int = 0

    def __attrs_post_init__(self) -> None:
        who = f"slot {self.slot_id}"
        if self.seed is not None:
            if not self.enabled:
                _fail(who, "a disabled slot is always DORMANT")
            if self.seed.slot_id != self.slot_id or self.seed.dim != self.dim:
                _fail(who, f"holds seed {self.seed.seed_id} of another slot or dim")
        if min(self.germinations, self.culls) < 0:
            _fail(who, "counters must be >= 0")

    @property
    def stage(self) -> Stage:
        return self.seed.stage if self.seed is not None else Stage.DORMANT


@attrs.frozen(kw_only=True)
class LifecycleState:
    topology: str
    slots: tuple[SlotState, ...] = attrs.field(converter=tuple)
    epoch: int = 0
    next_serial: int = 0
    val_acc: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            _fail("lifecycle state", f"topology {self.topology!r} not in {TOPOLOGIES}")
        if not any(s.enabled for s in self.slots):
            _fail("lifecycle state", "needs at least one enabled slot")
        if [s.index for s in self.slots] != list(range(len(self.slots))):
            _fail("lifecycle state", "slots must be in host order with index == position")
        if len({s.slot_id for s in self.slots}) != len(self.slots):
            _fail("lifecycle state", "slot ids must be unique")

    @property
    def germinations(self) -> int:
        return sum(s.germinations for s in self.slots)

    def slot(self, slot_id: str) -> SlotState:
        for s in self.slots:
            if s.slot_id == slot_id:
                return s
        raise LifecycleError(f"no slot {slot_id!r}; slots are {[s.slot_id for s in self.slots]}")
