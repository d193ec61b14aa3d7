"""Example tests of docs/rl.md §2: the feature table, entries read from real lifecycle views, the running
normaliser's checkpoint form, and compiled (fullgraph) == eager for encode_observation and merge."""

import io
import math

import pytest
import torch
from lifecycle_helpers import CIFAR10_HOST_PARAMS, drive_until, fresh, germinate_at, make_rules, measure, wait_until

from esper.core import codec
from esper.core.actions import FactoredAction
from esper.core.catalogue import catalogue_for
from esper.core.lifecycle import apply_action, plant_fossil, record, rollback
from esper.core.measurements import EpochMeasurements
from esper.core.observation import (
    FEATURES,
    RUN_FEATURES,
    SLOT_FEATURES,
    ObsContext,
    encode_observation,
    feature_names,
    obs_binary,
    obs_bounds,
    obs_dim,
    pack_observation,
    slot_offset,
)
from esper.core.running_stats import RunningStats, merge, normalize
from esper.core.signals import TrackerState
from esper.core.stages import Stage

K = len(catalogue_for("cnn").germinable)  # 6
S = 3
E = 25
L0 = math.log(10)
NAMES = feature_names(S, K)


def ctx(**overrides) -> ObsContext:
    values = {"epochs": E, "random_guess_loss": L0, "train_loss": 1.0, "train_acc": 0.55, "val_loss": 1.2,
              "host_params": CIFAR10_HOST_PARAMS, "max_rollbacks": 3}
    return ObsContext(**{**values, **overrides})


def encode(view, rules, tracker=None, **overrides) -> dict[str, float]:
    obs = encode_observation(pack_observation(view, tracker or TrackerState(), ctx(**overrides), rules), K)
    assert obs.shape == (obs_dim(S, K),)
    return dict(zip(NAMES, obs.tolist(), strict=True))


def stage_of(o: dict[str, float], slot: int) -> str:
    hot = [n.rsplit(".", 1)[1] for n, v in o.items() if n.startswith(f"slot{slot}.stage.") and v == 1.0]
    assert len(hot) == 1, hot
    return hot[0]


def blueprint_of(o: dict[str, float], slot: int) -> list[int]:
    return [int(n.rsplit(".", 1)[1]) for n, v in o.items() if n.startswith(f"slot{slot}.blueprint.") and v == 1.0]


# --- the table ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_slots", "n_bp", "dim"), [(3, 6, 87), (3, 4, 81), (1, 1, 34), (4, 6, 111)])
def test_dimension_matches_the_spec_examples(n_slots: int, n_bp: int, dim: int) -> None:
    assert obs_dim(n_slots, n_bp) == dim
    assert len(feature_names(n_slots, n_bp)) == dim == obs_binary(n_slots, n_bp).numel()
    assert slot_offset(n_slots, n_bp) == dim  # one past the last block


def test_table_is_contiguous_with_unique_names() -> None:
    assert [f.offset for f in RUN_FEATURES] == list(range(15))
    assert [(f.name, f.offset) for f in SLOT_FEATURES][:3] == [("enabled", 0), ("stage", 1), ("alpha", 8)]
    assert SLOT_FEATURES[-1].offset == 18 and SLOT_FEATURES[-1].name == "blueprint"
    assert len({(f.block, f.name) for f in FEATURES}) == len(FEATURES)
    assert len(set(NAMES)) == len(NAMES)
    assert NAMES[slot_offset(1, K) + 8] == "slot1.alpha"


def test_binary_mask_marks_exactly_the_flags_and_one_hots() -> None:
    binary = obs_binary(S, K).tolist()
    flags = ("rolled_back_now", ".enabled", ".contribution_measured", ".stage.", ".blueprint.")
    for name, is_binary in zip(NAMES, binary, strict=True):
        assert is_binary == any(f in name for f in flags), name
    assert sum(binary) == 1 + S * (1 + 7 + 1 + K)
    lo, hi = obs_bounds(S, K)
    assert lo[NAMES.index("val_acc_delta")] == -1.0 and hi[NAMES.index("slot2.grad_ratio")] == 2.0


# --- entries on real lifecycle views ---------------------------------------------------------------


def test_blending_seed_entries() -> None:
    rules = make_rules()
    state, _ = germinate_at(rules, 2, slot=0, blueprint=1, tempo=3)  # attention, ramp of 3
    state = drive_until(state, rules, 0, Stage.BLENDING)
    view = record(state, measure(state, val_acc=0.6))
    seed = view.slots[0].seed
    o = encode(view, rules)
    assert stage_of(o, 0) == "BLENDING" and stage_of(o, 1) == stage_of(o, 2) == "DORMANT"
    assert o["epoch_frac"] == pytest.approx(view.epoch / E)
    assert o["slot0.alpha"] == pytest.approx(seed.alpha) and 0 < seed.alpha < 1
    assert blueprint_of(o, 0) == [1] and blueprint_of(o, 1) == blueprint_of(o, 2) == []
    assert o["slot0.tempo"] == pytest.approx(3 / 8)
    assert o["slot0.contribution"] == pytest.approx(10 * 0.02) and o["slot0.contribution_measured"] == 1.0
    assert o["slot0.epochs_in_stage"] == pytest.approx(seed.epochs_in_stage / 10)
    assert o["slot0.seed_age"] == pytest.approx(seed.age / E)
    assert o["slot0.stage_gain"] == pytest.approx(10 * (0.6 - seed.acc_at_stage_start))
    assert o["slot0.grad_ratio"] == pytest.approx(1.0)
    share = math.log1p(seed.n_params / CIFAR10_HOST_PARAMS)
    assert o["slot0.param_share"] == pytest.approx(share) and o["growth"] == pytest.approx(share)
    assert o["live_frac"] == pytest.approx(1 / 3) and o["fossil_frac"] == 0.0
    assert o["budget_left"] == 1.0  # max_seeds = 0: unlimited
    assert o["slot1.enabled"] == 1.0 and o["slot1.alpha"] == o["slot1.contribution_measured"] == 0.0


def test_cooldown_entries_count_down_to_dormant() -> None:
    rules = make_rules(max_seeds=4)
    state, _ = germinate_at(rules, 1, slot=2, blueprint=0)
    state = wait_until(state, rules, 4)  # age 3 = min_cull_age
    state, _ = apply_action(record(state, measure(state)), FactoredAction.cull(2), rules)
    seen = []
    for _ in range(8):
        view = record(state, measure(state))
        o = encode(view, rules)
        if view.slots[2].seed is None:
            break
        assert stage_of(o, 2) == "COOLDOWN" and blueprint_of(o, 2) == [0]
        assert o["slot2.param_share"] == o["growth"] == o["live_frac"] == 0.0
        assert o["slot2.contribution_measured"] == 0.0 and o["budget_left"] == pytest.approx(0.75)
        seen.append(o["slot2.cooldown_left"])
        state, _ = apply_action(view, FactoredAction.wait(), rules)
    # 0 in the last RESETTING view: `advance` of that very boundary makes the slot DORMANT.
    assert seen == pytest.approx([6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0.0])
    assert stage_of(o, 2) == "DORMANT" and o["slot2.cooldown_left"] == 0.0 and blueprint_of(o, 2) == []


def test_fossil_counts_in_growth_and_fossil_frac() -> None:
    rules = make_rules(max_seeds=2)
    state, _ = plant_fossil(fresh(), "mid", "conv_light", rules)
    view = record(state, measure(state, val_acc=0.4))
    o = encode(view, rules)
    fossil = view.slots[1].seed
    assert stage_of(o, 1) == "FOSSILIZED" and o["slot1.alpha"] == 1.0 and blueprint_of(o, 1) == [4]
    assert o["growth"] == pytest.approx(math.log1p(fossil.n_params / CIFAR10_HOST_PARAMS))
    assert o["fossil_frac"] == pytest.approx(1 / 3) and o["live_frac"] == 0.0 and o["budget_left"] == 0.5


def test_disabled_slot_has_a_zero_block() -> None:
    rules = make_rules()
    view = record(fresh({"early", "late"}), EpochMeasurements(epoch=1, val_acc=0.1))
    obs = encode_observation(pack_observation(view, TrackerState(), ctx(), rules), K)
    block = obs[slot_offset(1, K):slot_offset(2, K)]
    assert torch.equal(block, torch.zeros_like(block))
    o = dict(zip(NAMES, obs.tolist(), strict=True))
    assert o["slot0.enabled"] == o["slot2.enabled"] == 1.0 and stage_of(o, 2) == "DORMANT"


def test_rollback_view_reports_no_measured_contribution() -> None:
    rules = make_rules()
    state, _ = germinate_at(rules, 2, slot=0)
    state = drive_until(state, rules, 0, Stage.BLENDING)
    snapshot = state
    state, _ = apply_action(record(state, measure(state)), FactoredAction.wait(), rules)
    view, _ = rollback(snapshot, state, EpochMeasurements(epoch=state.epoch + 1, val_acc=0.3), rules)
    o = encode(view, rules, rolled_back_now=True, rollbacks=1)
    assert stage_of(o, 0) == "COOLDOWN"
    assert o["slot0.contribution"] == o["slot0.contribution_measured"] == o["slot0.grad_ratio"] == 0.0
    assert o["rolled_back_now"] == 1.0 and o["rollback_frac"] == pytest.approx(1 / 3)


# --- run-level entries and defaults ----------------------------------------------------------------


def test_run_level_losses_accuracies_and_tracker() -> None:
    rules = make_rules()
    view = record(fresh(), EpochMeasurements(epoch=1, val_acc=0.5))
    first = encode(view, rules)
    assert first["val_loss_delta"] == first["val_acc_delta"] == 0.0  # t = 0: no previous values
    assert first["train_loss"] == pytest.approx(1.0 / L0) and first["val_loss"] == pytest.approx(1.2 / L0)
    assert first["train_acc"] == pytest.approx(0.55) and first["val_acc"] == pytest.approx(0.5)
    tracker = TrackerState(epoch=1, best_val_acc=0.7, plateau_epochs=4)
    later = encode(view, rules, tracker, prev_val_loss=1.5, prev_val_acc=0.48, train_loss=1e30)
    assert later["val_loss_delta"] == pytest.approx(0.3 / L0)
    assert later["val_acc_delta"] == pytest.approx(0.2)
    assert later["best_val_acc"] == pytest.approx(0.7) and later["plateau"] == pytest.approx(0.4)
    assert later["train_loss"] == 3.0  # clamp
    clipped = encode(view, rules, TrackerState(plateau_epochs=15), prev_val_acc=0.1, prev_val_loss=100.0)
    assert clipped["plateau"] == 1.0 and clipped["val_acc_delta"] == 1.0 and clipped["val_loss_delta"] == 1.0


def test_non_finite_or_undefined_inputs_take_the_row_defaults() -> None:
    rules = make_rules()
    view = record(fresh(), EpochMeasurements(epoch=1, val_acc=0.5))
    o = encode(view, rules, train_loss=math.nan, val_loss=math.inf, train_acc=math.nan,
               prev_val_loss=math.inf, prev_val_acc=math.nan, host_params=0, max_rollbacks=0)
    assert o["train_loss"] == o["val_loss"] == 1.0
    assert o["train_acc"] == o["val_loss_delta"] == o["val_acc_delta"] == o["rollback_frac"] == 0.0
    assert o["growth"] == 0.0 and all(math.isfinite(v) for v in o.values())
    assert encode(view, rules, random_guess_loss=0.0)["train_loss"] == 1.0


def test_context_rejects_impossible_values() -> None:
    with pytest.raises(ValueError, match="epochs"):
        ctx(epochs=0)
    with pytest.raises(ValueError, match="host_params"):
        ctx(host_params=-1)


def test_pack_rejects_rules_of_another_topology() -> None:
    view = record(fresh(), EpochMeasurements(epoch=1, val_acc=0.5))
    with pytest.raises(ValueError, match="transformer"):
        pack_observation(view, TrackerState(), ctx(), make_rules(topology="transformer"))


# --- running stats -------------------------------------------------------------------------------


def test_initial_stats_normalise_as_the_identity_inside_the_clip() -> None:
    x = torch.tensor([[0.0, -1.0, 3.0, 4.9], [1.0, 0.5, -4.9, 7.0]])
    out = normalize(RunningStats.initial(4), x, torch.zeros(4, dtype=torch.bool), std_floor=0.1, clip=5.0)
    assert torch.equal(out, x.clamp(-5, 5))


def test_normalize_floors_the_std_and_passes_binary_entries() -> None:
    stats = RunningStats(mean=torch.tensor([1.0, 1.0]), var=torch.tensor([0.0, 0.0]), count=torch.tensor(3.0))
    x = torch.tensor([1.2, 0.0])
    out = normalize(stats, x, torch.tensor([False, True]), std_floor=0.1, clip=5.0)
    assert out[0].item() == pytest.approx(2.0) and out[1].item() == 0.0


def test_stats_round_trip_through_a_weights_only_checkpoint() -> None:
    stats = merge(RunningStats.initial(3), torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 0.0]]),
                  torch.tensor([True, True]))
    buffer = io.BytesIO()
    torch.save({"obs_norm": codec.encode(stats)}, buffer)
    buffer.seek(0)
    loaded = codec.decode(RunningStats, torch.load(buffer, weights_only=True)["obs_norm"])
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name))
    assert codec.encode(stats) == {"mean": [2.0, 2.0, 1.5], "var": [1.0, 0.0, 2.25], "count": 2.0}
    with pytest.raises(ValueError, match="bad record"):
        codec.decode(RunningStats, {"mean": [0.0], "var": [-1.0], "count": 1})


# --- compiled == eager -----------------------------------------------------------------------------


def test_compiled_encode_equals_eager() -> None:
    rules = make_rules()
    state, _ = germinate_at(rules, 2, slot=1, blueprint=3)
    state = drive_until(state, rules, 1, Stage.BLENDING)
    view = record(state, measure(state, val_acc=0.6))
    inputs = pack_observation(view, TrackerState(best_val_acc=0.6), ctx(prev_val_acc=0.55), rules)
    garbage = pack_observation(view, TrackerState(), ctx(train_loss=math.nan, val_loss=math.inf), rules)
    compiled = torch.compile(encode_observation, fullgraph=True)
    for x in (inputs, garbage):
        torch.testing.assert_close(compiled(x, K), encode_observation(x, K), rtol=1e-6, atol=1e-6)


def test_compiled_merge_equals_eager() -> None:
    gen = torch.Generator().manual_seed(0)
    stats = RunningStats(mean=torch.randn(5, generator=gen), var=torch.rand(5, generator=gen) + 0.1,
                         count=torch.tensor(7.0))
    x = torch.randn(6, 5, generator=gen) * 3
    valid = torch.tensor([True, False, True, True, False, True])
    compiled = torch.compile(merge, fullgraph=True)
    for s in (stats, RunningStats.initial(5)):
        got, want = compiled(s, x, valid), merge(s, x, valid)
        for name in ("mean", "var", "count"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-6, atol=1e-6)
