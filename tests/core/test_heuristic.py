"""The heuristic controller (docs/runtime.md §1.3–1.4, §10 items 2–3): one crafted case per row M0–M5
and C1–C7 with its reason, blueprint rotation and cull penalty, config validation, purity.

Views are real lifecycle values: either driven through `lifecycle` with crafted measurements
(lifecycle_helpers) or hand-built seed states; masks always come from `legality.masks`.
Defaults: synth-images horizon E = 40, so min_span(T = 5) = 9 and C5 allows epoch ≤ 29.
"""

import copy
import json

import attrs
import pytest
from lifecycle_helpers import boundary, drive_until, germinate_at, make_rules, measure, seed_state, state_with

from esper.core import codec, lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.catalogue import catalogue_for
from esper.core.errors import ConfigError
from esper.core.events import InputMissing, SeedCulled, SeedFossilized, SeedGerminated
from esper.core.heuristic import (
    CNN_ROTATION,
    DecisionView,
    HeuristicConfig,
    HeuristicState,
    SlotView,
    choose_blueprint,
    decide,
    decision_view,
    germination_blocker,
    input_missing_events,
    observe,
    seed_rule,
    static_decide,
)
from esper.core.legality import masks
from esper.core.signals import TrackerState
from esper.core.stages import Stage

H = 40
RULES = make_rules(horizon=H)
CFG = HeuristicConfig()
READY = TrackerState(epoch=10, latched=True, plateau_epochs=3)
NAMES = tuple(spec.name for spec in catalogue_for("cnn").germinable)
FRESH = HeuristicState(topology="cnn")
EARLY, MID, LATE = 0, 1, 2


def hview(view, *, tracker=READY, horizon=H, rules=RULES) -> DecisionView:
    return decision_view(view, tracker, masks(view, rules), horizon, rules)


def run(view, cfg=CFG, state=FRESH, **kw) -> tuple[FactoredAction, str]:
    _, action, reason = decide(state, hview(view, **kw), cfg)
    return action, reason


def empty(epoch: int = 10, val_acc: float = 0.5):
    return state_with(epoch=epoch, val_acc=val_acc)


def late(stage: Stage, *, epoch: int = 10, val_acc: float = 0.5, **fields):
    """A state whose late slot holds a `stage` seed (germinated at acc 0.5 by default)."""
    return state_with(None, None, seed_state(stage, slot=LATE, **fields), epoch=epoch, val_acc=val_acc)


def germinate(slot: int, blueprint: str) -> FactoredAction:
    return FactoredAction.germinate(slot, NAMES.index(blueprint), RULES.config.tempo_choices.index(5))


# --- M0–M5 -----------------------------------------------------------------------------------


def test_m0_missing_shadow_gain_in_a_driven_training_seed():
    state, _ = germinate_at(RULES, 5, slot=LATE)
    view = lifecycle.record(state, measure(state, late={"shadow_gain": None}))
    assert run(view) == (FactoredAction.wait(), "input_missing")
    assert input_missing_events(hview(view)) == (InputMissing(epoch=6, slot="late", input="shadow_gain"),)
    healthy = lifecycle.record(state, measure(state))
    assert input_missing_events(hview(healthy)) == ()


def test_m0_missing_contribution_in_blending_and_probation():
    for stage in (Stage.BLENDING, Stage.PROBATIONARY):
        view = late(stage, contribution=None, epochs_in_stage=2)
        assert run(view) == (FactoredAction.wait(), "input_missing")
        assert input_missing_events(hview(view))[0].input == "contribution"


def test_m1_fossilizes_a_driven_seed_that_contributes_with_net_gain():
    state, _ = germinate_at(RULES, 5, slot=LATE)
    state = drive_until(state, RULES, LATE, Stage.PROBATIONARY)
    view = lifecycle.record(state, measure(state, val_acc=0.55))
    action, reason = run(view)
    assert (action, reason) == (FactoredAction.fossilize(LATE), "contributes")
    after, _ = lifecycle.apply_action(view, action, RULES)
    assert after.slots[LATE].stage == Stage.FOSSILIZED
    # Zero net gain still fossilizes (total_gain ≥ 0.0).
    assert run(late(Stage.PROBATIONARY, contribution=0.02, val_acc=0.5)) == (FactoredAction.fossilize(LATE),
                                                                            "contributes")


def test_m2_culls_a_dependency_without_gain():
    state, _ = germinate_at(RULES, 5, slot=LATE)
    state = drive_until(state, RULES, LATE, Stage.PROBATIONARY)
    view = lifecycle.record(state, measure(state, val_acc=0.45))  # contribution 0.02, total gain −0.05
    assert run(view) == (FactoredAction.cull(LATE), "dependency_without_gain")
    # Contribution below G5 (no FOSSILIZE) but positive, with negative gain: still M2.
    assert run(late(Stage.PROBATIONARY, contribution=0.005, val_acc=0.4))[1] == "dependency_without_gain"


def test_m3_culls_a_blend_that_hurts_after_two_epochs():
    assert run(late(Stage.BLENDING, epochs_in_stage=2, contribution=-0.03)) == (FactoredAction.cull(LATE),
                                                                               "blend_hurts")
    assert run(late(Stage.BLENDING, epochs_in_stage=1, contribution=-0.03))[1] == "awaiting_gate"
    assert run(late(Stage.BLENDING, epochs_in_stage=2, contribution=-0.02))[1] == "awaiting_gate"  # strict <


def test_m4_culls_a_driven_training_seed_whose_shadow_hurts():
    state, _ = germinate_at(RULES, 5, slot=LATE)
    hurt = {"shadow_gain": -0.03}
    state, _ = boundary(state, RULES, late=hurt)
    view2 = lifecycle.record(state, measure(state, late=hurt))  # epochs_in_stage 2
    assert run(view2)[1] == "awaiting_gate"
    state, _ = boundary(state, RULES, late=hurt)
    view3 = lifecycle.record(state, measure(state, late=hurt))  # epochs_in_stage 3
    assert view3.slots[LATE].seed.epochs_in_stage == 3
    assert run(view3) == (FactoredAction.cull(LATE), "shadow_hurts")
    lifecycle.apply_action(view3, FactoredAction.cull(LATE), RULES)  # the lifecycle accepts it


def test_m5_waits_for_the_gate():
    view = late(Stage.PROBATIONARY, contribution=0.005)  # 0 < c < 0.01: the timeout will end it
    assert run(view) == (FactoredAction.wait(), "awaiting_gate")
    slot = hview(view).slots[LATE]
    assert seed_rule(slot, hview(view).masks, CFG) == (FactoredAction.wait(), "awaiting_gate")


def test_a_cull_row_needs_cull_unmasked():
    view = late(Stage.BLENDING, epochs_in_stage=2, age=2, contribution=-0.05)  # age < min_cull_age 3
    assert not hview(view).masks.slot[Op.CULL][LATE]
    assert run(view) == (FactoredAction.wait(), "awaiting_gate")


def test_scan_goes_early_to_late_and_the_first_action_decides():
    two = HeuristicConfig(concurrent_seeds=2)
    blend_hurts = seed_state(Stage.BLENDING, slot=EARLY, epochs_in_stage=2, contribution=-0.05)
    shadow_hurts = seed_state(Stage.TRAINING, slot=LATE, epochs_in_stage=3, shadow_gain=-0.05)
    waiting = seed_state(Stage.PROBATIONARY, slot=EARLY, contribution=0.005)
    both = state_with(blend_hurts, None, shadow_hurts, val_acc=0.5)
    assert run(both, two) == (FactoredAction.cull(EARLY), "blend_hurts")
    assert run(state_with(waiting, None, shadow_hurts, val_acc=0.5), two) == (FactoredAction.cull(LATE),
                                                                             "shadow_hurts")


# --- C1–C7 -----------------------------------------------------------------------------------


def test_germinates_on_plateau_into_the_deepest_free_slot_at_the_default_tempo():
    view = empty()
    action, reason = run(view)
    assert (action, reason) == (germinate(LATE, "conv_light"), "plateau")
    assert RULES.config.tempo_choices[action.tempo] == 5
    after, events = lifecycle.apply_action(view, action, RULES)
    assert after.slots[LATE].stage == Stage.TRAINING
    assert any(isinstance(e, SeedGerminated) and e.blueprint == "conv_light" for e in events)
    cooling = state_with(None, None, seed_state(Stage.EMBARGOED, slot=LATE), val_acc=0.5)
    assert run(cooling) == (germinate(MID, "conv_light"), "plateau")


def test_c1_seed_live():
    view = late(Stage.PROBATIONARY, contribution=0.005)
    assert germination_blocker(hview(view), CFG) == "seed_live"
    # The reported reason is what the live seed waits for (see the module docstring).
    assert run(view) == (FactoredAction.wait(), "awaiting_gate")
    # With room for two seeds the next free slot germinates.
    two = HeuristicConfig(concurrent_seeds=2)
    assert germination_blocker(hview(view), two) is None
    assert run(view, two) == (germinate(MID, "conv_light"), "plateau")


def test_c2_seed_limit():
    view = late(Stage.FOSSILIZED)  # one germination so far
    assert run(view, HeuristicConfig(max_seeds=1)) == (FactoredAction.wait(), "seed_limit")
    assert run(view, HeuristicConfig(max_seeds=2))[1] == "plateau"
    assert run(view, HeuristicConfig(max_seeds=0))[1] == "plateau"  # 0 = unlimited


def test_c3_no_free_slot_and_no_blueprint_fits():
    full = state_with(seed_state(Stage.EMBARGOED, slot=EARLY), seed_state(Stage.CULLED, slot=MID),
                      seed_state(Stage.FOSSILIZED, slot=LATE), val_acc=0.5)
    assert run(full) == (FactoredAction.wait(), "no_free_slot")
    # Free slots exist, but the only rotation blueprint exceeds max_seed_params everywhere.
    tight = make_rules(horizon=H, max_seed_params=100)  # conv_heavy ≥ 1,184 params; norm fits
    heavy_only = HeuristicConfig(cnn_rotation=("conv_heavy",))
    assert run(empty(), heavy_only, rules=tight) == (FactoredAction.wait(), "no_blueprint_fits")
    norm_only = HeuristicConfig(cnn_rotation=("norm",))
    assert run(empty(), norm_only, rules=tight) == (germinate(LATE, "norm"), "plateau")


def test_c4_too_early():
    assert run(empty(epoch=4)) == (FactoredAction.wait(), "too_early")
    assert run(empty(epoch=5))[1] == "plateau"


def test_c5_too_late():
    assert hview(empty()).min_span == 9
    assert run(empty(epoch=29))[1] == "plateau"  # 40 − 29 = 11 = 9 + 2
    assert run(empty(epoch=30)) == (FactoredAction.wait(), "too_late")


def test_c6_not_stabilised():
    unlatched = TrackerState(epoch=10, latched=False, plateau_epochs=5)
    assert run(empty(), tracker=unlatched) == (FactoredAction.wait(), "not_stabilised")


def test_c7_progressing():
    assert run(empty(), tracker=TrackerState(epoch=10, latched=True, plateau_epochs=2)) == (
        FactoredAction.wait(), "progressing")


def test_early_germination_skips_c6_and_c7_but_keeps_c1_to_c5():
    early = HeuristicConfig(germination="early", min_germinate_epoch=2)
    unsettled = TrackerState(epoch=2, latched=False, plateau_epochs=0)
    plateau = attrs.evolve(early, germination="plateau")
    assert run(empty(epoch=2), plateau, tracker=unsettled) == (FactoredAction.wait(), "not_stabilised")
    assert run(empty(epoch=2), early, tracker=unsettled) == (germinate(LATE, "conv_light"), "early")
    assert run(empty(epoch=1), early, tracker=unsettled) == (FactoredAction.wait(), "too_early")
    assert run(empty(epoch=30), early, tracker=unsettled) == (FactoredAction.wait(), "too_late")
    view = late(Stage.PROBATIONARY, epoch=2, contribution=0.005)
    assert run(view, early, tracker=unsettled) == (FactoredAction.wait(), "awaiting_gate")


def test_conditions_are_checked_in_order():
    lost = TrackerState(epoch=4, latched=False, plateau_epochs=0)
    assert run(empty(epoch=4), tracker=lost)[1] == "too_early"
    assert run(empty(epoch=35), tracker=lost)[1] == "too_late"
    assert run(late(Stage.FOSSILIZED, epoch=4), HeuristicConfig(max_seeds=1), tracker=lost)[1] == "seed_limit"


# --- blueprint rotation and cull penalty ---------------------------------------------------


def germinated(blueprint: str, serial: int, slot: str = "late") -> SeedGerminated:
    return SeedGerminated(slot=slot, seed_id=f"{slot}#{serial}", blueprint=blueprint, tempo=5,
                          curve="SIGMOID", n_params=1, epoch=serial)


def culled(serial: int, reason: str = "action", slot: str = "late") -> SeedCulled:
    return SeedCulled(slot=slot, seed_id=f"{slot}#{serial}", reason=reason, stage=Stage.TRAINING, age=3,
                      contribution=None, epoch=serial)


def test_rotation_cycles_in_order():
    state, chosen = FRESH, []
    for serial in range(2 * len(CNN_ROTATION)):
        blueprint = choose_blueprint(state, NAMES, CFG)
        chosen.append(blueprint)
        state = observe(state, [germinated(blueprint, serial)], serial, CFG)
    assert chosen == [*CNN_ROTATION, *CNN_ROTATION]
    # Candidates are restricted to what the slot admits; the pointer still ranks them.
    assert choose_blueprint(HeuristicState(topology="cnn", pointer=3), ["conv_light", "bottleneck"], CFG) == (
        "bottleneck")
    assert choose_blueprint(FRESH, ["noop", "unknown"], CFG) is None


def test_one_cull_keeps_x_out_for_15_germinations_and_not_the_16th():
    x, others = "attention", [b for b in CNN_ROTATION if b != "attention"]
    state = observe(FRESH, [germinated(x, 0), culled(0)], 0, CFG)
    assert state.penalties == (("attention", 1.0),)
    for k in range(15):
        for pointer in range(len(CNN_ROTATION)):  # whatever the rotation says, X loses
            assert choose_blueprint(HeuristicState(topology="cnn", pointer=pointer,
                                                   penalties=state.penalties), NAMES, CFG) != x
        state = observe(state, [germinated(others[k % len(others)], k + 1)], k + 1, CFG)
        if k < 14:
            assert state.penalty(x) == pytest.approx(0.85 ** (k + 1))
    assert state.penalties == ()  # 0.85^15 ≈ 0.087 < 0.1: deleted
    at_x = HeuristicState(topology="cnn", pointer=CNN_ROTATION.index(x), penalties=state.penalties)
    assert choose_blueprint(at_x, NAMES, CFG) == x


def test_penalty_sources():
    state = observe(FRESH, [germinated("norm", 0), germinated("lora", 1, "mid")], 1, CFG)
    # governor_rollback culls add nothing; lifecycle auto-culls and G1 failures do.
    state = observe(state, [culled(0, "governor_rollback"), culled(1, "g1:probe_failed", "mid")], 2, CFG)
    assert state.penalties == (("lora", 1.0),) and state.live_seeds == ()
    state = observe(state, [germinated("norm", 2), culled(2, "negative_contribution"),
                            germinated("norm", 3), culled(3, "probation_timeout")], 3, CFG)
    assert state.penalty("norm") == pytest.approx(1.85) and state.penalty("lora") == pytest.approx(0.85 ** 2)
    fossil = SeedFossilized(slot="late", seed_id="late#4", contribution=0.02, n_params=1, age=9, epoch=4)
    state = observe(state, [germinated("norm", 4), fossil], 4, CFG)
    assert state.live_seeds == () and state.penalty("norm") == pytest.approx(1.85 * 0.85)
    with pytest.raises(ValueError, match="never observed"):
        observe(state, [culled(9)], 9, CFG)


def test_observe_folds_real_lifecycle_events_and_the_penalty_steers_the_next_choice():
    view = empty()
    _, action, _ = decide(FRESH, hview(view), CFG)
    state_after, events = lifecycle.apply_action(view, action, RULES)
    heuristic = observe(FRESH, events, view.epoch, CFG)
    assert heuristic.pointer == 1 and heuristic.live_seeds == (("late#0", "conv_light"),)
    for _ in range(3):
        state_after, _ = boundary(state_after, RULES)
    cull_view = lifecycle.record(state_after, measure(state_after))
    _, events = lifecycle.apply_action(cull_view, FactoredAction.cull(LATE), RULES)
    heuristic = observe(heuristic, events, cull_view.epoch, CFG)
    assert heuristic.penalties == (("conv_light", 1.0),)
    rewound = HeuristicState(topology="cnn", pointer=0, penalties=heuristic.penalties)
    assert run(empty(), state=rewound) == (germinate(LATE, "conv_heavy"), "plateau")


# --- config, view, purity ------------------------------------------------------------------


def test_rotation_validation_lists_the_known_names():
    with pytest.raises(ConfigError, match=r"'conv_hevy'.*known: norm, attention, depthwise, bottleneck, "
                                          r"conv_light, conv_heavy"):
        HeuristicConfig(cnn_rotation=("conv_light", "conv_hevy"))
    with pytest.raises(ConfigError, match="'noop', which is not a germinable cnn blueprint"):
        HeuristicConfig(cnn_rotation=("noop",))
    with pytest.raises(ConfigError, match=r"transformer_rotation names 'conv_light'.*known: norm, lora"):
        HeuristicConfig(transformer_rotation=("conv_light",))
    with pytest.raises(ConfigError, match="empty"):
        HeuristicConfig(cnn_rotation=())
    with pytest.raises(ConfigError, match="repeats"):
        HeuristicConfig(cnn_rotation=("norm", "norm"))
    with pytest.raises(ConfigError, match="concurrent_seeds"):
        HeuristicConfig(concurrent_seeds=0)
    with pytest.raises(ConfigError, match="germination must be one of plateau, early, got 'soon'"):
        HeuristicConfig(germination="soon")


def test_defaults_match_the_spec():
    assert (CFG.concurrent_seeds, CFG.max_seeds, CFG.min_germinate_epoch, CFG.plateau_epochs, CFG.margin,
            CFG.blend_hurts, CFG.shadow_hurts, CFG.penalty_decay, CFG.penalty_floor, CFG.penalty_step,
            CFG.germination) == (1, 0, 5, 3, 2, -0.02, -0.02, 0.85, 0.1, 1.0, "plateau")
    assert CFG.rotation_for("cnn") == CNN_ROTATION
    assert CFG.rotation_for("transformer") == ("lora", "attention", "mlp", "norm")


def test_decision_view_reads_enabled_slots():
    blending = seed_state(Stage.BLENDING, slot=EARLY, contribution=0.03, grad_ratio=0.7)
    state = state_with(blending, val_acc=0.62)
    state = attrs.evolve(state, slots=(*state.slots[:2], attrs.evolve(state.slots[2], enabled=False)))
    view = hview(state)
    assert [s.slot_id for s in view.slots] == ["early", "mid"]
    early = view.slots[0]
    assert (early.stage, early.blueprint, early.epochs_in_stage, early.age, early.alpha, early.contribution,
            early.grad_ratio) == (Stage.BLENDING, "norm", 1, 5, 0.5, 0.03, 0.7)
    assert early.total_gain == pytest.approx(0.12)
    assert view.slots[1] == SlotView(slot_id="mid", index=1, stage=Stage.DORMANT)
    assert (view.tempo_index, view.min_span, view.horizon, view.germinations) == (1, 9, H, 1)
    assert run(state) == (FactoredAction.wait(), "awaiting_gate")


def test_static_controller_always_waits():
    assert static_decide(FRESH, hview(empty()), CFG) == (FRESH, FactoredAction.wait(), "static")


def test_decide_is_deterministic_and_pure():
    state = HeuristicState(topology="cnn", pointer=2, penalties=(("norm", 0.5),))
    for view in (hview(empty()), hview(late(Stage.BLENDING, epochs_in_stage=2, contribution=-0.05))):
        before_state, before_view = copy.deepcopy(state), copy.deepcopy(view)
        first = decide(state, view, CFG)
        assert decide(state, view, CFG) == first
        assert first[0] == state and state == before_state and view == before_view
    with pytest.raises(ValueError, match="transformer"):
        decide(HeuristicState(topology="transformer"), hview(empty()), CFG)


def test_round_trips_through_json():
    state = HeuristicState(topology="cnn", pointer=4, penalties=(("norm", 0.5), ("attention", 1.85)),
                           live_seeds=(("late#3", "norm"),))
    assert state.penalties == (("attention", 1.85), ("norm", 0.5))  # kept sorted by name
    view = hview(late(Stage.TRAINING, shadow_gain=0.01))
    custom = HeuristicConfig(cnn_rotation=("norm", "attention"), max_seeds=3)
    for value in (CFG, custom, state, FRESH, view, view.slots[LATE]):
        assert codec.decode(type(value), json.loads(json.dumps(codec.encode(value)))) == value
