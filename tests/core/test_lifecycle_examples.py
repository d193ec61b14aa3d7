"""Worked lifecycle examples on the cifar10 slot layout (docs/lifecycle.md §1.2–§1.5, §4, §9).

Every expected boundary is derived from the spec's timing rules: a seed germinated at
boundary e enters BLENDING at e + 3 (G2, min_training_epochs 3), PROBATIONARY at e + 3 + T
(G3 after T ramp epochs, T ≥ 3) and may first fossilize at e + min_span = e + 3 + T + 1.
H = 50 gives the spec's default timeouts (max_training_epochs 6, max_probation_epochs 5).
"""

import json
import math

import attrs
import pytest
from lifecycle_helpers import (
    boundary,
    drive_until,
    fresh,
    germinate_at,
    make_rules,
    measure,
    wait_until,
)

from esper.core import codec
from esper.core.actions import FactoredAction, Op
from esper.core.config import min_span
from esper.core.errors import IllegalActionError, LifecycleError
from esper.core.events import (
    ActionRejected,
    GateEvaluated,
    SeedCulled,
    SeedFossilized,
    SeedGerminated,
    SeedRetired,
    StageChanged,
)
from esper.core.legality import can_apply, masks
from esper.core.lifecycle import act, apply_action, cooldown_left, record, rollback
from esper.core.measurements import EpochMeasurements
from esper.core.stages import Stage

WAIT = FactoredAction.wait()
FOSSILIZE0 = FactoredAction.fossilize(0)
CULL0 = FactoredAction.cull(0)
TEMPOS = (3, 5, 8)


def fossilize_allowed(state, rules) -> bool:
    """Is FOSSILIZE(0) legal at the next boundary (healthy measurements)?"""
    view = record(state, measure(state))
    allowed = masks(view, rules).slot[Op.FOSSILIZE][0]
    assert allowed == can_apply(view, FOSSILIZE0, rules).passed
    return allowed


# ------------------------------------------------------------------------------ fastest path


@pytest.mark.parametrize("tempo", TEMPOS)
def test_fastest_germinate_to_fossilize_path(tempo: int) -> None:
    rules, e = make_rules(), 2
    span = 3 + tempo + 1  # §1.5: 7 / 9 / 12
    assert min_span(rules.config, tempo) == span
    state, _ = germinate_at(rules, e, tempo=tempo)
    assert state.slots[0].stage == Stage.TRAINING and state.slots[0].seed.germinated_epoch == e
    stages = {}
    while state.epoch < e + span - 1:
        assert not fossilize_allowed(state, rules), f"FOSSILIZE legal too early at {state.epoch + 1}"
        with pytest.raises(IllegalActionError):
            act(record(state, measure(state)), FOSSILIZE0, rules)
        state, _ = boundary(state, rules)
        stages[state.epoch] = state.slots[0].stage
    assert stages == {
        **{b: Stage.TRAINING for b in range(e + 1, e + 3)},
        **{b: Stage.BLENDING for b in range(e + 3, e + 3 + tempo)},
        e + 3 + tempo: Stage.PROBATIONARY,
    }
    assert fossilize_allowed(state, rules)
    state, _ = boundary(state, rules, FOSSILIZE0)
    seed = state.slots[0].seed
    assert state.epoch == e + span and seed.stage == Stage.FOSSILIZED and seed.alpha == 1.0
    assert seed.history == (
        (Stage.GERMINATED, e),
        (Stage.TRAINING, e),
        (Stage.BLENDING, e + 3),
        (Stage.PROBATIONARY, e + 3 + tempo),
        (Stage.FOSSILIZED, e + span),
    )


SIGMOID_TABLE = {  # docs/lifecycle.md §4, sigmoid column: alpha in BLENDING epoch k = 1…T
    3: (0.1173, 0.8827, 1.0),
    5: (0.0242, 0.2301, 0.7699, 0.9758, 1.0),
    8: (0.0086, 0.0452, 0.1808, 0.5, 0.8192, 0.9548, 0.9914, 1.0),
}


def sigmoid_curve(u: float, s: float = 12.0) -> float:
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    return (sig(s * (u - 0.5)) - sig(-s / 2)) / (sig(s / 2) - sig(-s / 2))


@pytest.mark.parametrize("tempo", TEMPOS)
def test_alpha_per_blending_epoch_follows_the_sigmoid_table(tempo: int) -> None:
    rules = make_rules()
    state, _ = germinate_at(rules, 1, tempo=tempo)
    alphas = []  # the alpha each boundary hands to the next epoch's training
    while state.slots[0].stage != Stage.PROBATIONARY:
        state, _ = boundary(state, rules)
        if state.slots[0].stage == Stage.BLENDING:
            alphas.append(state.slots[0].seed.alpha)
            assert state.slots[0].seed.ramp_step == len(alphas)
    assert alphas == pytest.approx(SIGMOID_TABLE[tempo], abs=5e-5)
    assert alphas == pytest.approx(
        [sigmoid_curve(k / tempo) for k in range(1, tempo + 1)], rel=1e-9, abs=1e-12
    )
    assert alphas[-1] == 1.0 and alphas == sorted(alphas)
    assert state.slots[0].seed.alpha == 1.0 and state.slots[0].seed.ramp_step == tempo


# -------------------------------------------------------------------------- automatic culls


def reach(stage: Stage, rules, tempo: int = 3):
    """A seed germinated at boundary 1 (tempo 3), driven healthily until it is in `stage`."""
    state, _ = germinate_at(rules, 1, tempo=tempo)
    return drive_until(state, rules, 0, stage)


def assert_culled(state, events, reason: str, from_stage: Stage) -> None:
    seed = state.slots[0].seed
    assert seed.stage == Stage.CULLED and seed.cull_reason == reason and seed.alpha == 0.0
    assert seed.history[-1] == (Stage.CULLED, state.epoch) and state.slots[0].culls == 1
    culled = [e for e in events if isinstance(e, SeedCulled)]
    assert len(culled) == 1 and culled[0].reason == reason and culled[0].stage == from_stage
    assert culled[0].epoch == state.epoch


@pytest.mark.parametrize(
    ("stage", "entered", "healthy_waits"),
    [
        (Stage.TRAINING, 1, 2),  # non-finite at 4 = the boundary where G2 would pass
        (Stage.BLENDING, 4, 2),  # non-finite at 7 = the boundary where G3 would pass
        (Stage.PROBATIONARY, 7, 0),  # non-finite at 8, with a healthy contribution
    ],
)
def test_nonfinite_seed_is_culled_at_that_boundary(stage: Stage, entered: int, healthy_waits: int) -> None:
    rules = make_rules()
    state = reach(stage, rules)
    assert state.epoch == entered
    state = wait_until(state, rules, entered + healthy_waits)
    assert state.slots[0].stage == stage
    state, events = boundary(state, rules, early={"seed_finite": False})
    assert state.epoch == entered + healthy_waits + 1
    assert_culled(state, events, "nonfinite", stage)


@pytest.mark.parametrize(("horizon", "timeout"), [(50, 6), (120, 12)])
def test_training_timeout_at_max_training_epochs(horizon: int, timeout: int) -> None:
    rules, e = make_rules(horizon), 1
    assert rules.config.max_training_epochs == timeout
    state, _ = germinate_at(rules, e)
    low = {"shadow_gain": 0.004}  # G2(c) never passes
    state = wait_until(state, rules, e + timeout - 1, early=low)
    assert state.slots[0].stage == Stage.TRAINING and state.slots[0].seed.epochs_in_stage == timeout - 1
    state, events = boundary(state, rules, early=low)
    assert state.epoch == e + timeout
    assert_culled(state, events, "training_timeout", Stage.TRAINING)


def test_g2_passing_at_the_timeout_boundary_wins_over_the_timeout() -> None:
    rules, e = make_rules(), 1
    state, _ = germinate_at(rules, e)
    state = wait_until(state, rules, e + 5, early={"grad_ratio": 0.01})
    state, _ = boundary(state, rules)  # boundary e + 6: healthy, G2 is rule 2, timeout rule 3
    assert state.slots[0].stage == Stage.BLENDING and state.slots[0].seed.history[-1] == (
        Stage.BLENDING,
        e + 6,
    )


@pytest.mark.parametrize(
    ("contribution", "culled"), [(-0.01, True), (0.0, True), (0.0001, False), (None, False)]
)
def test_non_positive_contribution_in_probation(contribution: float | None, culled: bool) -> None:
    rules = make_rules()
    state = reach(Stage.PROBATIONARY, rules)
    state, events = boundary(state, rules, early={"contribution": contribution})
    if culled:
        assert_culled(state, events, "negative_contribution", Stage.PROBATIONARY)
    else:
        assert state.slots[0].stage == Stage.PROBATIONARY and not events


@pytest.mark.parametrize(("horizon", "limit"), [(50, 5), (80, 8)])
def test_probation_timeout_at_max_probation_epochs(horizon: int, limit: int) -> None:
    rules = make_rules(horizon)
    assert rules.config.max_probation_epochs == limit
    state = reach(Stage.PROBATIONARY, rules)
    p, weak = state.epoch, {"contribution": 0.005}  # positive, but below G5's 0.01
    state = wait_until(state, rules, p + limit - 1, early=weak)
    assert state.slots[0].stage == Stage.PROBATIONARY and state.slots[0].seed.epochs_in_stage == limit - 1
    last = state
    state, events = boundary(state, rules, early=weak)
    assert state.epoch == p + limit
    assert_culled(state, events, "probation_timeout", Stage.PROBATIONARY)
    # The controller may still fossilize at epochs_in_stage == P (it acts before advance).
    kept, _ = boundary(last, rules, FOSSILIZE0)
    assert kept.slots[0].stage == Stage.FOSSILIZED


# --------------------------------------------------------------------------- controller CULL


def test_controller_cull_is_refused_before_min_cull_age() -> None:
    rules, e = make_rules(), 1
    state, _ = germinate_at(rules, e)
    for b in (e + 1, e + 2):
        view = record(state, measure(state))
        assert view.epoch == b and view.slots[0].seed.age == b - e
        assert not masks(view, rules).slot[Op.CULL][0]
        with pytest.raises(IllegalActionError) as info:
            act(view, CULL0, rules)
        assert info.value.reason == "too_young"
        state, _ = apply_action(view, WAIT, rules)
    view = record(state, measure(state))
    assert view.slots[0].seed.age == 3 and masks(view, rules).slot[Op.CULL][0]
    state, events = apply_action(view, CULL0, rules)
    assert_culled(state, events, "action", Stage.TRAINING)


def test_refused_cull_without_strict_is_an_event_and_no_change() -> None:
    rules = make_rules(strict=False)
    state, _ = germinate_at(rules, 1)
    view = record(state, measure(state))
    after, events = act(view, CULL0, rules)
    assert after == view
    assert events == (ActionRejected(action=CULL0.canonical(), reason="too_young"),)
    state, events = boundary(state, rules, CULL0)
    assert state.slots[0].stage == Stage.TRAINING and isinstance(events[0], ActionRejected)


# ---------------------------------------------------------------------------------- cooldown


@pytest.mark.parametrize("how", ["action", "nonfinite"])
def test_a_culled_slot_germinates_again_at_b_plus_8(how: str) -> None:
    rules = make_rules()
    state, _ = germinate_at(rules, 1)
    state = wait_until(state, rules, 3)
    if how == "action":
        state, _ = boundary(state, rules, CULL0)
    else:
        state, _ = boundary(state, rules, early={"seed_finite": False})
    b = state.epoch
    assert b == 4 and state.slots[0].seed.cull_reason == how
    germinate = FactoredAction.germinate(0, 0, 0)
    stages, left = [], [cooldown_left(state.slots[0].seed, rules.config)]
    while state.epoch < b + 7:
        view = record(state, measure(state))
        assert not masks(view, rules).slot[Op.GERMINATE][0]
        assert can_apply(view, germinate, rules).reason == "slot_occupied"
        state, events = apply_action(view, WAIT, rules)
        stages.append(state.slots[0].stage)
        left.append(cooldown_left(state.slots[0].seed, rules.config))
    assert stages == [Stage.EMBARGOED] * 5 + [Stage.RESETTING, Stage.DORMANT]
    assert left == [7, 6, 5, 4, 3, 2, 1, 0]
    (retired,) = [e for e in events if isinstance(e, SeedRetired)]
    assert retired.seed_id == "early#0" and retired.cull_reason == how
    assert retired.history[-4:] == (
        (Stage.CULLED, b),
        (Stage.EMBARGOED, b + 1),
        (Stage.RESETTING, b + 6),
        (Stage.DORMANT, b + 7),
    )
    state, _ = boundary(state, rules, germinate)
    slot = state.slots[0]
    assert state.epoch == b + 8 and slot.stage == Stage.TRAINING
    assert slot.seed.seed_id == "early#1" and (slot.germinations, slot.culls) == (2, 1)


# ---------------------------------------------------------------------------------- rollback


def test_rollback_culls_live_seeds_and_keeps_fossils_and_counters() -> None:
    rules = make_rules()
    state = reach(Stage.PROBATIONARY, rules)  # early: PROB at 7
    state, _ = boundary(state, rules, FOSSILIZE0)  # 8: early FOSSILIZED
    state, _ = boundary(state, rules, FactoredAction.germinate(1, 2, 0))  # 9: mid#1 TRAINING
    snapshot = wait_until(state, rules, 10)  # mid age 1
    state, _ = boundary(snapshot, rules, FactoredAction.germinate(2, 0, 0))  # 11: late#2 TRAINING
    state = wait_until(state, rules, 12)
    view, events = rollback(snapshot, state, EpochMeasurements(epoch=13, val_acc=0.4), rules)
    early, mid, late = view.slots
    assert (view.epoch, view.val_acc, view.next_serial) == (13, 0.4, 3)
    fossil = snapshot.slots[0].seed
    assert early.stage == Stage.FOSSILIZED
    assert early.seed == attrs.evolve(fossil, age=fossil.age + 1, epochs_in_stage=fossil.epochs_in_stage + 1)
    assert mid.stage == Stage.CULLED and mid.seed.cull_reason == "governor_rollback"
    assert mid.seed.seed_id == "mid#1" and mid.seed.age == 2  # younger than min_cull_age: no age check
    assert (mid.germinations, mid.culls) == (1, 1)
    assert late.seed is None and (late.germinations, late.culls) == (1, 0)  # counters never decrease
    (culled,) = [e for e in events if isinstance(e, SeedCulled)]
    assert (culled.slot, culled.reason, culled.stage, culled.epoch) == (
        "mid",
        "governor_rollback",
        Stage.TRAINING,
        13,
    )
    assert cooldown_left(mid.seed, rules.config) == 7
    after, _ = apply_action(view, FactoredAction.germinate(2, 0, 0), rules)
    assert after.slots[1].stage == Stage.CULLED  # advance leaves the just-culled slot alone
    assert after.slots[2].seed.seed_id == "late#3"  # serials stay unique


def test_rollback_refuses_a_wrong_epoch() -> None:
    rules = make_rules()
    state = wait_until(fresh(), rules, 3)
    with pytest.raises(LifecycleError):
        rollback(fresh(), state, EpochMeasurements(epoch=3, val_acc=0.1), rules)


# ------------------------------------------------------------------------------------ events


def test_events_of_a_germination() -> None:
    rules = make_rules()
    _, events = germinate_at(rules, 2, blueprint=0, tempo=5)
    assert [type(e) for e in events] == [
        GateEvaluated,
        SeedGerminated,
        StageChanged,
        GateEvaluated,
        StageChanged,
    ]
    g0_event, born, to_germinated, g1_event, to_training = events
    assert (g0_event.gate, g0_event.passed, g0_event.slot) == ("G0", True, "early")
    assert born == SeedGerminated(
        slot="early", seed_id="early#0", blueprint="norm", tempo=5, curve="SIGMOID", n_params=17, epoch=2
    )
    assert (to_germinated.from_stage, to_germinated.to_stage, to_germinated.epoch) == (
        Stage.DORMANT,
        Stage.GERMINATED,
        2,
    )
    assert (g1_event.gate, g1_event.passed, g1_event.seed_id) == ("G1", True, "early#0")
    assert (to_training.from_stage, to_training.to_stage, to_training.epoch) == (
        Stage.GERMINATED,
        Stage.TRAINING,
        2,
    )
    assert to_training.previous_epochs_in_stage == 0


def test_events_of_a_fossilization_carry_the_measured_contribution() -> None:
    rules = make_rules()
    state = reach(Stage.PROBATIONARY, rules)
    state, events = boundary(state, rules, FOSSILIZE0, early={"contribution": 0.0375})
    assert [type(e) for e in events] == [GateEvaluated, StageChanged, SeedFossilized]
    gate, changed, fossilized = events
    assert (gate.gate, gate.passed) == ("G5", True)
    assert (changed.from_stage, changed.to_stage, changed.previous_epochs_in_stage) == (
        Stage.PROBATIONARY,
        Stage.FOSSILIZED,
        1,
    )
    assert fossilized == SeedFossilized(
        slot="early", seed_id="early#0", contribution=0.0375, n_params=17, age=7, epoch=8
    )


def test_every_event_is_json_serialisable() -> None:
    rules = make_rules(strict=False)
    state, events = germinate_at(rules, 1, tempo=3)
    collected = list(events)
    state, events = boundary(state, rules, CULL0)  # rejected: too young
    collected += events
    state, events = boundary(state, rules, FactoredAction.germinate(1, 1, 0))
    collected += events
    for b in range(3, 20):
        action = FOSSILIZE0 if b == 8 else (FactoredAction.cull(1) if b == 5 else WAIT)
        state, events = boundary(state, rules, action)
        collected += events
    kinds = {type(e) for e in collected}
    assert {
        ActionRejected,
        GateEvaluated,
        SeedGerminated,
        StageChanged,
        SeedFossilized,
        SeedCulled,
        SeedRetired,
    } <= kinds
    for event in collected:
        data = codec.encode(event)
        assert json.loads(json.dumps(data, allow_nan=False)) == data
