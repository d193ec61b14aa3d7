"""Shared helpers for the example tests of the pure lifecycle (tests/core/test_gates.py,
test_lifecycle_examples.py): the cifar10 slot layout, rules, hand-built seed states, and
drivers that walk a lifecycle state through boundaries with healthy measurements.

Healthy = every input the measurement plan asks for, comfortably past its gate threshold
(docs/lifecycle.md §3: grad ratio ≥ 0.05, shadow gain ≥ 0.005, contribution ≥ 0.01).
"""

from collections.abc import Mapping
from typing import Any

from esper.core.actions import FactoredAction
from esper.core.alpha import Curve
from esper.core.catalogue import catalogue_for
from esper.core.config import LifecycleConfig, Rules
from esper.core.events import Event
from esper.core.lifecycle import initial_state, measurement_plan, step
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.seed import LifecycleState, SeedState, SlotSpec, SlotState
from esper.core.stages import COOLING, Stage

# The default `cifar10` host's slots (docs/lifecycle.md §7.2).
SPECS = (
    SlotSpec("early", 0, 0, 8, (8, 16, 16)),
    SlotSpec("mid", 1, 1, 16, (16, 8, 8)),
    SlotSpec("late", 2, 2, 32, (32, 4, 4)),
)
CIFAR10_HOST_PARAMS = 6_418
HEALTHY = {"contribution": 0.02, "shadow_gain": 0.02, "grad_ratio": 1.0}

# The stages a seed passes through to reach each stage, in order (docs/lifecycle.md §1.2).
_PATHS = {
    Stage.GERMINATED: (Stage.GERMINATED,),
    Stage.TRAINING: (Stage.GERMINATED, Stage.TRAINING),
    Stage.BLENDING: (Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING),
    Stage.PROBATIONARY: (Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY),
    Stage.FOSSILIZED: (
        Stage.GERMINATED,
        Stage.TRAINING,
        Stage.BLENDING,
        Stage.PROBATIONARY,
        Stage.FOSSILIZED,
    ),
    Stage.CULLED: (Stage.GERMINATED, Stage.TRAINING, Stage.CULLED),
    Stage.EMBARGOED: (Stage.GERMINATED, Stage.TRAINING, Stage.CULLED, Stage.EMBARGOED),
    Stage.RESETTING: (Stage.GERMINATED, Stage.TRAINING, Stage.CULLED, Stage.EMBARGOED, Stage.RESETTING),
}


def make_rules(
    horizon: int = 50, topology: str = "cnn", specs: tuple[SlotSpec, ...] = SPECS, **overrides: Any
) -> Rules:
    """Rules for the layout, config `LifecycleConfig.for_horizon(horizon, **overrides)` (H = 50: defaults)."""
    return Rules.for_layout(topology, specs, config=LifecycleConfig.for_horizon(horizon, **overrides))


def fresh(enabled: set[str] | None = None) -> LifecycleState:
    return initial_state("cnn", SPECS, enabled)


def seed_state(
    stage: Stage = Stage.TRAINING, *, slot: int = 0, blueprint: str = "norm", tempo: int = 5, **fields: Any
) -> SeedState:
    """A valid seed of `stage` in slot `slot` of SPECS; `fields` override any SeedState field."""
    spec = catalogue_for("cnn").spec(blueprint)
    dim = SPECS[slot].dim
    values: dict[str, Any] = {
        "seed_id": f"{SPECS[slot].name}#0",
        "slot_id": SPECS[slot].name,
        "blueprint": blueprint,
        "blueprint_index": spec.index,
        "dim": dim,
        "n_params": spec.params(dim),
        "tempo": tempo,
        "curve": Curve.SIGMOID,
        "stage": stage,
        "previous_stage": _PATHS[stage][-2] if stage != Stage.GERMINATED else Stage.DORMANT,
        "epochs_in_stage": 1,
        "age": 5,
        "germinated_epoch": 0,
        "acc_at_germination": 0.5,
        "acc_at_stage_start": 0.5,
        "ramp_step": tempo
        if stage in (Stage.PROBATIONARY, Stage.FOSSILIZED)
        else int(stage == Stage.BLENDING),
        "alpha": {Stage.BLENDING: 0.5, Stage.PROBATIONARY: 1.0, Stage.FOSSILIZED: 1.0}.get(stage, 0.0),
        "cull_reason": "action" if stage in COOLING else None,
        "history": tuple((s, i) for i, s in enumerate(_PATHS[stage])),
    }
    values.update(fields)
    return SeedState(**values)


def slot_with(
    seed: SeedState | None = None, *, slot: int = 0, enabled: bool = True, **fields: Any
) -> SlotState:
    return SlotState(
        slot_id=SPECS[slot].name, index=slot, dim=SPECS[slot].dim, enabled=enabled, seed=seed, **fields
    )


def state_with(*seeds: SeedState | None, epoch: int = 10, **fields: Any) -> LifecycleState:
    """A cnn state whose slot i holds seeds[i] (missing trailing slots are DORMANT)."""
    padded = (*seeds, *([None] * (len(SPECS) - len(seeds))))
    slots = tuple(
        slot_with(seed, slot=i, germinations=int(seed is not None)) for i, seed in enumerate(padded)
    )
    return LifecycleState(topology="cnn", slots=slots, epoch=epoch, **fields)


def measure(
    state: LifecycleState, *, epoch: int | None = None, val_acc: float = 0.5, **per_slot: Mapping[str, Any]
) -> EpochMeasurements:
    """Healthy values for exactly what `measurement_plan(state)` asks; `per_slot[slot_id]` overrides."""
    slots = []
    for plan in measurement_plan(state).slots:
        values: dict[str, Any] = {
            "contribution": HEALTHY["contribution"] if plan.contribution else None,
            "shadow_gain": HEALTHY["shadow_gain"] if plan.shadow_gain else None,
            "grad_ratio": HEALTHY["grad_ratio"] if plan.grad_ratio else None,
            "seed_finite": True,
        }
        values.update(per_slot.get(plan.slot_id, {}))
        slots.append(SlotMeasurement(slot_id=plan.slot_id, **values))
    return EpochMeasurements(epoch=state.epoch + 1 if epoch is None else epoch, val_acc=val_acc, slots=slots)


def boundary(
    state: LifecycleState, rules: Rules, action: FactoredAction | None = None, **per_slot: Mapping[str, Any]
) -> tuple[LifecycleState, tuple[Event, ...]]:
    """One boundary (`step`) with healthy measurements (overridden per slot) and `action` (WAIT)."""
    return step(state, action or FactoredAction.wait(), measure(state, **per_slot), rules)


def wait_until(
    state: LifecycleState, rules: Rules, epoch: int, **per_slot: Mapping[str, Any]
) -> LifecycleState:
    """WAIT at every boundary up to and including boundary `epoch`."""
    while state.epoch < epoch:
        state, _ = boundary(state, rules, **per_slot)
    return state


def germinate_at(
    rules: Rules,
    epoch: int,
    *,
    slot: int = 0,
    blueprint: int = 0,
    tempo: int = 5,
    state: LifecycleState | None = None,
) -> tuple[LifecycleState, tuple[Event, ...]]:
    """WAIT until boundary epoch − 1, then GERMINATE (tempo given in epochs) at boundary `epoch`."""
    state = wait_until(state or fresh(), rules, epoch - 1)
    action = FactoredAction.germinate(slot, blueprint, rules.config.tempo_choices.index(tempo))
    return boundary(state, rules, action)


def drive_until(
    state: LifecycleState,
    rules: Rules,
    slot: int,
    stage: Stage,
    *,
    limit: int = 40,
    **per_slot: Mapping[str, Any],
) -> LifecycleState:
    """WAIT (healthy) until slot `slot` is in `stage` after a boundary; fails after `limit` boundaries."""
    for _ in range(limit):
        if state.slots[slot].stage == stage:
            return state
        state, _ = boundary(state, rules, **per_slot)
    raise AssertionError(f"slot {slot} did not reach {stage} within {limit} boundaries")
