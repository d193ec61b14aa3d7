"""Example tests of the lifecycle's state values and queries (docs/lifecycle.md §1.3, §2): `record`,
`measurement_plan`, `param_counts`, `initial_state`, `transition`, the invariants of §2.1–§2.2
and the codec round trip."""

import json
import math

import attrs
import pytest
from lifecycle_helpers import (
    CIFAR10_HOST_PARAMS,
    SPECS,
    boundary,
    drive_until,
    fresh,
    germinate_at,
    make_rules,
    measure,
    seed_state,
    slot_with,
    state_with,
)

from esper.core import codec
from esper.core.actions import FactoredAction, Op
from esper.core.errors import IllegalActionError, IllegalTransition, LifecycleError
from esper.core.legality import masks
from esper.core.lifecycle import act, initial_state, measurement_plan, param_counts, record, transition
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.seed import LifecycleState, SeedState, SlotState
from esper.core.stages import Stage

# -------------------------------------------------------------------------------------- record


def test_record_counts_one_epoch_for_every_seed_and_stores_the_measurements() -> None:
    state = state_with(
        seed_state(Stage.TRAINING, epochs_in_stage=2, age=2),
        seed_state(Stage.PROBATIONARY, slot=1, epochs_in_stage=1, age=9),
        seed_state(Stage.EMBARGOED, slot=2, epochs_in_stage=3, age=12),
        epoch=10,
    )
    m = EpochMeasurements(
        epoch=11,
        val_acc=0.61,
        slots=[
            SlotMeasurement(slot_id="early", shadow_gain=0.003, grad_ratio=0.2, seed_finite=False),
            SlotMeasurement(slot_id="mid", contribution=0.04),
        ],
    )
    view = record(state, m)
    assert (view.epoch, view.val_acc) == (11, 0.61)
    for before, after in zip(state.slots, view.slots, strict=True):
        assert after.seed.age == before.seed.age + 1
        assert after.seed.epochs_in_stage == before.seed.epochs_in_stage + 1
        assert after.stage == before.stage
    early, mid, late = (s.seed for s in view.slots)
    assert (early.shadow_gain, early.grad_ratio, early.seed_finite, early.contribution) == (
        0.003,
        0.2,
        False,
        None,
    )
    assert (mid.contribution, mid.shadow_gain, mid.seed_finite) == (0.04, None, True)
    assert (late.contribution, late.grad_ratio, late.seed_finite) == (None, None, True)  # not reported


def test_measurements_never_outlive_their_boundary() -> None:
    seed = seed_state(
        Stage.PROBATIONARY, contribution=0.3, grad_ratio=1.0, shadow_gain=0.1, seed_finite=False
    )
    view = record(state_with(seed, epoch=4), EpochMeasurements(epoch=5, val_acc=0.5))  # nothing reported
    after = view.slots[0].seed
    assert (after.contribution, after.shadow_gain, after.grad_ratio, after.seed_finite) == (
        None,
        None,
        None,
        True,
    )


@pytest.mark.parametrize("epoch", [9, 10, 12])
def test_record_refuses_a_wrong_epoch(epoch: int) -> None:
    with pytest.raises(LifecycleError, match="epoch"):
        record(state_with(seed_state(), epoch=10), EpochMeasurements(epoch=epoch, val_acc=0.5))


def test_record_refuses_unknown_slot_ids() -> None:
    m = EpochMeasurements(epoch=1, val_acc=0.5, slots=[SlotMeasurement(slot_id="deep")])
    with pytest.raises(LifecycleError, match="deep"):
        record(fresh(), m)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("val_acc", math.nan),
        ("val_acc", math.inf),
        ("contribution", math.inf),
        ("shadow_gain", math.nan),
        ("grad_ratio", -math.inf),
    ],
)
def test_record_refuses_non_finite_values(field: str, value: float) -> None:
    state = state_with(seed_state(Stage.TRAINING), epoch=3)
    if field == "val_acc":
        m = EpochMeasurements(epoch=4, val_acc=value)
    else:
        m = EpochMeasurements(
            epoch=4, val_acc=0.5, slots=[SlotMeasurement(slot_id="early", **{field: value})]
        )
    with pytest.raises(LifecycleError, match=field):
        record(state, m)


# ---------------------------------------------------------------------------- measurement plan

# docs/lifecycle.md §2.4: (contribution, shadow_gain, grad_ratio, finite) per stage.
PLAN = {
    Stage.TRAINING: (False, True, True, True),
    Stage.BLENDING: (True, False, True, True),
    Stage.PROBATIONARY: (True, False, False, True),
    Stage.FOSSILIZED: (False, False, False, False),
    Stage.CULLED: (False, False, False, False),
    Stage.EMBARGOED: (False, False, False, False),
    Stage.RESETTING: (False, False, False, False),
    Stage.DORMANT: (False, False, False, False),
}


@pytest.mark.parametrize("fossil_contribution", [False, True])
@pytest.mark.parametrize("stage", list(PLAN))
def test_measurement_plan_per_stage(stage: Stage, fossil_contribution: bool) -> None:
    state = state_with(None if stage == Stage.DORMANT else seed_state(stage), epoch=9)
    plan = measurement_plan(state, fossil_contribution=fossil_contribution).for_slot("early")
    expected = PLAN[stage]
    if stage == Stage.FOSSILIZED and fossil_contribution:
        expected = (True, False, False, False)  # only when the controller or telemetry needs it
    assert (plan.contribution, plan.shadow_gain, plan.grad_ratio, plan.finite) == expected
    assert plan.any == any(expected)


# ------------------------------------------------------------------------------- param counts


def test_param_counts_from_the_formulas() -> None:
    state = state_with(
        seed_state(Stage.TRAINING, blueprint="norm"),  # 2·8 + 1 = 17
        seed_state(Stage.FOSSILIZED, slot=1, blueprint="conv_light"),  # 9·16² + 2·16 = 2336
        seed_state(Stage.BLENDING, slot=2, blueprint="depthwise"),
    )  # 32² + 11·32 = 1376
    counts = param_counts(state, CIFAR10_HOST_PARAMS)
    assert (counts.host, counts.live, counts.fossilized) == (6_418, 17 + 1_376, 2_336)
    assert counts.total == 6_418 + 17 + 1_376 + 2_336


@pytest.mark.parametrize("stage", [Stage.CULLED, Stage.EMBARGOED, Stage.RESETTING])
def test_cooling_and_empty_slots_count_nothing(stage: Stage) -> None:
    counts = param_counts(state_with(seed_state(stage, blueprint="conv_heavy")), 100)
    assert (counts.host, counts.live, counts.fossilized, counts.total) == (100, 0, 0, 100)


def test_param_counts_follow_a_seed_through_its_life() -> None:
    rules = make_rules()
    state, _ = germinate_at(rules, 1, blueprint=rules.catalogue.germinable_index("conv_light"), tempo=3)
    assert param_counts(state, 0).live == 592  # 9·8² + 2·8
    state = drive_until(state, rules, 0, Stage.PROBATIONARY)
    state, _ = boundary(state, rules, FactoredAction.fossilize(0))
    assert (param_counts(state, 0).live, param_counts(state, 0).fossilized) == (0, 592)


# ------------------------------------------------------------------------------ initial state


def test_initial_state_defaults() -> None:
    state = fresh()
    assert (state.topology, state.epoch, state.next_serial, state.val_acc) == ("cnn", 0, 0, 0.0)
    assert [(s.slot_id, s.index, s.dim, s.enabled) for s in state.slots] == [
        ("early", 0, 8, True),
        ("mid", 1, 16, True),
        ("late", 2, 32, True),
    ]
    assert all(
        s.seed is None and s.stage == Stage.DORMANT and (s.germinations, s.culls) == (0, 0)
        for s in state.slots
    )


def test_initial_state_with_a_subset_enabled() -> None:
    rules = make_rules()
    state = fresh({"mid"})
    assert [s.enabled for s in state.slots] == [False, True, False]
    view = record(state, measure(state))
    assert masks(view, rules).slot[Op.GERMINATE] == (False, True, False)
    with pytest.raises(IllegalActionError) as info:
        act(view, FactoredAction.germinate(0, 0, 0), rules)
    assert info.value.reason == "slot_disabled"
    after, _ = act(view, FactoredAction.germinate(1, 0, 0), rules)
    assert after.slots[1].stage == Stage.TRAINING


@pytest.mark.parametrize("enabled", [{"mid", "deep"}, {"Early"}])
def test_initial_state_refuses_unknown_slot_names(enabled: set[str]) -> None:
    with pytest.raises(LifecycleError, match="unknown"):
        fresh(enabled)


def test_initial_state_needs_an_enabled_slot_and_a_known_topology() -> None:
    with pytest.raises(LifecycleError):
        fresh(set())
    with pytest.raises(LifecycleError):
        initial_state("rnn", SPECS)


# --------------------------------------------------------------------------------- transition


def test_transition_resets_the_dwell_and_remembers_the_last_one() -> None:
    seed = seed_state(Stage.TRAINING, epochs_in_stage=4, age=4, grad_ratio=1.0)
    moved, events = transition(
        seed, Stage.BLENDING, reason="G2", epoch=12, val_acc=0.7, config=make_rules().config
    )
    assert (moved.stage, moved.previous_stage, moved.epochs_in_stage, moved.previous_epochs_in_stage) == (
        Stage.BLENDING,
        Stage.TRAINING,
        0,
        4,
    )
    assert (moved.ramp_step, moved.acc_at_stage_start, moved.history[-1]) == (1, 0.7, (Stage.BLENDING, 12))
    assert moved.alpha > 0.0 and len(events) == 1


@pytest.mark.parametrize(
    ("stage", "to"),
    [
        (Stage.TRAINING, Stage.FOSSILIZED),
        (Stage.TRAINING, Stage.PROBATIONARY),
        (Stage.BLENDING, Stage.TRAINING),
        (Stage.FOSSILIZED, Stage.CULLED),
        (Stage.CULLED, Stage.DORMANT),
        (Stage.EMBARGOED, Stage.DORMANT),
    ],
)
def test_transition_refuses_illegal_edges(stage: Stage, to: Stage) -> None:
    with pytest.raises(IllegalTransition):
        transition(seed_state(stage), to, reason="action", epoch=3, val_acc=0.5, config=make_rules().config)


def test_transition_refuses_an_unknown_cull_reason() -> None:
    with pytest.raises(LifecycleError, match="cull reason"):
        transition(
            seed_state(), Stage.CULLED, reason="bored", epoch=3, val_acc=0.5, config=make_rules().config
        )


# --------------------------------------------------------------------------------- invariants

BROKEN = [  # (valid seed of this stage, changes that break an invariant of §2.1, message text)
    (Stage.TRAINING, {"alpha": 1.0}, "alpha"),
    (Stage.TRAINING, {"alpha": 0.3}, "alpha"),
    (Stage.CULLED, {"alpha": 0.5}, "alpha"),
    (Stage.PROBATIONARY, {"alpha": 0.9}, "alpha"),
    (Stage.FOSSILIZED, {"alpha": 0.99}, "alpha"),
    (Stage.BLENDING, {"alpha": 1.2}, "alpha"),
    (Stage.BLENDING, {"alpha": -0.1}, "alpha"),
    (Stage.TRAINING, {"stage": Stage.DORMANT, "history": ((Stage.DORMANT, 0),)}, "DORMANT"),
    (Stage.TRAINING, {"cull_reason": "action"}, "cull_reason"),
    (Stage.CULLED, {"cull_reason": None}, "cull_reason"),
    (Stage.TRAINING, {"epochs_in_stage": 6, "age": 5}, "epochs_in_stage"),
    (Stage.TRAINING, {"epochs_in_stage": -1}, "epochs_in_stage"),
    (Stage.TRAINING, {"history": ((Stage.GERMINATED, 0),)}, "history"),
    (Stage.TRAINING, {"history": ()}, "history"),
    (
        Stage.RESETTING,
        {"history": ((Stage.GERMINATED, 0),) + ((Stage.TRAINING, 1),) * 6 + ((Stage.RESETTING, 2),)},
        "history",
    ),
]


@pytest.mark.parametrize(("stage", "changes", "text"), BROKEN)
def test_seed_invariant_violations_raise(stage: Stage, changes: dict, text: str) -> None:
    seed = seed_state(stage)
    with pytest.raises(LifecycleError, match=text):
        attrs.evolve(seed, **changes)


@pytest.mark.parametrize(
    ("stage", "changes"),
    [
        pytest.param(Stage.TRAINING, {"ramp_step": 2}, id="ramp_step-training"),
        pytest.param(Stage.BLENDING, {"ramp_step": 0}, id="ramp_step-blending-0"),
        pytest.param(Stage.BLENDING, {"ramp_step": 6}, id="ramp_step-blending-past-tempo"),
        pytest.param(Stage.PROBATIONARY, {"ramp_step": 3}, id="ramp_step-probation-not-tempo"),
        pytest.param(Stage.CULLED, {"ramp_step": 1}, id="ramp_step-cooling"),
        pytest.param(Stage.TRAINING, {"grad_ratio": -1.0}, id="grad_ratio-negative"),
        pytest.param(Stage.TRAINING, {"blueprint": "noop", "blueprint_index": 0, "n_params": 0}, id="noop"),
        pytest.param(
            Stage.TRAINING,
            {"history": ((Stage.GERMINATED, 0), (Stage.BLENDING, 1), (Stage.TRAINING, 2))},
            id="history-not-edges",
        ),
    ],
)
def test_seed_invariants_checked_on_construction(stage: Stage, changes: dict) -> None:
    seed = seed_state(stage)
    with pytest.raises(LifecycleError):
        attrs.evolve(seed, **changes)


def test_slot_and_state_invariants() -> None:
    training = seed_state(Stage.TRAINING)
    with pytest.raises(LifecycleError):
        slot_with(training, enabled=False)  # a disabled slot is always DORMANT
    with pytest.raises(LifecycleError):
        slot_with(training, slot=1)  # a seed of another slot and dim
    with pytest.raises(LifecycleError):
        slot_with(germinations=-1)
    early, mid = slot_with(), slot_with(slot=1)
    with pytest.raises(LifecycleError):
        LifecycleState(topology="cnn", slots=(mid, early))  # index != position
    with pytest.raises(LifecycleError):
        LifecycleState(topology="cnn", slots=(early, attrs.evolve(early, index=1)))  # duplicate ids
    with pytest.raises(LifecycleError):
        LifecycleState(topology="cnn", slots=(slot_with(enabled=False),))
    assert isinstance(slot_with(), SlotState) and slot_with().stage == Stage.DORMANT


# ------------------------------------------------------------------------------ to/from dict


def lived_state() -> LifecycleState:
    """early FOSSILIZED, mid CULLED by the controller, late mid-ramp BLENDING."""
    rules = make_rules()
    state, _ = germinate_at(rules, 1, tempo=3)
    state, _ = boundary(state, rules, FactoredAction.germinate(1, 4, 1))
    state, _ = boundary(state, rules, FactoredAction.germinate(2, 2, 2))
    state = drive_until(state, rules, 0, Stage.PROBATIONARY)
    state, _ = boundary(state, rules, FactoredAction.fossilize(0))
    state, _ = boundary(state, rules, FactoredAction.cull(1))
    assert [s.stage for s in state.slots] == [Stage.FOSSILIZED, Stage.CULLED, Stage.BLENDING]
    return state


def test_state_round_trips_through_json() -> None:
    state = lived_state()
    data = json.loads(json.dumps(codec.encode(state)))
    assert (
        data["slots"][0]["seed"]["stage"] == "FOSSILIZED" and data["slots"][1]["seed"]["curve"] == "SIGMOID"
    )
    assert codec.decode(LifecycleState, data) == state


@pytest.mark.parametrize("stage", [s for s in Stage if s != Stage.DORMANT])
def test_seed_round_trips_in_every_stage(stage: Stage) -> None:
    seed = seed_state(stage, contribution=0.25, grad_ratio=0.5)
    assert codec.decode(SeedState, json.loads(json.dumps(codec.encode(seed)))) == seed


def _break(data: dict, how: str) -> None:
    seed = data["slots"][2]["seed"]
    if how == "no-slots":
        del data["slots"]
    elif how == "topology":
        data["topology"] = "rnn"
    elif how == "no-enabled-slot":
        data["slots"] = []
    elif how == "slot-unknown-key":
        data["slots"][0]["bogus"] = 1
    elif how == "slot-missing-id":
        del data["slots"][0]["slot_id"]
    elif how == "seed-not-a-dict":
        data["slots"][2]["seed"] = "late#2"
    elif how == "stage-name":
        seed["stage"] = "SHADOWING"
    elif how == "stage-code":
        seed["stage"] = 3
    elif how == "curve-name":
        seed["curve"] = "CUBIC"
    elif how == "history-pair":
        seed["history"] = [["GERMINATED"]]
    elif how == "missing-tempo":
        del seed["tempo"]
    elif how == "alpha-out-of-range":
        seed["alpha"] = 2.0


@pytest.mark.parametrize(
    "how",
    [
        "no-slots",
        "topology",
        "no-enabled-slot",
        "slot-unknown-key",
        "slot-missing-id",
        "seed-not-a-dict",
        "stage-name",
        "stage-code",
        "curve-name",
        "history-pair",
        "missing-tempo",
        "alpha-out-of-range",
    ],
)
def test_malformed_dicts_raise_lifecycle_error(how: str) -> None:
    data = json.loads(json.dumps(codec.encode(lived_state())))
    _break(data, how)
    with pytest.raises(LifecycleError):
        codec.decode(LifecycleState, data)
