"""The exact events each lifecycle transition emits, the config's sigmoid steepness on the ramp, and the text of
the errors users see: the examples that pin what `make mutate` found unchecked in esper/core/lifecycle.py.

The shell turns these events into telemetry (a seed's row in the epoch line, events.jsonl), so a dropped gate
report or a payload field left empty is a user-visible loss even when the stages still come out right.
"""

import attrs
import pytest
from lifecycle_helpers import boundary, germinate_at, make_rules, seed_state, state_with, wait_until

from esper.core.actions import FactoredAction
from esper.core.alpha import Curve, ramp_alpha
from esper.core.errors import IllegalActionError, IllegalTransition, LifecycleError
from esper.core.events import Event, GateEvaluated, SeedCulled, SeedRetired, StageChanged
from esper.core.lifecycle import act, advance, record, transition
from esper.core.measurements import EpochMeasurements
from esper.core.stages import Stage

SEED = {"slot": "early", "seed_id": "early#0"}


def without_checks(events: tuple[Event, ...]) -> list[Event]:
    """The events with each gate report's per-check detail dropped (gates' own tests pin the checks)."""
    return [attrs.evolve(e, checks=()) if isinstance(e, GateEvaluated) else e for e in events]


def gate(name: str, passed: bool, reason: str | None = None) -> GateEvaluated:
    return GateEvaluated(**SEED, gate=name, passed=passed, reason=reason, checks=())


def changed(before: Stage, to: Stage, reason: str, epoch: int, dwelt: int) -> StageChanged:
    return StageChanged(**SEED, from_stage=before, to_stage=to, reason=reason, epoch=epoch,
                        previous_epochs_in_stage=dwelt)


def life(rules, until: int):
    """A seed germinated in `early` at boundary 1 with tempo 3, waited on healthily up to boundary `until`."""
    state, _ = germinate_at(rules, 1, tempo=3)
    return wait_until(state, rules, until)


# ------------------------------------------------------------------------------ mechanical edges


def test_a_g2_pass_reports_the_gate_then_the_move_to_blending() -> None:
    rules = make_rules()
    _, events = boundary(life(rules, 3), rules)
    assert without_checks(events) == [gate("G2", True), changed(Stage.TRAINING, Stage.BLENDING, "G2", 4, 3)]


def test_a_g3_pass_reports_the_gate_then_the_move_to_probation() -> None:
    rules = make_rules()
    _, events = boundary(life(rules, 6), rules)
    assert without_checks(events) == [gate("G3", True), changed(Stage.BLENDING, Stage.PROBATIONARY, "G3", 7, 3)]


def test_a_training_timeout_reports_the_failed_gate_then_the_cull() -> None:
    rules = make_rules()
    starved = {"early": {"shadow_gain": 0.0}}
    state = life(rules, 1)
    for _ in range(rules.config.max_training_epochs - 1):
        state, _ = boundary(state, rules, **starved)
    state, events = boundary(state, rules, **starved)
    assert state.epoch == 7
    assert without_checks(events) == [
        gate("G2", False, "shadow_gain_low"),
        changed(Stage.TRAINING, Stage.CULLED, "training_timeout", 7, 6),
        SeedCulled(**SEED, reason="training_timeout", stage=Stage.TRAINING, age=6, contribution=None, epoch=7),
    ]


def test_retiring_a_cooled_seed_names_its_slot() -> None:
    rules = make_rules()
    state, _ = boundary(life(rules, 3), rules, FactoredAction.cull(0))
    events: tuple[Event, ...] = ()
    while state.slots[0].stage != Stage.DORMANT:
        state, events = boundary(state, rules)
    history = ((Stage.GERMINATED, 1), (Stage.TRAINING, 1), (Stage.CULLED, 4), (Stage.EMBARGOED, 5),
               (Stage.RESETTING, 10), (Stage.DORMANT, 11))
    assert events == (changed(Stage.RESETTING, Stage.DORMANT, "dwell", 11, 1),
                      SeedRetired(**SEED, history=history, cull_reason="action"))


# ------------------------------------------------------------------------------ controller actions


def test_a_germination_names_the_new_seed_and_its_slot_in_both_stage_changes() -> None:
    rules = make_rules()
    _, events = germinate_at(rules, 2, slot=1, tempo=5)
    changes = [e for e in events if isinstance(e, StageChanged)]
    assert changes == [
        StageChanged(slot="mid", seed_id="mid#0", from_stage=Stage.DORMANT, to_stage=Stage.GERMINATED,
                     reason="germinate", epoch=2, previous_epochs_in_stage=0),
        StageChanged(slot="mid", seed_id="mid#0", from_stage=Stage.GERMINATED, to_stage=Stage.TRAINING,
                     reason="G1", epoch=2, previous_epochs_in_stage=0),
    ]


def test_a_controller_cull_reports_no_gate_and_the_seed_as_it_was() -> None:
    """CULL is decided by legality checks, not a gate: no GateEvaluated. The cull carries the measured
    contribution and the seed's age."""
    rules = make_rules()
    _, events = boundary(life(rules, 7), rules, FactoredAction.cull(0), early={"contribution": 0.0375})
    assert events == (
        changed(Stage.PROBATIONARY, Stage.CULLED, "action", 8, 1),
        SeedCulled(**SEED, reason="action", stage=Stage.PROBATIONARY, age=7, contribution=0.0375, epoch=8),
    )


def test_a_fossilization_moves_for_the_reason_g5() -> None:
    rules = make_rules()
    _, events = boundary(life(rules, 7), rules, FactoredAction.fossilize(0))
    assert [e for e in events if isinstance(e, StageChanged)] == [
        changed(Stage.PROBATIONARY, Stage.FOSSILIZED, "G5", 8, 1)]


# ------------------------------------------------------------------------------ sigmoid steepness


def blending_alphas(rules) -> list[float]:
    """The alpha of each BLENDING boundary of a tempo-3 seed germinated at 1 (entry at 4, ramp at 5 and 6)."""
    state, alphas = life(rules, 3), []
    for _ in range(3):
        state, _ = boundary(state, rules)
        alphas.append(state.slots[0].seed.alpha)
    return alphas


def test_the_ramp_follows_the_configured_sigmoid_steepness() -> None:
    gentle = [ramp_alpha(Curve.SIGMOID, 3, k, steepness=4.0) for k in (1, 2, 3)]
    default = [ramp_alpha(Curve.SIGMOID, 3, k) for k in (1, 2, 3)]
    assert gentle[:2] != pytest.approx(default[:2])  # else this example could not tell them apart
    assert blending_alphas(make_rules(sigmoid_steepness=4.0)) == pytest.approx(gentle, rel=1e-12)
    assert blending_alphas(make_rules()) == pytest.approx(default, rel=1e-12)


# ------------------------------------------------------------------------------ error messages


def test_an_illegal_edge_names_the_seed_and_both_stages() -> None:
    with pytest.raises(IllegalTransition, match=r"^early#0: TRAINING -> FOSSILIZED is not a legal edge$") as info:
        transition(seed_state(Stage.TRAINING), Stage.FOSSILIZED, reason="G5", epoch=3, val_acc=0.5,
                   config=make_rules().config)
    assert (info.value.seed_id, info.value.from_stage, info.value.to_stage) == (
        "early#0", Stage.TRAINING, Stage.FOSSILIZED)


def test_a_refused_action_names_the_action_and_the_reason() -> None:
    rules = make_rules()
    view = record(life(rules, 1), EpochMeasurements(epoch=2, val_acc=0.5))
    cull = FactoredAction.cull(0)
    with pytest.raises(IllegalActionError, match=r"^illegal action CULL\(slot=0\): too_young$") as info:
        act(view, cull, rules)
    assert info.value.action == cull


def test_record_names_the_epoch_it_expected_and_the_measurement_that_is_not_finite() -> None:
    state = state_with(seed_state(), epoch=10)
    with pytest.raises(LifecycleError, match=r"^measurements for epoch 12, expected 11$"):
        record(state, EpochMeasurements(epoch=12, val_acc=0.5))
    with pytest.raises(LifecycleError, match=r"^measurement val_acc must be finite or None, got nan$"):
        record(state, EpochMeasurements(epoch=11, val_acc=float("nan")))


def test_advance_refuses_a_seed_left_germinated_outside_act() -> None:
    """Germination moves a seed on within `act`; a GERMINATED seed seen later is a corrupt state."""
    with pytest.raises(LifecycleError, match=r"^early#0 is GERMINATED outside act$"):
        advance(state_with(seed_state(Stage.GERMINATED)), make_rules())
