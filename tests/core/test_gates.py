"""Example tests of the gates (docs/lifecycle.md §3) and the gradient-activity ratio (§3.2).

Thresholds come from §1.5's defaults: G2 needs epochs_in_stage ≥ 3, grad_ratio ≥ 0.05 and
shadow_gain ≥ 0.005; G3 needs ramp_step == tempo, alpha ≥ 0.95 and epochs_in_stage ≥ 3;
G5 needs PROBATIONARY, epochs_in_stage ≥ 1, contribution ≥ 0.01 and a finite seed.
"""

import math

import attrs
import pytest
import torch
from lifecycle_helpers import fresh, make_rules, measure, seed_state, slot_with

from esper.core.actions import FactoredAction
from esper.core.catalogue import ValidationTable, catalogue_for
from esper.core.events import GateEvaluated, SeedCulled
from esper.core.gates import GateLevel, g0, g1, g2, g3, g5, gradient_ratio
from esper.core.lifecycle import act, record
from esper.core.seed import SlotSpec, SlotState
from esper.core.stages import Stage

RULES = make_rules()
CFG = RULES.config
CNN = catalogue_for("cnn")
G0_CHECKS = ("slot_enabled", "stage", "seed_budget", "blueprint", "blueprint_fit", "tempo")
CONV_LIGHT = CNN.germinable_index("conv_light")  # 9C² + 2C = 592 parameters at C = 8


def table_with(name: str, entry: bool | None, slot: int = 0) -> ValidationTable:
    """The layout's validation table with one (slot, blueprint) entry replaced."""
    rows = [list(row) for row in RULES.validation.entries]
    rows[slot][CNN.spec(name).index] = entry
    return ValidationTable(tuple(tuple(r) for r in rows))


def failing(result) -> list[str]:
    return [c.code for c in result.checks if not c.passed]


def germ_gate(
    slot: SlotState | None = None,
    *,
    blueprint: int = 0,
    tempo: int = 0,
    germinations: int = 0,
    rules=RULES,
    validation: ValidationTable | None = None,
):
    slot = slot if slot is not None else slot_with()
    return g0(
        slot,
        blueprint,
        tempo,
        germinations,
        rules.config,
        rules.catalogue,
        validation if validation is not None else rules.validation,
    )


# ------------------------------------------------------------------------------------------ G0


def test_g0_passes_on_an_enabled_dormant_slot_and_reports_every_check() -> None:
    result = germ_gate()
    assert result.passed and result.reason is None
    assert result.gate == GateLevel.G0 and result.slot_id == "early" and result.seed_id is None
    assert tuple(c.name for c in result.checks) == G0_CHECKS


def test_g0_slot_disabled() -> None:
    result = germ_gate(slot_with(enabled=False))
    assert not result.passed and result.reason == "slot_disabled"
    assert failing(result) == ["slot_disabled"]


@pytest.mark.parametrize(
    "stage",
    [
        Stage.TRAINING,
        Stage.BLENDING,
        Stage.PROBATIONARY,
        Stage.FOSSILIZED,
        Stage.CULLED,
        Stage.EMBARGOED,
        Stage.RESETTING,
    ],
)
def test_g0_slot_occupied(stage: Stage) -> None:
    result = germ_gate(slot_with(seed_state(stage)))
    assert result.reason == "slot_occupied" and failing(result) == ["slot_occupied"]


@pytest.mark.parametrize(("germinations", "passed"), [(0, True), (1, True), (2, False), (3, False)])
def test_g0_seed_budget_at_the_boundary(germinations: int, passed: bool) -> None:
    result = germ_gate(germinations=germinations, rules=make_rules(max_seeds=2))
    assert result.passed is passed
    assert result.reason == (None if passed else "seed_budget_spent")


def test_g0_unlimited_budget_when_max_seeds_is_zero() -> None:
    assert germ_gate(germinations=10_000).passed


@pytest.mark.parametrize(("blueprint", "passed"), [(-1, False), (0, True), (5, True), (6, False), (7, False)])
def test_g0_blueprint_index_past_the_germinable_list(blueprint: int, passed: bool) -> None:
    # CNN germinable: norm, attention, depthwise, bottleneck, conv_light, conv_heavy (K = 6).
    result = germ_gate(blueprint=blueprint)
    assert result.passed is passed
    if not passed:
        # blueprint_fit fails too (nothing to fit), but the reason is the first failure.
        assert failing(result) == ["not_germinable", "blueprint_unfit"]
        assert result.reason == "not_germinable"


@pytest.mark.parametrize(("cap", "passed"), [(0, True), (591, False), (592, True), (593, True)])
def test_g0_max_seed_params_cap(cap: int, passed: bool) -> None:
    result = germ_gate(blueprint=CONV_LIGHT, rules=make_rules(max_seed_params=cap))
    assert result.passed is passed
    assert result.reason == (None if passed else "blueprint_unfit")


def test_g0_a_missing_validation_entry_is_unfit() -> None:
    table = table_with("depthwise", None)
    depthwise = CNN.germinable_index("depthwise")
    assert germ_gate(blueprint=depthwise, validation=table).reason == "blueprint_unfit"
    assert germ_gate(blueprint=CNN.germinable_index("norm"), validation=table).passed
    assert germ_gate(slot_with(slot=1), blueprint=depthwise, validation=table).passed  # other slot


@pytest.mark.parametrize(("dim", "passed"), [(64, True), (66, False), (62, False), (128, True)])
def test_g0_transformer_attention_needs_width_divisible_by_four(dim: int, passed: bool) -> None:
    rules = make_rules(topology="transformer", specs=(SlotSpec("early", 0, 0, dim, (8, dim)),))
    attention = rules.catalogue.germinable_index("attention")
    slot = SlotState(slot_id="early", index=0, dim=dim)
    result = g0(slot, attention, 0, 0, rules.config, rules.catalogue, rules.validation)
    assert result.passed is passed
    assert result.reason == (None if passed else "blueprint_unfit")
    # Every other transformer blueprint fits any width.
    lora = rules.catalogue.germinable_index("lora")
    assert g0(slot, lora, 0, 0, rules.config, rules.catalogue, rules.validation).passed


@pytest.mark.parametrize(("tempo", "passed"), [(-1, False), (0, True), (2, True), (3, False)])
def test_g0_tempo_index(tempo: int, passed: bool) -> None:
    result = germ_gate(tempo=tempo)
    assert result.passed is passed
    assert result.reason == (None if passed else "tempo_unknown")


def test_g0_evaluates_every_check_and_reports_the_first_failure() -> None:
    occupied = slot_with(seed_state(Stage.TRAINING))
    result = germ_gate(occupied, blueprint=0, tempo=7, germinations=1, rules=make_rules(max_seeds=1))
    assert tuple(c.name for c in result.checks) == G0_CHECKS
    assert failing(result) == ["slot_occupied", "seed_budget_spent", "tempo_unknown"]
    assert result.reason == "slot_occupied"


# ------------------------------------------------------------------------------------------ G1


def test_g1_passes_for_a_germinated_seed_with_a_passed_probe() -> None:
    result = g1(slot_with(seed_state(Stage.GERMINATED, epochs_in_stage=0, age=0)), RULES.validation)
    assert result.passed and result.gate == GateLevel.G1 and result.seed_id == "early#0"
    assert tuple(c.name for c in result.checks) == ("stage", "validation")


@pytest.mark.parametrize(("entry", "reason"), [(None, "missing:validation"), (False, "probe_failed")])
def test_g1_validation_failures(entry: bool | None, reason: str) -> None:
    table = table_with("norm", entry)
    result = g1(slot_with(seed_state(Stage.GERMINATED, epochs_in_stage=0, age=0)), table)
    assert not result.passed and result.reason == reason and failing(result) == [reason]


def test_g1_wrong_stage_still_evaluates_the_probe() -> None:
    result = g1(slot_with(seed_state(Stage.TRAINING)), RULES.validation)
    assert result.reason == "wrong_stage"
    assert [c.passed for c in result.checks] == [False, True]


def test_a_failed_probe_culls_the_new_seed_inside_act() -> None:
    # The entry is present (G0 passes) but its probe failed (G1).
    rules = attrs.evolve(RULES, validation=table_with("norm", False))
    view = record(fresh(), measure(fresh()))
    state, events = act(view, FactoredAction.germinate(0, 0, 0), rules)
    slot = state.slots[0]
    assert slot.stage == Stage.CULLED and slot.seed.cull_reason == "g1:probe_failed"
    assert slot.germinations == 1 and slot.culls == 1
    gates = [e for e in events if isinstance(e, GateEvaluated)]
    assert [(e.gate, e.passed, e.reason) for e in gates] == [
        ("G0", True, None),
        ("G1", False, "probe_failed"),
    ]
    culled = [e for e in events if isinstance(e, SeedCulled)]
    assert len(culled) == 1 and culled[0].reason == "g1:probe_failed"
    assert culled[0].stage == Stage.GERMINATED


# ------------------------------------------------------------------------------------------ G2


def training(eis: int = 3, grad_ratio: float | None = 1.0, shadow_gain: float | None = 0.02) -> SlotState:
    return slot_with(
        seed_state(
            Stage.TRAINING, epochs_in_stage=eis, age=eis, grad_ratio=grad_ratio, shadow_gain=shadow_gain
        )
    )


@pytest.mark.parametrize(("eis", "passed"), [(2, False), (3, True), (4, True)])
def test_g2_epochs_in_stage(eis: int, passed: bool) -> None:
    result = g2(training(eis=eis), CFG)
    assert result.passed is passed and result.reason == (None if passed else "too_young")
    assert result.gate == GateLevel.G2


@pytest.mark.parametrize(("ratio", "passed"), [(0.0, False), (0.0499, False), (0.05, True), (0.0501, True)])
def test_g2_grad_ratio(ratio: float, passed: bool) -> None:
    result = g2(training(grad_ratio=ratio), CFG)
    assert result.passed is passed and result.reason == (None if passed else "grad_ratio_low")


@pytest.mark.parametrize(("gain", "passed"), [(-0.01, False), (0.0049, False), (0.005, True), (0.0051, True)])
def test_g2_shadow_gain(gain: float, passed: bool) -> None:
    result = g2(training(shadow_gain=gain), CFG)
    assert result.passed is passed and result.reason == (None if passed else "shadow_gain_low")


@pytest.mark.parametrize("field", ["grad_ratio", "shadow_gain"])
def test_g2_missing_inputs_fail_even_at_a_zero_threshold(field: str) -> None:
    lenient = make_rules(min_grad_ratio=0.0, min_training_improvement=0.0).config
    result = g2(training(**{field: None}), lenient)
    assert not result.passed and result.reason == f"missing:{field}"
    (check,) = [c for c in result.checks if c.name == field]
    assert check.value is None and not check.passed


def test_g2_reports_all_checks_in_table_order() -> None:
    result = g2(training(eis=2, grad_ratio=None, shadow_gain=0.001), CFG)
    assert tuple(c.name for c in result.checks) == ("epochs_in_stage", "grad_ratio", "shadow_gain")
    assert failing(result) == ["too_young", "missing:grad_ratio", "shadow_gain_low"]
    assert result.reason == "too_young"


# ------------------------------------------------------------------------------------------ G3


def blending(ramp_step: int = 5, alpha: float = 1.0, eis: int = 5, tempo: int = 5) -> SlotState:
    return slot_with(
        seed_state(
            Stage.BLENDING, tempo=tempo, ramp_step=ramp_step, alpha=alpha, epochs_in_stage=eis, age=eis + 3
        )
    )


@pytest.mark.parametrize("tempo", [3, 5, 8])
def test_g3_ramp_step_must_equal_tempo(tempo: int) -> None:
    assert g3(blending(ramp_step=tempo, tempo=tempo, eis=tempo), CFG).passed
    short = g3(blending(ramp_step=tempo - 1, tempo=tempo, eis=tempo), CFG)
    assert not short.passed and short.reason == "ramp_incomplete"


@pytest.mark.parametrize(("alpha", "passed"), [(0.5, False), (0.9499, False), (0.95, True), (1.0, True)])
def test_g3_alpha(alpha: float, passed: bool) -> None:
    result = g3(blending(alpha=alpha), CFG)
    assert result.passed is passed and result.reason == (None if passed else "alpha_low")


@pytest.mark.parametrize(("eis", "passed"), [(2, False), (3, True), (4, True)])
def test_g3_epochs_in_stage(eis: int, passed: bool) -> None:
    result = g3(blending(ramp_step=3, tempo=3, eis=eis), CFG)
    assert result.passed is passed and result.reason == (None if passed else "too_young")


def test_g3_reports_all_checks_in_table_order() -> None:
    result = g3(blending(ramp_step=1, alpha=0.02, eis=1), CFG)
    assert result.gate == GateLevel.G3
    assert tuple(c.name for c in result.checks) == ("ramp_step", "alpha", "epochs_in_stage")
    assert failing(result) == ["ramp_incomplete", "alpha_low", "too_young"]
    assert result.reason == "ramp_incomplete"


# ------------------------------------------------------------------------------------------ G5


def probation(eis: int = 1, contribution: float | None = 0.02, seed_finite: bool = True) -> SlotState:
    return slot_with(
        seed_state(
            Stage.PROBATIONARY,
            epochs_in_stage=eis,
            age=eis + 8,
            contribution=contribution,
            seed_finite=seed_finite,
        )
    )


@pytest.mark.parametrize(("eis", "passed"), [(0, False), (1, True), (2, True)])
def test_g5_epochs_in_stage(eis: int, passed: bool) -> None:
    result = g5(probation(eis=eis), CFG)
    assert result.passed is passed and result.reason == (None if passed else "too_young")
    assert result.gate == GateLevel.G5


@pytest.mark.parametrize(
    ("contribution", "passed"), [(-0.5, False), (0.0099, False), (0.01, True), (0.0101, True)]
)
def test_g5_contribution(contribution: float, passed: bool) -> None:
    result = g5(probation(contribution=contribution), CFG)
    assert result.passed is passed and result.reason == (None if passed else "contribution_low")


def test_g5_missing_contribution_never_passes() -> None:
    lenient = make_rules(min_fossilize_contribution=0.0).config
    result = g5(probation(contribution=None), lenient)
    assert not result.passed and result.reason == "missing:contribution"


def test_g5_nonfinite_seed() -> None:
    result = g5(probation(seed_finite=False), CFG)
    assert not result.passed and result.reason == "nonfinite" and failing(result) == ["nonfinite"]


@pytest.mark.parametrize("stage", [Stage.TRAINING, Stage.BLENDING, Stage.FOSSILIZED, Stage.CULLED])
def test_g5_wrong_stage(stage: Stage) -> None:
    result = g5(slot_with(seed_state(stage, contribution=0.5)), CFG)
    assert not result.passed and result.reason == "wrong_stage"


def test_g5_on_an_empty_slot_fails_without_raising() -> None:
    result = g5(slot_with(), CFG)
    assert not result.passed and result.reason == "wrong_stage"
    assert failing(result) == ["wrong_stage", "too_young", "missing:contribution", "nonfinite"]


def test_g5_reports_all_checks_in_table_order() -> None:
    result = g5(probation(eis=0, contribution=0.001, seed_finite=False), CFG)
    assert tuple(c.name for c in result.checks) == ("stage", "epochs_in_stage", "contribution", "seed_finite")
    assert failing(result) == ["too_young", "contribution_low", "nonfinite"]
    assert result.reason == "too_young"


def test_g4_is_retired() -> None:
    assert [g.value for g in GateLevel] == [0, 1, 2, 3, 5]


# ------------------------------------------------------------------------------- gradient ratio


def ratio(seed_sq: float, host_sq: float, p_seed: int, p_host: int) -> tuple[float, bool]:
    value, valid = gradient_ratio(
        torch.tensor(seed_sq, dtype=torch.float64), torch.tensor(host_sq, dtype=torch.float64), p_seed, p_host
    )
    return value.item(), bool(valid)


@pytest.mark.parametrize(
    ("seed_sq", "host_sq", "p_seed", "p_host", "expected"),
    [
        (4.0, 1.0, 1, 1, 2.0),  # sqrt(4/1) / sqrt(1/1)
        (8.0, 100.0, 2, 25, 1.0),  # sqrt(8/2) / sqrt(100/25) = 2 / 2
        (1.0, 4.0, 4, 1, 0.25),  # sqrt(1/4) / sqrt(4/1) = 0.5 / 2
        (0.0, 3.0, 17, 6418, 0.0),  # a seed with no gradient
        (100.0, 1.0, 1, 1, 10.0),  # exactly at the cap
        (1e6, 1.0, 1, 1, 10.0),  # 1000, capped at 10
    ],
)
def test_gradient_ratio_hand_computed(seed_sq, host_sq, p_seed, p_host, expected) -> None:
    value, valid = ratio(seed_sq, host_sq, p_seed, p_host)
    assert valid and value == pytest.approx(expected, rel=1e-12)


def test_gradient_ratio_is_the_reference_per_parameter_formula() -> None:
    s_seed, s_host, p_seed, p_host = 0.37, 12.5, 592, 6418
    expected = (math.sqrt(s_seed) / math.sqrt(s_host)) * math.sqrt(p_host / p_seed)
    value, valid = ratio(s_seed, s_host, p_seed, p_host)
    assert valid and value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("seed_sq", "host_sq", "p_seed", "p_host"),
    [(1.0, 0.0, 10, 100), (1.0, 1e-17, 10, 1), (0.0, 0.0, 10, 100), (0.0, 1.0, 0, 100)],
)
def test_gradient_ratio_invalid_without_host_gradient_or_seed_params(
    seed_sq, host_sq, p_seed, p_host
) -> None:
    value, valid = ratio(seed_sq, host_sq, p_seed, p_host)
    assert not valid and math.isfinite(value)


def test_gradient_ratio_under_vmap() -> None:
    seed_sq = torch.tensor([4.0, 8.0, 1e6, 1.0], dtype=torch.float64)
    host_sq = torch.tensor([1.0, 4.0, 1.0, 0.0], dtype=torch.float64)
    p_seed = torch.tensor([1, 2, 1, 3])
    p_host = torch.tensor([1, 1, 1, 5])
    values, valid = torch.func.vmap(gradient_ratio)(seed_sq, host_sq, p_seed, p_host)
    assert values[:3].tolist() == pytest.approx([2.0, 1.0, 10.0], rel=1e-12)
    assert valid.tolist() == [True, True, True, False]
    for i in range(4):
        one, ok = gradient_ratio(seed_sq[i], host_sq[i], p_seed[i], p_host[i])
        assert torch.equal(one, values[i]) and bool(ok) == bool(valid[i])
