"""docs/lifecycle.md §1.4's PROBATIONARY row at its thresholds: at a boundary a PROBATIONARY seed is
culled as nonfinite, else for `contribution ≤ 0` (when measured), else on `epochs_in_stage ≥
max_probation_epochs`, else it stays (the controller's WAIT changes nothing).

The random lifecycle machine reaches PROBATIONARY rarely and then seldom meets a contribution of exactly
0, so a cull on `< 0` instead of `≤ 0` passed it. Here every example starts in PROBATIONARY and the
contributions are drawn mostly at the threshold: ±0.0, the smallest subnormals either side, ±1e-3.
"""

import math

from hypothesis import example, given
from hypothesis import strategies as st
from seed_cases import SPECS, one_seed_state

from esper.core import lifecycle
from esper.core.actions import FactoredAction
from esper.core.config import LifecycleConfig, Rules
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.stages import Stage
from esper.testing import strategies as es

AT_ZERO = (0.0, -0.0, math.ulp(0.0), -math.ulp(0.0), 1e-3, -1e-3)
contributions = st.one_of(st.sampled_from(AT_ZERO), st.sampled_from(AT_ZERO), st.none(),
                          st.floats(-0.2, 0.3, allow_nan=False))


def _expected(contribution: float | None, finite: bool, eis_after: int, cfg: LifecycleConfig) -> str | None:
    """The cull reason the PROBATIONARY row gives, or None when the seed stays."""
    if not finite:
        return "nonfinite"
    if contribution is not None and contribution <= 0.0:
        return "negative_contribution"
    if eis_after >= cfg.max_probation_epochs:
        return "probation_timeout"
    return None


@given(es.lifecycle_configs(), st.integers(0, 7), contributions, st.sampled_from([True] * 5 + [False]))
@example(LifecycleConfig(max_probation_epochs=5), 0, 0.0, True)  # the `< 0` mutant kept this seed
def test_probation_culls_exactly_at_a_contribution_of_zero(config, eis, contribution, finite):
    rules = Rules.for_layout("cnn", SPECS, config=config)
    eis %= config.max_probation_epochs  # a PROBATIONARY seed has epochs_in_stage < max_probation_epochs
    state = one_seed_state(rules, Stage.PROBATIONARY, eis, contribution=0.05)
    m = EpochMeasurements(epoch=state.epoch + 1, val_acc=0.6, slots=(
        SlotMeasurement(slot_id="s0", contribution=contribution, shadow_gain=0.01, grad_ratio=1.0,
                        seed_finite=finite),))
    new, _ = lifecycle.step(state, FactoredAction.wait(), m, rules)
    seed = new.slots[0].seed
    reason = _expected(contribution, finite, eis + 1, config)
    if reason is None:
        assert seed.stage == Stage.PROBATIONARY and seed.epochs_in_stage == eis + 1
    else:
        assert (seed.stage, seed.cull_reason) == (Stage.CULLED, reason), (contribution, finite, eis)
