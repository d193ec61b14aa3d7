"""Heuristic and governor properties (docs/runtime.md §10 items 2, 5).

For random reachable lifecycle views, tracker states, configs and penalties: every action
`decide` returns is allowed by the masks (and accepted by the lifecycle), it never fossilizes
a seed with negative total gain, never germinates while `concurrent_seeds` seeds are live, and
is deterministic and pure. Heuristic-driven episodes (with governor rollbacks) keep `observe`
consistent with the lifecycle. Governor: OK never comes from a non-finite loss, and the window
never exceeds its size.
"""

import copy

import attrs
from hypothesis import example, given
from hypothesis import strategies as st
from seed_cases import SPECS, one_seed_state

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.config import LifecycleConfig, Rules
from esper.core.events import ActionRejected
from esper.core.governor import GovernorConfig, GovernorState, check
from esper.core.heuristic import HeuristicConfig, HeuristicState, decide, decision_view, germination_blocker, observe
from esper.core.legality import masks
from esper.core.signals import TrackerState
from esper.core.stages import LIVE, Stage
from esper.testing.strategies import epoch_measurements, reachable_views, rules_and_state

DEFAULT = HeuristicConfig()
heuristic_configs = st.builds(
    HeuristicConfig,
    concurrent_seeds=st.integers(1, 3),
    max_seeds=st.sampled_from([0, 0, 1, 3]),
    min_germinate_epoch=st.sampled_from([0, 1, 5]),
    plateau_epochs=st.integers(0, 4),
    margin=st.integers(0, 3),
    germination=st.sampled_from(["plateau", "early"]),
)
# Mostly latched and on a plateau, so germination is actually tried.
trackers = st.builds(TrackerState, epoch=st.integers(0, 60), latched=st.sampled_from([True, True, False]),
                     plateau_epochs=st.integers(0, 6), stable_count=st.integers(0, 5))


@st.composite
def heuristic_states(draw: st.DrawFn, topology: str) -> HeuristicState:
    rotation = DEFAULT.rotation_for(topology)
    names = draw(st.lists(st.sampled_from(rotation), unique=True))
    return HeuristicState(topology=topology, pointer=draw(st.integers(0, len(rotation))),
                          penalties=[(n, draw(st.floats(0.1, 3.0))) for n in names])


@st.composite
def decisions(draw: st.DrawFn):
    rules, view = draw(reachable_views(max_steps=30))
    horizon = view.epoch + draw(st.integers(0, 40))
    hview = decision_view(view, draw(trackers), masks(view, rules), horizon, rules)
    cfg = draw(st.one_of(st.just(DEFAULT), heuristic_configs))
    return rules, view, hview, draw(heuristic_states(view.topology)), cfg


ACTION_REASONS = {"contributes", "dependency_without_gain", "blend_hurts", "shadow_hurts", "plateau", "early"}


def assert_sensible(rules, view, hview, cfg, action, reason) -> None:
    """Allowed by the masks and accepted by the lifecycle; no FOSSILIZE at negative total gain;
    no GERMINATE while `concurrent_seeds` seeds are live."""
    assert hview.masks.allows(action), (action, reason)
    _, events = lifecycle.apply_action(view, action, rules)  # strict rules raise on refusal
    assert not any(isinstance(e, ActionRejected) for e in events)
    if action.op == Op.FOSSILIZE:
        slot = next(s for s in hview.slots if s.index == action.slot)
        assert slot.total_gain is not None and slot.total_gain >= 0.0
    if sum(s.stage in LIVE for s in hview.slots) >= cfg.concurrent_seeds:
        assert action.op != Op.GERMINATE
    assert (action.op != Op.WAIT) == (reason in ACTION_REASONS), (action, reason)


@given(decisions())
def test_decide_issues_only_allowed_and_sensible_actions(case):
    rules, view, hview, state, cfg = case
    _, action, reason = decide(state, hview, cfg)
    assert_sensible(rules, view, hview, cfg, action, reason)


@given(decisions())
def test_early_germination_ignores_the_tracker_and_plateau_adds_only_tracker_conditions(case):
    """"early" never waits on the tracker; "plateau" differs from it only by C6 and C7."""
    _, _, hview, _, cfg = case
    early = germination_blocker(hview, attrs.evolve(cfg, germination="early"))
    plateau = germination_blocker(hview, attrs.evolve(cfg, germination="plateau"))
    assert early not in {"not_stabilised", "progressing"}
    assert plateau == early or (early is None and plateau in {"not_stabilised", "progressing"})


@given(decisions())
def test_decide_is_deterministic_and_pure(case):
    _, _, hview, state, cfg = case
    before = copy.deepcopy((hview, state, cfg))
    first = decide(state, hview, cfg)
    assert decide(state, hview, cfg) == first
    assert (hview, state, cfg) == before
    assert first[0] == state


@given(st.data())
def test_heuristic_driven_episodes_stay_consistent(data):
    """Drive the lifecycle with the heuristic for a whole episode; rollbacks now and then."""
    rules, state = data.draw(rules_and_state())
    heuristic = HeuristicState(topology=state.topology)
    snapshot = (state, heuristic)
    horizon = data.draw(st.integers(10, 40))
    cfg = data.draw(st.one_of(st.just(DEFAULT), heuristic_configs))
    for _ in range(horizon):
        m = data.draw(epoch_measurements(state))
        rollback_events: tuple = ()
        if data.draw(st.integers(0, 9)) == 0:  # a governor PANIC: restore both, cull the live seeds
            view, rollback_events = lifecycle.rollback(snapshot[0], state, m, rules)
            heuristic = snapshot[1]
        else:
            view = lifecycle.record(state, m)
        hview = decision_view(view, data.draw(trackers), masks(view, rules), horizon, rules)
        _, action, reason = decide(heuristic, hview, cfg)
        assert_sensible(rules, view, hview, cfg, action, reason)
        state, events = lifecycle.apply_action(view, action, rules)
        penalties = heuristic.penalties
        heuristic = observe(heuristic, rollback_events, view.epoch, cfg)
        assert heuristic.penalties == penalties  # governor_rollback culls cost nothing
        heuristic = observe(heuristic, events, view.epoch, cfg)  # never meets an unknown seed
        live_ids = {s.seed.seed_id for s in state.slots if s.seed is not None and s.stage in LIVE}
        assert {seed_id for seed_id, _ in heuristic.live_seeds} == live_ids
        if data.draw(st.booleans()):
            snapshot = (state, heuristic)


losses = st.one_of(st.floats(0.0, 20.0), st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                   st.floats(allow_nan=True, allow_infinity=True))


@given(st.integers(1, 8), st.integers(0, 20), st.lists(st.tuples(losses, losses), max_size=60))
def test_governor_ok_only_on_finite_losses_and_window_bounded(warmup, extra, sequence):
    cfg = GovernorConfig(random_guess_loss=2.302585, warmup=warmup, window=warmup + extra)
    state = GovernorState()
    for train_loss, val_loss in sequence:
        before = state
        state, verdict = check(state, train_loss, val_loss, cfg)
        assert len(state.window) <= cfg.window
        if verdict.is_ok:
            assert train_loss == train_loss and val_loss == val_loss  # not NaN
            assert abs(train_loss) != float("inf") and abs(val_loss) != float("inf")
            assert state.window[-1] == val_loss and state.consecutive == 0
        else:
            assert state.window == before.window  # anomalies and panics append nothing


user_names = st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda n: n != "noop"),
                      unique=True, max_size=4)


@given(user_names, st.sampled_from(["cnn", "transformer", "mlp"]))
def test_user_blueprints_lead_the_rotation_and_every_built_in_stays_once(users, topology):
    """docs/lifecycle.md §6.6: the rotation is the user blueprints, then the built-ins they did not name."""
    built_in = DEFAULT.rotation_for(topology)
    rotation = HeuristicConfig(user_blueprints=users).rotation_for(topology)
    assert rotation[:len(users)] == tuple(users)
    assert rotation[len(users):] == tuple(n for n in built_in if n not in users)
    assert len(set(rotation)) == len(rotation)


@given(decisions(), user_names)
def test_decide_stays_sensible_with_user_names_the_catalogue_lacks(case, users):
    """A rotation led by names the view's catalogue does not hold still issues only allowed actions."""
    rules, view, hview, state, cfg = case
    cfg = attrs.evolve(cfg, user_blueprints=users)
    _, action, reason = decide(state, hview, cfg)
    assert_sensible(rules, view, hview, cfg, action, reason)


@given(st.integers(0, 4), st.one_of(st.sampled_from([-1, 0, 1]), st.just(0), st.integers(-4, 4)),
       st.sampled_from([-0.02, 0.0, -0.1]), st.one_of(st.sampled_from([-1e-3, 0.0, 1e-3]), st.floats(-0.3, 0.3)),
       st.sampled_from([0, 0, 6]))
@example(2, 0, -0.02, -1e-3, 0)  # the defaults' first hurting epoch: a rule one epoch late waited here
@example(0, -1, -0.02, -1e-3, 0)  # shrunk: blend_hurts_epochs = 0 fires at epochs_in_stage 0
def test_blend_hurts_fires_at_exactly_its_epoch(after, offset, threshold, below, min_cull_age):
    """M3 (module docstring): a BLENDING seed whose contribution is below `blend_hurts` is culled at the
    first boundary with `epochs_in_stage >= blend_hurts_epochs` (when CULL is allowed), not one later;
    epochs and contributions are drawn at the thresholds and either side."""
    eis = max(0, after + offset)
    contribution = threshold + below
    rules = Rules.for_layout("cnn", SPECS, config=LifecycleConfig(min_cull_age=min_cull_age))
    view = one_seed_state(rules, Stage.BLENDING, eis, contribution=contribution)
    hview = decision_view(view, TrackerState(), masks(view, rules), view.epoch + 20, rules)
    cfg = attrs.evolve(DEFAULT, blend_hurts=threshold, blend_hurts_epochs=after)
    _, action, reason = decide(HeuristicState(topology="cnn"), hview, cfg)
    fires = eis >= after and contribution < threshold and hview.masks.slot[Op.CULL][0]
    assert (action == FactoredAction.cull(0)) == fires, (eis, contribution, action, reason)
    assert (reason == "blend_hurts") == fires
