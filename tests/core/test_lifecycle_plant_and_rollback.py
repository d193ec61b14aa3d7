"""plant_fossil (a static baseline's fixed seed), rollback's refusals, cooldown_left outside cooling and the reason
of every stage change: the examples that pin what `make mutate` found unchecked in esper/core/lifecycle.py."""

import attrs
import pytest
from lifecycle_helpers import boundary, fresh, germinate_at, make_rules, seed_state, wait_until

from esper.core.actions import FactoredAction
from esper.core.catalogue import ValidationTable, catalogue_for
from esper.core.errors import LifecycleError
from esper.core.events import SeedGerminated, StageChanged
from esper.core.lifecycle import cooldown_left, plant_fossil, rollback
from esper.core.measurements import EpochMeasurements
from esper.core.stages import COOLING, Stage


def test_a_planted_fossil_passed_every_stage_at_this_boundary_with_the_default_tempo() -> None:
    rules = make_rules(default_tempo=8)
    state = wait_until(fresh(), rules, 4)
    planted, events = plant_fossil(state, "mid", "conv_light", rules)
    seed = planted.slots[1].seed
    assert (seed.stage, seed.previous_stage, seed.alpha) == (Stage.FOSSILIZED, Stage.PROBATIONARY, 1.0)
    assert seed.tempo == seed.ramp_step == 8  # the config's default tempo, its ramp complete
    assert seed.history == tuple((stage, 4) for stage in (
        Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED))
    assert [e.slot for e in events if isinstance(e, SeedGerminated)] == ["mid"]
    assert planted.slots[0] == state.slots[0] and planted.slots[2] == state.slots[2]


def test_a_fossil_that_fails_its_probe_is_not_planted() -> None:
    rules = make_rules()
    rows = [list(row) for row in rules.validation.entries]
    rows[1][catalogue_for("cnn").spec("conv_light").index] = False
    failing = attrs.evolve(rules, validation=ValidationTable(tuple(tuple(row) for row in rows)))
    with pytest.raises(LifecycleError, match=r"^cannot plant conv_light in mid: g1:probe_failed$"):
        plant_fossil(fresh(), "mid", "conv_light", failing)


def test_rollback_names_the_epoch_it_expected() -> None:
    rules = make_rules()
    state = wait_until(fresh(), rules, 3)
    with pytest.raises(LifecycleError, match=r"^rollback measurements for epoch 3, expected 4$"):
        rollback(fresh(), state, EpochMeasurements(epoch=3, val_acc=0.1), rules)


def test_rollback_refuses_another_layout_and_a_later_snapshot() -> None:
    rules = make_rules()
    state = wait_until(fresh(), rules, 3)
    other_layout = attrs.evolve(state, slots=state.slots[:2])
    with pytest.raises(LifecycleError, match=r"^snapshot and state have different slot layouts$"):
        rollback(other_layout, state, EpochMeasurements(epoch=4, val_acc=0.1), rules)
    later = wait_until(state, rules, 5)
    with pytest.raises(LifecycleError, match=r"^snapshot epoch 5 is after state epoch 3$"):
        rollback(later, state, EpochMeasurements(epoch=4, val_acc=0.1), rules)


@pytest.mark.parametrize("stage", [s for s in Stage if s not in COOLING and s != Stage.DORMANT])
def test_no_cooldown_is_left_outside_the_cooling_stages(stage: Stage) -> None:
    rules = make_rules()
    assert cooldown_left(seed_state(stage), rules.config) == 0
    assert cooldown_left(None, rules.config) == 0


def test_every_stage_change_of_a_life_names_its_reason() -> None:
    """A seed germinated at 1 (tempo 3), driven healthily, culled by the controller in PROBATIONARY, then cooled."""
    rules = make_rules()
    state, events = germinate_at(rules, 1, tempo=3)
    changes = [(e.to_stage, e.reason, e.epoch) for e in events if isinstance(e, StageChanged)]
    while state.slots[0].stage != Stage.DORMANT and state.epoch < 40:
        action = FactoredAction.cull(0) if state.slots[0].stage == Stage.PROBATIONARY else FactoredAction.wait()
        state, events = boundary(state, rules, action)
        changes += [(e.to_stage, e.reason, e.epoch) for e in events if isinstance(e, StageChanged)]
    assert changes == [
        (Stage.GERMINATED, "germinate", 1), (Stage.TRAINING, "G1", 1), (Stage.BLENDING, "G2", 4),
        (Stage.PROBATIONARY, "G3", 7), (Stage.CULLED, "action", 8), (Stage.EMBARGOED, "dwell", 9),
        (Stage.RESETTING, "dwell", 14), (Stage.DORMANT, "dwell", 15),
    ]
