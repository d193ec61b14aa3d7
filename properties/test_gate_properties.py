"""Gates are monotone in their inputs: if a gate passes, it still passes with any input moved
in the favourable direction (older, larger ratio, larger gain, larger contribution)."""

import attrs
from hypothesis import given
from hypothesis import strategies as st

from esper.core.alpha import Curve
from esper.core.config import LifecycleConfig
from esper.core.gates import g2, g3, g5
from esper.core.seed import SeedState, SlotState
from esper.core.stages import Stage

CFG = LifecycleConfig()
maybe = st.one_of(st.none(), st.floats(-1.0, 10.0))
maybe_ratio = st.one_of(st.none(), st.floats(0.0, 10.0))
PATH = {Stage.TRAINING: (Stage.GERMINATED, Stage.TRAINING),
        Stage.BLENDING: (Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING),
        Stage.PROBATIONARY: (Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY)}


def _slot(stage: Stage, eis: int, **fields) -> SlotState:
    alpha = 1.0 if stage == Stage.PROBATIONARY else fields.pop("alpha", 0.0)
    tempo = fields.pop("tempo", 5)
    ramp = {Stage.TRAINING: 0, Stage.PROBATIONARY: tempo}.get(stage, fields.pop("ramp_step", 1))
    seed = SeedState(seed_id="s#0", slot_id="s", blueprint="norm", blueprint_index=1, dim=8,
                     n_params=17, tempo=tempo, ramp_step=ramp, curve=Curve.SIGMOID, stage=stage,
                     previous_stage=Stage.TRAINING, epochs_in_stage=eis, age=eis + 10,
                     germinated_epoch=0, acc_at_germination=0.0, acc_at_stage_start=0.0,
                     alpha=alpha, history=tuple((s, 0) for s in PATH[stage]), **fields)
    return SlotState(slot_id="s", index=0, dim=8, seed=seed)


@given(st.integers(0, 8), st.integers(0, 3), maybe_ratio, st.floats(0, 5), maybe, st.floats(0, 1))
def test_g2_monotone(eis, d_eis, ratio, d_ratio, gain, d_gain):
    base = _slot(Stage.TRAINING, eis, grad_ratio=ratio, shadow_gain=gain)
    better = _slot(Stage.TRAINING, eis + d_eis,
                   grad_ratio=None if ratio is None else ratio + d_ratio,
                   shadow_gain=None if gain is None else gain + d_gain)
    if g2(base, CFG).passed:
        assert g2(better, CFG).passed
    if ratio is None or gain is None:
        assert not g2(base, CFG).passed


@given(st.integers(0, 8), st.integers(0, 3), st.integers(1, 8), st.floats(0.001, 1.0))
def test_g3_monotone_in_age_and_alpha(eis, d_eis, tempo, alpha):
    base = _slot(Stage.BLENDING, eis, tempo=tempo, ramp_step=tempo, alpha=alpha)
    older = attrs.evolve(base, seed=attrs.evolve(base.seed, epochs_in_stage=eis + d_eis,
                                                  age=base.seed.age + d_eis, alpha=1.0))
    if g3(base, CFG).passed:
        assert g3(older, CFG).passed


@given(st.integers(0, 8), st.integers(0, 3), maybe, st.floats(0, 1), st.booleans())
def test_g5_monotone(eis, d_eis, contribution, d_contribution, finite):
    base = _slot(Stage.PROBATIONARY, eis, contribution=contribution, seed_finite=finite)
    better = _slot(Stage.PROBATIONARY, eis + d_eis, seed_finite=True,
                   contribution=None if contribution is None else contribution + d_contribution)
    if g5(base, CFG).passed:
        assert g5(better, CFG).passed
    if contribution is None:
        assert g5(base, CFG).reason in ("missing:contribution", "too_young")
