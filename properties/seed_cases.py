"""A lifecycle state of one cnn slot holding one live seed, built directly (no episode needed to reach
the stage), for properties that probe one stage's rule at its thresholds."""

import attrs

from esper.core.alpha import Curve, ramp_alpha
from esper.core.config import Rules
from esper.core.lifecycle import initial_state
from esper.core.seed import LifecycleState, SeedState, SlotSpec
from esper.core.stages import Stage

SPECS = (SlotSpec("s0", 0, 0, 8, (8, 4, 4)),)
TEMPO = 3
_PATHS = {Stage.BLENDING: ((Stage.GERMINATED, 0), (Stage.TRAINING, 1), (Stage.BLENDING, 4)),
          Stage.PROBATIONARY: ((Stage.GERMINATED, 0), (Stage.TRAINING, 1), (Stage.BLENDING, 4),
                               (Stage.PROBATIONARY, 7))}


def one_seed_state(rules: Rules, stage: Stage, epochs_in_stage: int, **fields: object) -> LifecycleState:
    """SPECS's slot with a `norm` seed that entered `stage` (BLENDING or PROBATIONARY) `epochs_in_stage`
    epochs ago (BLENDING at ramp step 1); `fields` override any SeedState field."""
    entered = _PATHS[stage][-1][1]
    ramp_step = 1 if stage == Stage.BLENDING else TEMPO
    spec = rules.catalogue.spec("norm")
    values: dict = dict(
        seed_id="s0#0", slot_id="s0", blueprint="norm", blueprint_index=spec.index, dim=SPECS[0].dim,
        n_params=spec.params(SPECS[0].dim), tempo=TEMPO, ramp_step=ramp_step, curve=Curve.LINEAR, stage=stage,
        previous_stage=_PATHS[stage][-2][0], epochs_in_stage=epochs_in_stage, age=entered + epochs_in_stage,
        germinated_epoch=0, acc_at_germination=0.5, acc_at_stage_start=0.5,
        alpha=ramp_alpha(Curve.LINEAR, TEMPO, ramp_step), history=_PATHS[stage])
    seed = SeedState(**{**values, **fields})
    state = initial_state("cnn", SPECS, {"s0"})
    slot = attrs.evolve(state.slots[0], seed=seed, germinations=1)
    return attrs.evolve(state, slots=(slot,), epoch=entered + epochs_in_stage)
