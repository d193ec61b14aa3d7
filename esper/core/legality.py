"""The single legality predicate `can_apply` and the exact action masks built from it
(docs/lifecycle.md §9). `act` and `masks` both call `can_apply` on the same view, so an action the
masks allow is always accepted and an action they forbid is always refused.
"""

from esper.core.actions import ActionMasks, FactoredAction, Op, Row
from esper.core.config import Rules
from esper.core.gates import GateResult, blueprint_fits, check, g0, g5
from esper.core.seed import LifecycleState, SlotState
from esper.core.stages import CULLABLE


def can_apply(view: LifecycleState, action: FactoredAction, rules: Rules) -> GateResult:
    """Would `act` accept this action on this view? Returns the deciding gate's checks."""
    if action.op == Op.WAIT:
        return GateResult(None, None, None, ())
    if not 0 <= action.slot < len(view.slots):
        unknown = check("slot", action.slot, len(view.slots), False, "slot_unknown")
        return GateResult(None, None, None, (unknown,))
    slot = view.slots[action.slot]
    cfg = rules.config
    if action.op == Op.GERMINATE:
        return g0(slot, action.blueprint, action.tempo, view.germinations, cfg, rules.catalogue,
                  rules.validation)
    if action.op == Op.FOSSILIZE:
        return g5(slot, cfg)
    return _cull_checks(slot, rules)


def _cull_checks(slot: SlotState, rules: Rules) -> GateResult:
    age = slot.seed.age if slot.seed is not None else None
    old_enough = age is not None and age >= rules.config.min_cull_age
    seed_id = slot.seed.seed_id if slot.seed is not None else None
    return GateResult(None, slot.slot_id, seed_id, (
        check("slot_enabled", slot.enabled, True, slot.enabled, "slot_disabled"),
        check("stage", slot.stage, "TRAINING|BLENDING|PROBATIONARY", slot.stage in CULLABLE,
              "wrong_stage"),
        check("age", age, rules.config.min_cull_age, old_enough, "too_young"),
    ))


def _one_hot(n: int) -> Row:
    return tuple(i == 0 for i in range(n))


def _blueprint_row(slot: SlotState, rules: Rules) -> Row:
    n = len(rules.catalogue.germinable)
    row = tuple(
        blueprint_fits(slot, rules.catalogue, rules.validation, rules.config, k) for k in range(n)
    )
    # A slot nothing fits can never germinate; its row is the dummy so no row is all false.
    return row if any(row) else _one_hot(n)


def masks(view: LifecycleState, rules: Rules) -> ActionMasks:
    """Exact per-head masks for this view (docs/lifecycle.md §9; docs/rl.md §3)."""
    n_slots, n_tempo = len(view.slots), len(rules.config.tempo_choices)
    blueprint = tuple(_blueprint_row(slot, rules) for slot in view.slots)

    def germinate_ok(s: int) -> bool:
        slot = view.slots[s]
        return any(
            g0(slot, k, 0, view.germinations, rules.config, rules.catalogue, rules.validation).passed
            for k, fits in enumerate(blueprint[s]) if fits
        )

    def allowed(op: Op, s: int) -> bool:
        return can_apply(view, FactoredAction(op, s), rules).passed

    slot_rows = (
        _one_hot(n_slots),
        tuple(germinate_ok(s) for s in range(n_slots)),
        tuple(allowed(Op.CULL, s) for s in range(n_slots)),
        tuple(allowed(Op.FOSSILIZE, s) for s in range(n_slots)),
    )
    op = (True, *(any(row) for row in slot_rows[1:]))
    return ActionMasks(op=op, slot=slot_rows, blueprint=blueprint, tempo=(True,) * n_tempo)
