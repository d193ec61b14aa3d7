"""The signal tracker (docs/runtime.md §1.2, §10 item 4): steps 1–7 on crafted loss and accuracy
sequences, `structure_changed`, and the JSON round trips."""

import json
import math

import attrs
import pytest

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.events import HostDestabilised, HostStabilised
from esper.core.signals import EpochSignals, TrackerConfig, TrackerState, structure_changed, update

# The step tests follow docs/runtime.md §1.2 as written (progress against the previous epoch);
# the calibrated default, progress against the best loss so far, has its own tests below.
CFG = TrackerConfig(progress_reference="previous")


def fold(losses, accs=None, *, tracker=None, cfg=CFG, start=1):
    """Fold (loss, acc) per epoch from epoch `start`; returns the states and events per epoch."""
    tracker = tracker or TrackerState()
    accs = accs if accs is not None else [0.5] * len(losses)
    states, events = [], []
    for i, (loss, acc) in enumerate(zip(losses, accs, strict=True)):
        m = EpochSignals(epoch=start + i, val_loss=loss, val_acc=acc, train_loss=loss, train_acc=acc)
        tracker, evs = update(tracker, m, cfg)
        states.append(tracker)
        events.append(evs)
    return states, events


def test_defaults_match_the_spec():
    got = (CFG.history_window, CFG.plateau_min_gain, CFG.stabilisation_rel, CFG.stabilisation_ema,
           CFG.stabilisation_epochs, CFG.spike_factor, CFG.unlatch_rel)
    assert got == (10, 0.005, 0.03, 0.5, 3, 1.5, 0.06)
    assert TrackerConfig.for_topology("cnn").plateau_min_gain == 0.005
    assert TrackerConfig.for_topology("transformer").plateau_min_gain == 0.002
    with pytest.raises(ConfigError, match="unknown topology"):
        TrackerConfig.for_topology("rnn")
    with pytest.raises(ConfigError, match="unlatch_rel"):
        TrackerConfig(unlatch_rel=0.01)


def test_first_epoch_has_no_rel_and_ema_starts_at_the_first_defined_rel():
    states, _ = fold([2.0, 1.0, 0.9])
    assert states[0].rel_ema is None and states[0].stable_count == 0 and states[0].prev_loss == 2.0
    assert states[1].rel_ema == pytest.approx(0.5)  # rel = (2 − 1) / 2 initialises the EMA
    assert states[2].rel_ema == pytest.approx(0.5 * 0.5 + 0.5 * 0.1)


def test_latch_earliest_at_epoch_4_after_exactly_3_stable_epochs():
    states, events = fold([1.0] * 6)
    assert [s.stable_count for s in states] == [0, 1, 2, 3, 4, 5]
    assert [s.latched for s in states] == [False, False, False, True, True, True]
    assert events[3] == (HostStabilised(epoch=4, val_loss=1.0, stable_count=3),)
    assert all(e == () for i, e in enumerate(events) if i != 3)  # emitted once


def test_improving_host_does_not_latch_until_its_ema_falls_below_3_percent():
    # 10 % better each epoch, then flat: the EMA halves each flat epoch (0.1 → 0.05 → 0.025).
    states, events = fold([1.0, 0.9, 0.81, 0.729, 0.729, 0.729, 0.729, 0.729])
    assert [s.stable_count for s in states] == [0, 0, 0, 0, 0, 1, 2, 3]
    assert states[-1].latched and not states[-2].latched
    assert isinstance(events[-1][0], HostStabilised)


def test_a_spike_is_never_stable():
    # A loss 1.5× the previous one has a very negative rel (EMA < 3 %) yet is not stable.
    states, _ = fold([1.0, 1.0, 1.0, 1.5])
    assert states[2].stable_count == 2
    assert states[3].rel_ema < 0.03 and states[3].stable_count == 0 and not states[3].latched
    states, _ = fold([1.0, 1.0, 1.0, 1.49])
    assert states[3].stable_count == 3 and states[3].latched


def test_unlatch_needs_ema_of_6_percent_hysteresis_band_keeps_the_latch():
    latched, _ = fold([1.0] * 4)
    assert latched[-1].latched
    # rel = 0.08 → EMA 0.04: in [0.03, 0.06): not stable (count reset) but still latched.
    band, events = fold([0.92], tracker=latched[-1], start=5)
    assert band[0].rel_ema == pytest.approx(0.04)
    assert band[0].latched and band[0].stable_count == 0 and events == [()]
    # rel = 0.15 → EMA ≈ 0.095 ≥ 0.06: unlatch with reason learning_resumed.
    resumed, events = fold([0.782], tracker=band[0], start=6)
    assert not resumed[0].latched and resumed[0].stable_count == 0
    assert events == [(HostDestabilised(epoch=6, reason="learning_resumed"),)]


def test_plateau_is_counted_against_a_reference_point():
    # Gains of 0.003 per epoch never reach 0.005 in one step, but do cumulatively.
    accs = [0.500, 0.503, 0.506, 0.507, 0.508, 0.512, 0.512]
    states, _ = fold([1.0] * len(accs), accs)
    assert [s.ref_acc for s in states] == [0.500, 0.500, 0.506, 0.506, 0.506, 0.512, 0.512]
    assert [s.plateau_epochs for s in states] == [0, 1, 0, 1, 2, 0, 1]


def test_plateau_gain_is_per_preset():
    accs = [0.5, 0.503, 0.503]
    lm, _ = fold([1.0] * 3, accs, cfg=TrackerConfig.for_topology("transformer"))
    images, _ = fold([1.0] * 3, accs, cfg=TrackerConfig.for_topology("cnn"))
    assert [s.plateau_epochs for s in lm] == [0, 0, 1]
    assert [s.plateau_epochs for s in images] == [0, 1, 2]


def test_best_values_are_all_time_while_histories_keep_the_window():
    losses = [0.5] + [1.0 + i / 100 for i in range(14)]
    accs = [0.9] + [0.1] * 14
    states, _ = fold(losses, accs)
    last = states[-1]
    assert last.best_val_loss == 0.5 and last.best_val_acc == 0.9  # epoch 1 left the window long ago
    assert len(last.loss_history) == 10 and last.loss_history[-1] == losses[-1]
    assert last.acc_history == tuple(accs[-10:])


def test_structure_changed_clears_stability_and_plateau_and_emits():
    states, _ = fold([1.0] * 6, [0.5] * 6)
    before = states[-1]
    assert before.latched and before.plateau_epochs == 5
    for kind in ("fossilized", "rollback"):
        after, events = structure_changed(before, kind)
        assert events == (HostDestabilised(epoch=6, reason="structure_changed"),)
        assert (after.latched, after.stable_count, after.rel_ema, after.prev_loss, after.ref_acc,
                after.plateau_epochs) == (False, 0, None, None, None, 0)
        assert (after.best_val_loss, after.loss_history) == (before.best_val_loss, before.loss_history)
    _, events = structure_changed(before, "rollback", epoch=8)
    assert events[0].epoch == 8
    # A changed network must stabilise again: rel is undefined right after, so epoch 4 after.
    after, _ = structure_changed(before, "fossilized")
    again, events = fold([1.0] * 4, tracker=after, start=7)
    assert [s.latched for s in again] == [False, False, False, True]
    assert again[0].rel_ema is None and again[0].ref_acc == 0.5 and again[0].plateau_epochs == 0
    with pytest.raises(ValueError, match="structure change"):
        structure_changed(before, "germinated")


def test_bad_inputs_raise_and_inputs_are_not_mutated():
    tracker, _ = fold([1.0, 0.9])
    state = tracker[-1]
    snapshot = attrs.evolve(state)
    with pytest.raises(ValueError, match="finite"):
        update(state, EpochSignals(epoch=3, val_loss=math.nan, val_acc=0.5, train_loss=1, train_acc=0), CFG)
    with pytest.raises(ValueError, match="not after"):
        update(state, EpochSignals(epoch=2, val_loss=1.0, val_acc=0.5, train_loss=1, train_acc=0), CFG)
    # Skipping an epoch (a governor PANIC epoch is not folded) is allowed.
    update(state, EpochSignals(epoch=5, val_loss=1.0, val_acc=0.5, train_loss=1, train_acc=0), CFG)
    assert state == snapshot


def test_round_trips_through_json():
    states, _ = fold([1.0, 0.95, 0.94, 0.94], [0.4, 0.41, 0.45, 0.45])
    for value in (*states, TrackerState(), CFG, TrackerConfig.for_topology("transformer"),
                  EpochSignals(epoch=3, val_loss=1.0, val_acc=0.5, train_loss=1.1, train_acc=0.4)):
        data = json.loads(json.dumps(codec.encode(value)))
        assert codec.decode(type(value), data) == value


def test_best_reference_keeps_a_recovery_after_a_spike_from_looking_like_learning():
    best = TrackerConfig()
    assert best.progress_reference == "best"
    losses = [2.0, 1.2, 1.19, 1.19, 1.18, 1.6, 1.18, 1.18, 1.18]
    with_best, _ = fold(losses, cfg=best)
    with_previous, _ = fold(losses, cfg=CFG)
    # The recovery from 1.6 to 1.18 is a 26 % "improvement" against the previous epoch (the count
    # restarts), but no progress against the best loss, so the stable count keeps growing.
    assert with_previous[6].stable_count == 0
    assert with_best[6].stable_count >= 1 and with_best[-1].latched


def test_progress_reference_is_validated():
    with pytest.raises(ConfigError, match="progress_reference"):
        TrackerConfig(progress_reference="median")
