"""The exact records the gates and the CULL legality checks return (docs/lifecycle.md §3, §9).

Every Check a gate evaluates travels whole in a `seed.gate_evaluated` event (name, measured value,
threshold, passed, failure code), so each field is telemetry a reader sees; these tests pin the
whole tuple of Checks of a passing and of a failing case, plus the slot and seed the result names.
Also pinned: the empty-slot error text, the masks' one-hot dummy rows, and two edges of the
gradient-activity ratio (the `< eps` boundary and the dtype of the result).
"""

import pytest
import torch
from lifecycle_helpers import fresh, make_rules, seed_state, slot_with, state_with

from esper.core.actions import FactoredAction, Op
from esper.core.catalogue import ValidationTable
from esper.core.errors import LifecycleError
from esper.core.gates import Check, GateLevel, GateResult, g1, g3, g5, gradient_ratio
from esper.core.legality import can_apply, masks
from esper.core.stages import Stage

RULES = make_rules()
CFG = RULES.config
CULLABLE_TEXT = "TRAINING|BLENDING|PROBATIONARY"


def validation_with(entry: bool | None) -> ValidationTable:
    """The layout's validation table with slot 0's entry for the helpers' default blueprint replaced."""
    rows = [list(row) for row in RULES.validation.entries]
    rows[0][seed_state().blueprint_index] = entry
    return ValidationTable(tuple(tuple(r) for r in rows))


def header(result: GateResult) -> tuple[object, ...]:
    return result.gate, result.slot_id, result.seed_id


def test_a_gate_on_an_empty_slot_names_the_slot_in_its_error() -> None:
    with pytest.raises(LifecycleError, match=r"^gate evaluated on empty slot early$"):
        g3(slot_with(), CFG)


@pytest.mark.parametrize(
    ("entry", "probe"),
    [
        (True, Check("validation", True, True, True, "probe_failed")),
        (False, Check("validation", False, True, False, "probe_failed")),
        (None, Check("validation", None, True, False, "missing:validation")),
    ],
)
def test_g1_reports_the_stage_and_the_probe_entry(entry: bool | None, probe: Check) -> None:
    result = g1(slot_with(seed_state(Stage.GERMINATED)), validation_with(entry))
    assert header(result) == (GateLevel.G1, "early", "early#0")
    assert result.checks == (Check("stage", Stage.GERMINATED, Stage.GERMINATED, True, "wrong_stage"), probe)


def test_g1_reports_a_wrong_stage_with_the_stage_it_saw() -> None:
    result = g1(slot_with(seed_state(Stage.TRAINING)), validation_with(True))
    assert result.checks[0] == Check("stage", Stage.TRAINING, Stage.GERMINATED, False, "wrong_stage")


def test_g3_reports_each_check_with_value_and_threshold() -> None:
    done = g3(slot_with(seed_state(Stage.BLENDING, ramp_step=5, alpha=1.0, epochs_in_stage=3)), CFG)
    assert header(done) == (GateLevel.G3, "early", "early#0")
    assert done.checks == (
        Check("ramp_step", 5, 5, True, "ramp_incomplete"),
        Check("alpha", 1.0, CFG.alpha_complete, True, "alpha_low"),
        Check("epochs_in_stage", 3, CFG.min_blending_epochs, True, "too_young"),
    )
    ramping = g3(slot_with(seed_state(Stage.BLENDING, ramp_step=2, alpha=0.5, epochs_in_stage=0)), CFG)
    assert ramping.checks == (
        Check("ramp_step", 2, 5, False, "ramp_incomplete"),
        Check("alpha", 0.5, CFG.alpha_complete, False, "alpha_low"),
        Check("epochs_in_stage", 0, CFG.min_blending_epochs, False, "too_young"),
    )


def test_g5_reports_each_check_of_a_probationary_seed() -> None:
    slot = slot_with(seed_state(Stage.PROBATIONARY, epochs_in_stage=1, contribution=0.02, seed_finite=True))
    result = g5(slot, CFG)
    assert header(result) == (GateLevel.G5, "early", "early#0")
    assert result.checks == (
        Check("stage", Stage.PROBATIONARY, Stage.PROBATIONARY, True, "wrong_stage"),
        Check("epochs_in_stage", 1, CFG.min_probation_epochs, True, "too_young"),
        Check("contribution", 0.02, CFG.min_fossilize_contribution, True, "contribution_low"),
        Check("seed_finite", True, True, True, "nonfinite"),
    )


def test_g5_on_an_empty_slot_reports_zero_epochs_and_nothing_measured() -> None:
    result = g5(slot_with(), CFG)
    assert header(result) == (GateLevel.G5, "early", None)
    assert result.checks == (
        Check("stage", Stage.DORMANT, Stage.PROBATIONARY, False, "wrong_stage"),
        Check("epochs_in_stage", 0, CFG.min_probation_epochs, False, "too_young"),
        Check("contribution", None, CFG.min_fossilize_contribution, False, "missing:contribution"),
        Check("seed_finite", None, True, False, "nonfinite"),
    )


def test_an_allowed_cull_reports_each_check() -> None:
    result = can_apply(state_with(seed_state(Stage.BLENDING, age=10)), FactoredAction.cull(0), RULES)
    assert header(result) == (None, "early", "early#0")
    assert result.checks == (
        Check("slot_enabled", True, True, True, "slot_disabled"),
        Check("stage", Stage.BLENDING, CULLABLE_TEXT, True, "wrong_stage"),
        Check("age", 10, CFG.min_cull_age, True, "too_young"),
    )


def test_a_cull_of_a_disabled_empty_slot_reports_each_failing_check() -> None:
    result = can_apply(fresh({"mid", "late"}), FactoredAction.cull(0), RULES)
    assert header(result) == (None, "early", None)
    assert result.checks == (
        Check("slot_enabled", False, True, False, "slot_disabled"),
        Check("stage", Stage.DORMANT, CULLABLE_TEXT, False, "wrong_stage"),
        Check("age", None, CFG.min_cull_age, False, "too_young"),
    )


def test_the_dummy_rows_are_one_hot_at_index_zero() -> None:
    """§9: `slot[WAIT]` is one-hot at index 0, and so is the blueprint row of a slot nothing fits
    (a one-parameter cap leaves no blueprint that fits any slot)."""
    m = masks(fresh(), make_rules(max_seed_params=1))
    n_blueprints = len(RULES.catalogue.germinable)
    dummy = (True, *([False] * (n_blueprints - 1)))
    assert m.slot[Op.WAIT] == (True, False, False)
    assert m.blueprint == (dummy, dummy, dummy)


def test_gradient_ratio_is_valid_when_the_host_mean_equals_eps() -> None:
    """§3.2: invalid only where S_host / P_host < eps; exactly eps is still a host gradient."""
    f64 = torch.float64
    _, valid = gradient_ratio(torch.tensor(1.0, dtype=f64), torch.tensor(1e-16, dtype=f64), 1, 1, eps=1e-16)
    assert bool(valid)


def test_gradient_ratio_keeps_the_dtype_of_the_sums_whatever_the_counts() -> None:
    """The counts are cast to the sums' dtype, so float64 counts do not turn a float32 ratio into float64."""
    seed_sq, host_sq = torch.tensor(0.37), torch.tensor(12.5)
    expected, _ = gradient_ratio(seed_sq, host_sq, 592, 6418)
    f64 = torch.float64
    ratio, valid = gradient_ratio(seed_sq, host_sq, torch.tensor(592.0, dtype=f64), torch.tensor(6418.0, dtype=f64))
    assert ratio.dtype == torch.float32 and bool(valid)
    assert torch.equal(ratio, expected)
