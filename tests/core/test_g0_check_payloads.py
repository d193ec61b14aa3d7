"""The exact records G0, G2's missing inputs and the unknown-slot legality check return
(docs/lifecycle.md §3, §9).

A sibling of test_gate_check_payloads.py: every Check travels whole in a `seed.gate_evaluated`
event (name, measured value, threshold, passed, failure code) and in the GateResult that
`can_apply`, the one public legality predicate, returns, so each field is something a reader
sees. These tests pin the whole tuple of Checks of G0 for a germination that passes and for one
where every other check fails (a disabled slot is always DORMANT, so slot_enabled fails alone),
G2's `missing:<input>` checks, and the one check `can_apply` returns for a slot outside the layout.
"""

import pytest
from lifecycle_helpers import fresh, make_rules, seed_state, slot_with, state_with

from esper.core.actions import FactoredAction
from esper.core.gates import Check, GateLevel, GateResult, g0, g2
from esper.core.legality import can_apply
from esper.core.stages import Stage

RULES = make_rules()
CFG = RULES.config
N_GERMINABLE = len(RULES.catalogue.germinable)
N_TEMPOS = len(CFG.tempo_choices)


def header(result: GateResult) -> tuple[object, ...]:
    return result.gate, result.slot_id, result.seed_id


def test_a_passing_g0_reports_each_check_with_value_and_threshold() -> None:
    """Germinating blueprint 1 with tempo index 2 into slot `mid` (width 16) of a fresh layout."""
    result = can_apply(fresh(), FactoredAction.germinate(1, 1, 2), RULES)
    assert header(result) == (GateLevel.G0, "mid", None)
    assert result.checks == (
        Check("slot_enabled", True, True, True, "slot_disabled"),
        Check("stage", Stage.DORMANT, Stage.DORMANT, True, "slot_occupied"),
        Check("seed_budget", 0, CFG.max_seeds, True, "seed_budget_spent"),
        Check("blueprint", 1, N_GERMINABLE, True, "not_germinable"),
        Check("blueprint_fit", 1, 16, True, "blueprint_unfit"),
        Check("tempo", 2, N_TEMPOS, True, "tempo_unknown"),
    )


def test_a_g0_where_every_check_but_slot_enabled_fails_reports_what_it_saw() -> None:
    """An occupied slot, a spent budget of 2 seeds, a blueprint and a tempo index one past their
    lists: every value and threshold is the one the failing check compared."""
    rules = make_rules(max_seeds=2)
    slot = slot_with(seed_state(Stage.BLENDING))
    result = g0(slot, N_GERMINABLE, N_TEMPOS, 2, rules.config, rules.catalogue, rules.validation)
    assert header(result) == (GateLevel.G0, "early", "early#0")
    assert result.checks == (
        Check("slot_enabled", True, True, True, "slot_disabled"),
        Check("stage", Stage.BLENDING, Stage.DORMANT, False, "slot_occupied"),
        Check("seed_budget", 2, 2, False, "seed_budget_spent"),
        Check("blueprint", N_GERMINABLE, N_GERMINABLE, False, "not_germinable"),
        Check("blueprint_fit", N_GERMINABLE, 8, False, "blueprint_unfit"),
        Check("tempo", N_TEMPOS, N_TEMPOS, False, "tempo_unknown"),
    )
    assert result.reason == "slot_occupied"


def test_g0_on_a_disabled_slot_reports_it_enabled_false_against_true() -> None:
    """A disabled slot is always DORMANT (seed.py), so only its first check fails."""
    result = g0(slot_with(enabled=False), 0, 0, 0, CFG, RULES.catalogue, RULES.validation)
    assert header(result) == (GateLevel.G0, "early", None)
    assert result.checks[0] == Check("slot_enabled", False, True, False, "slot_disabled")
    assert result.reason == "slot_disabled" and all(c.passed for c in result.checks[1:])


def test_g2_reports_unmeasured_inputs_as_missing_with_their_thresholds() -> None:
    """A missing value keeps the threshold it would have been compared with, and fails (False)."""
    seed = seed_state(Stage.TRAINING, epochs_in_stage=CFG.min_training_epochs, grad_ratio=None, shadow_gain=None)
    result = g2(slot_with(seed), CFG)
    assert header(result) == (GateLevel.G2, "early", "early#0")
    assert result.checks == (
        Check("epochs_in_stage", CFG.min_training_epochs, CFG.min_training_epochs, True, "too_young"),
        Check("grad_ratio", None, CFG.min_grad_ratio, False, "missing:grad_ratio"),
        Check("shadow_gain", None, CFG.min_training_improvement, False, "missing:shadow_gain"),
    )
    assert result.reason == "missing:grad_ratio"


@pytest.mark.parametrize("index", [3, -1])
def test_an_action_on_a_slot_outside_the_layout_reports_the_index_and_the_slot_count(index: int) -> None:
    result = can_apply(state_with(seed_state(Stage.BLENDING, age=10)), FactoredAction.cull(index), RULES)
    assert result == GateResult(None, None, None, (Check("slot", index, 3, False, "slot_unknown"),))
    assert result.reason == "slot_unknown"
