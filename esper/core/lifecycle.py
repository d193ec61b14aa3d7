"""The seed lifecycle as pure functions over frozen values (docs/lifecycle.md §1–§2).

At every boundary b (after training epoch b and its validation):

    view           = record(state, m)              # counters +1, this boundary's measurements
    masks          = legality.masks(view, rules)   # what the controller may do
    action         = controller(view, masks)
    state', events = apply_action(view, action, rules)   # = advance(act(view, action))

`step(state, action, m, rules)` is the same three lines without the controller. A governor
rollback replaces `record` by `rollback(snapshot, state, m, rules)`.

`act` applies at most one controller action; `advance` then applies at most one mechanical
edge per slot. A slot that `act` or `rollback` changed at this boundary is recognisable
without bookkeeping: its seed has `epochs_in_stage == 0` (every other seed was just recorded,
so has ≥ 1), and `advance` leaves it alone.
"""

import math

import attrs

from esper.core.actions import FactoredAction, Op
from esper.core.alpha import ramp_alpha
from esper.core.config import LifecycleConfig, Rules
from esper.core.errors import IllegalActionError, IllegalTransition, LifecycleError
from esper.core.events import (
    ActionRejected,
    Event,
    GateEvaluated,
    SeedCulled,
    SeedFossilized,
    SeedGerminated,
    SeedRetired,
    StageChanged,
)
from esper.core.gates import GateResult, g1, g2, g3
from esper.core.legality import can_apply
from esper.core.measurements import EpochMeasurements, MeasurementPlan, SlotMeasurement, SlotPlan
from esper.core.seed import LifecycleState, SeedState, SlotSpec, SlotState
from esper.core.stages import EDGES, LIVE, Stage, is_cull_reason

Events = tuple[Event, ...]


@attrs.frozen
class ParamCounts:
    host: int
    live: int
    fossilized: int

    @property
    def total(self) -> int:
        return self.host + self.live + self.fossilized


def initial_state(
    topology: str, slot_specs: tuple[SlotSpec, ...] | list[SlotSpec],
    enabled: set[str] | frozenset[str] | None = None,
) -> LifecycleState:
    """Every slot DORMANT at epoch 0; `enabled` names the slots in use (default: all)."""
    names = [spec.name for spec in slot_specs]
    enabled_names = set(names) if enabled is None else set(enabled)
    if unknown := enabled_names - set(names):
        raise LifecycleError(f"cannot enable unknown slots {sorted(unknown)}; host has {names}")
    slots = tuple(
        SlotState(slot_id=spec.name, index=i, dim=spec.dim, enabled=spec.name in enabled_names)
        for i, spec in enumerate(slot_specs)
    )
    return LifecycleState(topology=topology, slots=slots)


# --- transitions -------------------------------------------------------------------------


def transition(
    seed: SeedState, to: Stage, *, reason: str, epoch: int, val_acc: float, config: LifecycleConfig
) -> tuple[SeedState | None, Events]:
    """Move a seed along one legal edge (E2–E12). Returns None for DORMANT (the seed retires).

    Germination (E1) creates the seed and is done by `act`; every other stage change in esper
    goes through here.
    """
    if (seed.stage, to) not in EDGES:
        raise IllegalTransition(seed.seed_id, seed.stage, to)
    if to == Stage.CULLED and not is_cull_reason(reason):
        raise LifecycleError(f"{seed.seed_id}: {reason!r} is not a cull reason")
    changed = StageChanged(
        slot=seed.slot_id, seed_id=seed.seed_id, from_stage=seed.stage, to_stage=to,
        reason=reason, epoch=epoch, previous_epochs_in_stage=seed.epochs_in_stage,
    )
    if to == Stage.DORMANT:
        history = (*seed.history, (to, epoch))
        return None, (changed, SeedRetired(slot=seed.slot_id, seed_id=seed.seed_id,
                                           history=history, cull_reason=seed.cull_reason))
    ramp_step, alpha = _ramp_on_entry(seed, to, config)
    moved = attrs.evolve(
        seed,
        stage=to,
        previous_stage=seed.stage,
        previous_epochs_in_stage=seed.epochs_in_stage,
        epochs_in_stage=0,
        acc_at_stage_start=val_acc,
        history=(*seed.history, (to, epoch)),
        ramp_step=ramp_step,
        alpha=alpha,
        cull_reason=reason if to == Stage.CULLED else seed.cull_reason,
    )
    return moved, (changed, *_arrival_events(seed, moved, reason, epoch))


def _ramp_on_entry(seed: SeedState, to: Stage, config: LifecycleConfig) -> tuple[int, float]:
    if to == Stage.BLENDING:
        return 1, ramp_alpha(seed.curve, seed.tempo, 1, steepness=config.sigmoid_steepness)
    if to in (Stage.PROBATIONARY, Stage.FOSSILIZED):
        return seed.tempo, 1.0
    return 0, 0.0


def _arrival_events(before: SeedState, after: SeedState, reason: str, epoch: int) -> Events:
    if after.stage == Stage.FOSSILIZED:
        return (SeedFossilized(slot=after.slot_id, seed_id=after.seed_id,
                               contribution=before.contribution, n_params=after.n_params,
                               age=after.age, epoch=epoch),)
    if after.stage == Stage.CULLED:
        return (SeedCulled(slot=after.slot_id, seed_id=after.seed_id, reason=reason,
                           stage=before.stage, age=after.age, contribution=before.contribution,
                           epoch=epoch),)
    return ()


def _move(slot: SlotState, to: Stage, reason: str, view: LifecycleState,
          config: LifecycleConfig) -> tuple[SlotState, Events]:
    """`transition` at slot level: also keeps the slot's cull counter."""
    if slot.seed is None:
        raise LifecycleError(f"slot {slot.slot_id} holds no seed to move to {to}")
    seed, events = transition(slot.seed, to, reason=reason, epoch=view.epoch,
                              val_acc=view.val_acc, config=config)
    return attrs.evolve(slot, seed=seed, culls=slot.culls + (to == Stage.CULLED)), events


def _with_slot(state: LifecycleState, slot: SlotState, **changes: object) -> LifecycleState:
    slots = tuple(slot if s.index == slot.index else s for s in state.slots)
    return attrs.evolve(state, slots=slots, **changes)


def _gate_event(result: GateResult) -> GateEvaluated:
    return GateEvaluated(slot=result.slot_id or "", seed_id=result.seed_id,
                         gate=str(result.gate), passed=result.passed, reason=result.reason,
                         checks=result.checks)


# --- record ----------------------------------------------------------------------------------


def record(state: LifecycleState, m: EpochMeasurements) -> LifecycleState:
    """Count one more epoch for every seed and store this boundary's measurements.

    Every measurement field is overwritten (None where not measured), so nothing a gate
    reads is older than this boundary.
    """
    if m.epoch != state.epoch + 1:
        raise LifecycleError(f"measurements for epoch {m.epoch}, expected {state.epoch + 1}")
    ids = {s.slot_id for s in state.slots}
    if unknown := {sm.slot_id for sm in m.slots} - ids:
        raise LifecycleError(f"measurements for unknown slots {sorted(unknown)}")
    _check_finite("val_acc", m.val_acc)
    slots = tuple(_record_slot(slot, m.for_slot(slot.slot_id)) for slot in state.slots)
    return attrs.evolve(state, slots=slots, epoch=m.epoch, val_acc=m.val_acc)


def _check_finite(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise LifecycleError(f"measurement {name} must be finite or None, got {value}")


def _record_slot(slot: SlotState, sm: SlotMeasurement) -> SlotState:
    if slot.seed is None:
        return slot
    for name in ("contribution", "shadow_gain", "grad_ratio"):
        _check_finite(f"{slot.slot_id}.{name}", getattr(sm, name))
    seed = attrs.evolve(
        slot.seed,
        age=slot.seed.age + 1,
        epochs_in_stage=slot.seed.epochs_in_stage + 1,
        contribution=sm.contribution,
        shadow_gain=sm.shadow_gain,
        grad_ratio=sm.grad_ratio,
        seed_finite=sm.seed_finite,
    )
    return attrs.evolve(slot, seed=seed)


# --- act -------------------------------------------------------------------------------------


def act(view: LifecycleState, action: FactoredAction, rules: Rules) -> tuple[LifecycleState, Events]:
    """Apply the controller's action to the view, if `can_apply` allows it.

    A refused action raises `IllegalActionError` (strict config) or returns the view unchanged
    with an `ActionRejected` event.
    """
    verdict = can_apply(view, action, rules)
    if not verdict.passed:
        if rules.config.strict:
            raise IllegalActionError(action, verdict.reason or "refused")
        return view, (ActionRejected(action=action.canonical(), reason=verdict.reason or ""),)
    if action.op == Op.WAIT:
        return view, ()
    slot, cfg = view.slots[action.slot], rules.config
    gate_events = (_gate_event(verdict),) if verdict.gate is not None else ()
    if action.op == Op.GERMINATE:
        new_slot, events = _germinate(view, slot, action, rules)
        return _with_slot(view, new_slot, next_serial=view.next_serial + 1), gate_events + events
    if action.op == Op.CULL:
        new_slot, events = _move(slot, Stage.CULLED, "action", view, cfg)
    else:
        new_slot, events = _move(slot, Stage.FOSSILIZED, "G5", view, cfg)
    return _with_slot(view, new_slot), gate_events + events


def _germinate(view: LifecycleState, slot: SlotState, action: FactoredAction,
               rules: Rules) -> tuple[SlotState, Events]:
    """E1 (create the seed), then G1 decides E2 (TRAINING) or E3 (CULLED), all in this act."""
    cfg = rules.config
    spec = rules.catalogue.germinable[action.blueprint]
    tempo = cfg.tempo_choices[action.tempo]
    seed = SeedState(
        seed_id=f"{slot.slot_id}#{view.next_serial}", slot_id=slot.slot_id,
        blueprint=spec.name, blueprint_index=spec.index, dim=slot.dim,
        n_params=spec.params(slot.dim), tempo=tempo, curve=cfg.blend_curve,
        stage=Stage.GERMINATED, previous_stage=Stage.DORMANT, germinated_epoch=view.epoch,
        acc_at_germination=view.val_acc, acc_at_stage_start=view.val_acc,
        history=((Stage.GERMINATED, view.epoch),),
    )
    born = attrs.evolve(slot, seed=seed, germinations=slot.germinations + 1)
    events: Events = (
        SeedGerminated(slot=slot.slot_id, seed_id=seed.seed_id, blueprint=spec.name,
                       tempo=tempo, curve=cfg.blend_curve.name, n_params=seed.n_params,
                       epoch=view.epoch),
        StageChanged(slot=slot.slot_id, seed_id=seed.seed_id, from_stage=Stage.DORMANT,
                     to_stage=Stage.GERMINATED, reason="germinate", epoch=view.epoch,
                     previous_epochs_in_stage=0),
    )
    probe = g1(born, rules.validation)
    if probe.passed:
        moved, more = _move(born, Stage.TRAINING, "G1", view, cfg)
    else:
        moved, more = _move(born, Stage.CULLED, f"g1:{probe.reason}", view, cfg)
    return moved, (*events, _gate_event(probe), *more)


def plant_fossil(state: LifecycleState, slot_id: str, blueprint: str, rules: Rules) -> tuple[LifecycleState, Events]:
    """A seed that is part of the host from the start: FOSSILIZED at the current epoch, having
    passed every stage on paper (history E1…E8 at one boundary). For static baselines with
    fixed seeds (`--static-seeds`); G0 still decides whether the blueprint may go there."""
    slot = state.slot(slot_id)
    k = rules.catalogue.germinable_index(blueprint)
    tempo_index = rules.config.tempo_choices.index(rules.config.default_tempo)
    acted, events = act(state, FactoredAction.germinate(slot.index, k, tempo_index), rules)
    seed = acted.slots[slot.index].seed
    if seed is None or seed.stage != Stage.TRAINING:
        raise LifecycleError(f"cannot plant {blueprint} in {slot_id}: {seed.cull_reason if seed else 'refused'}")
    path = (Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED)
    fossil = attrs.evolve(seed, stage=Stage.FOSSILIZED, previous_stage=Stage.PROBATIONARY, alpha=1.0,
                          ramp_step=seed.tempo, history=(*seed.history, *((s, state.epoch) for s in path[1:])))
    return _with_slot(acted, attrs.evolve(acted.slots[slot.index], seed=fossil)), events


# --- advance ---------------------------------------------------------------------------------


def advance(state: LifecycleState, rules: Rules) -> tuple[LifecycleState, Events]:
    """Apply at most one mechanical edge per slot (docs/lifecycle.md §1.4), first matching rule.

    Seeds whose stage began at this boundary (`epochs_in_stage == 0`) are left alone.
    """
    slots: list[SlotState] = []
    events: list[Event] = []
    for slot in state.slots:
        if slot.seed is None or slot.seed.epochs_in_stage == 0:
            slots.append(slot)
            continue
        new_slot, slot_events = _advance_slot(slot, state, rules.config)
        slots.append(new_slot)
        events.extend(slot_events)
    return attrs.evolve(state, slots=tuple(slots)), tuple(events)


def _advance_slot(slot: SlotState, view: LifecycleState,
                  cfg: LifecycleConfig) -> tuple[SlotState, Events]:
    seed = slot.seed
    assert seed is not None  # advance() passes occupied slots only

    def move(to: Stage, reason: str, *before: Event) -> tuple[SlotState, Events]:
        moved, events = _move(slot, to, reason, view, cfg)
        return moved, (*before, *events)

    stage, eis = seed.stage, seed.epochs_in_stage
    if stage == Stage.GERMINATED:
        raise LifecycleError(f"{seed.seed_id} is GERMINATED outside act")
    if stage in (Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY) and not seed.seed_finite:
        return move(Stage.CULLED, "nonfinite")
    if stage == Stage.TRAINING:
        gate = g2(slot, cfg)
        if gate.passed:
            return move(Stage.BLENDING, "G2", _gate_event(gate))
        if eis >= cfg.max_training_epochs:
            return move(Stage.CULLED, "training_timeout", _gate_event(gate))
        return slot, (_gate_event(gate),)
    if stage == Stage.BLENDING:
        gate = g3(slot, cfg)
        if gate.passed:
            return move(Stage.PROBATIONARY, "G3", _gate_event(gate))
        ramp_step = min(seed.ramp_step + 1, seed.tempo)
        alpha = ramp_alpha(seed.curve, seed.tempo, ramp_step, steepness=cfg.sigmoid_steepness)
        ramped = attrs.evolve(seed, ramp_step=ramp_step, alpha=alpha)
        return attrs.evolve(slot, seed=ramped), (_gate_event(gate),)
    if stage == Stage.PROBATIONARY:
        if seed.contribution is not None and seed.contribution <= 0.0:
            return move(Stage.CULLED, "negative_contribution")
        if eis >= cfg.max_probation_epochs:
            return move(Stage.CULLED, "probation_timeout")
        return slot, ()
    dwell = {Stage.CULLED: (cfg.cull_dwell, Stage.EMBARGOED),
             Stage.EMBARGOED: (cfg.embargo_dwell, Stage.RESETTING),
             Stage.RESETTING: (cfg.reset_dwell, Stage.DORMANT)}
    if stage in dwell and eis >= dwell[stage][0]:
        return move(dwell[stage][1], "dwell")
    return slot, ()


# --- the boundary, composed -------------------------------------------------------------------


def apply_action(view: LifecycleState, action: FactoredAction,
                 rules: Rules) -> tuple[LifecycleState, Events]:
    """`advance(act(view, action))`: the controller's action, then the mechanical edges."""
    acted, act_events = act(view, action, rules)
    advanced, advance_events = advance(acted, rules)
    return advanced, act_events + advance_events


def step(state: LifecycleState, action: FactoredAction, m: EpochMeasurements,
         rules: Rules) -> tuple[LifecycleState, Events]:
    """One whole boundary: record the measurements, then act and advance."""
    return apply_action(record(state, m), action, rules)


def rollback(snapshot: LifecycleState, state: LifecycleState, m: EpochMeasurements,
             rules: Rules) -> tuple[LifecycleState, Events]:
    """The view after a governor rollback to `snapshot` (docs/lifecycle.md §1.3).

    Records `m` on the snapshot with every measurement missing (the epoch jumps to
    `m.epoch`, counters advance once), keeps `next_serial` and the slot counters of the
    pre-rollback `state`, and culls every LIVE seed (`governor_rollback`, no age check).
    """
    if m.epoch != state.epoch + 1:
        raise LifecycleError(f"rollback measurements for epoch {m.epoch}, expected {state.epoch + 1}")
    if [s.slot_id for s in snapshot.slots] != [s.slot_id for s in state.slots]:
        raise LifecycleError("snapshot and state have different slot layouts")
    if snapshot.epoch > state.epoch:
        raise LifecycleError(f"snapshot epoch {snapshot.epoch} is after state epoch {state.epoch}")
    blank = EpochMeasurements(epoch=m.epoch, val_acc=m.val_acc)
    view = record(attrs.evolve(snapshot, epoch=m.epoch - 1), blank)
    view = attrs.evolve(view, next_serial=max(state.next_serial, snapshot.next_serial), slots=tuple(
        attrs.evolve(s, germinations=cur.germinations, culls=cur.culls)
        for s, cur in zip(view.slots, state.slots, strict=True)
    ))
    events: list[Event] = []
    for slot in view.slots:
        if slot.stage in LIVE:
            culled, slot_events = _move(slot, Stage.CULLED, "governor_rollback", view, rules.config)
            view = _with_slot(view, culled)
            events.extend(slot_events)
    return view, tuple(events)


# --- queries ---------------------------------------------------------------------------------


def measurement_plan(state: LifecycleState, *, fossil_contribution: bool = False) -> MeasurementPlan:
    """What the shell must measure during the coming epoch, per slot (docs/lifecycle.md §2.4)."""
    def plan(slot: SlotState) -> SlotPlan:
        stage = slot.stage
        return SlotPlan(
            slot_id=slot.slot_id,
            contribution=stage in (Stage.BLENDING, Stage.PROBATIONARY)
            or (stage == Stage.FOSSILIZED and fossil_contribution),
            shadow_gain=stage == Stage.TRAINING,
            grad_ratio=stage in (Stage.TRAINING, Stage.BLENDING),
            finite=stage in (Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY),
        )
    return MeasurementPlan(tuple(plan(s) for s in state.slots))


def cooldown_left(seed: SeedState | None, config: LifecycleConfig) -> int:
    """Records until a cooling slot is DORMANT again (0 when not cooling)."""
    if seed is None:
        return 0
    remaining = {
        Stage.CULLED: config.cull_dwell + config.embargo_dwell + config.reset_dwell,
        Stage.EMBARGOED: config.embargo_dwell + config.reset_dwell,
        Stage.RESETTING: config.reset_dwell,
    }
    if seed.stage not in remaining:
        return 0
    return max(remaining[seed.stage] - seed.epochs_in_stage, 0)


def param_counts(state: LifecycleState, host_params: int) -> ParamCounts:
    """Host, live-seed and fossilized parameter counts, from the catalogue formulas."""
    live = sum(s.seed.n_params for s in state.slots
               if s.seed is not None and s.stage in (Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY))
    fossil = sum(s.seed.n_params for s in state.slots
                 if s.seed is not None and s.stage == Stage.FOSSILIZED)
    return ParamCounts(host=host_params, live=live, fossilized=fossil)
