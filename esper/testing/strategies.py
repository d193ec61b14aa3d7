"""Strategies generating the core's values: layouts, configs, measurements, actions and
lifecycle states reachable from DORMANT by legal steps.

Measurement values are drawn with extra weight on gate thresholds, so seeds regularly
pass G2 and G5 and random runs reach BLENDING, PROBATIONARY, FOSSILIZED and every cull path.
"""

from collections.abc import Sequence

from hypothesis import strategies as st

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.alpha import Curve
from esper.core.catalogue import Catalogue, ValidationTable, catalogue_for
from esper.core.config import LifecycleConfig, Rules
from esper.core.legality import masks
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.seed import LifecycleState, SlotSpec

CNN_DIMS = (1, 3, 8, 16, 32, 64)
TRANSFORMER_DIMS = (6, 8, 64, 128)  # 6 fails attention's D % 4 == 0 constraint


@st.composite
def slot_layouts(draw: st.DrawFn, topology: str = "cnn", max_slots: int = 4) -> tuple[SlotSpec, ...]:
    """1…max_slots slots in host order, with dims the topology's blueprints may or may not fit."""
    dims = draw(st.lists(st.sampled_from(CNN_DIMS if topology == "cnn" else TRANSFORMER_DIMS),
                         min_size=1, max_size=max_slots))
    return tuple(SlotSpec(f"s{i}", i, i, d, (d, 4, 4) if topology == "cnn" else (8, d))
                 for i, d in enumerate(dims))


@st.composite
def lifecycle_configs(draw: st.DrawFn) -> LifecycleConfig:
    """Configs with short timings (so random runs reach every stage) and every knob varied."""
    tempos = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True)))
    min_training = draw(st.integers(1, 4))
    min_probation = draw(st.integers(0, 2))
    return LifecycleConfig(
        min_training_epochs=min_training,
        max_training_epochs=min_training + draw(st.integers(0, 4)),
        tempo_choices=tempos,
        default_tempo=draw(st.sampled_from(tempos)),
        blend_curve=draw(st.sampled_from(list(Curve))),
        min_blending_epochs=draw(st.integers(0, 4)),
        min_probation_epochs=min_probation,
        max_probation_epochs=max(1, min_probation) + draw(st.integers(0, 3)),
        cull_dwell=draw(st.integers(1, 2)),
        embargo_dwell=draw(st.integers(1, 5)),
        reset_dwell=draw(st.integers(1, 2)),
        min_cull_age=draw(st.integers(0, 4)),
        max_seeds=draw(st.sampled_from([0, 0, 1, 3])),
        max_seed_params=draw(st.sampled_from([0, 0, 200, 5000])),
        strict=draw(st.booleans()),
    )


@st.composite
def validation_tables(draw: st.DrawFn, catalogue: Catalogue, dims: Sequence[int]) -> ValidationTable:
    """Mostly the formula table; sometimes a fitting pair lost its entry or failed its probe
    (so G1's failure path, E3, is reachable)."""
    base = ValidationTable.from_constraints(catalogue, dims)
    if draw(st.booleans()):
        return base
    rows = tuple(
        tuple(entry if entry is None else draw(st.sampled_from([True, True, True, False, None]))
              for entry in row)
        for row in base.entries
    )
    return ValidationTable(rows)


@st.composite
def rules_and_state(draw: st.DrawFn, topology: str | None = None) -> tuple[Rules, LifecycleState]:
    """A topology, a slot layout with some slots enabled, rules for it, and the initial state."""
    topology = topology or draw(st.sampled_from(["cnn", "transformer"]))
    specs = draw(slot_layouts(topology))
    catalogue = catalogue_for(topology)
    dims = [s.dim for s in specs]
    rules = Rules(draw(lifecycle_configs()), catalogue, draw(validation_tables(catalogue, dims)))
    enabled = draw(st.sets(st.sampled_from([s.name for s in specs]), min_size=1))
    return rules, lifecycle.initial_state(topology, specs, enabled)


def _gate_value(thresholds: Sequence[float], low: float, high: float) -> st.SearchStrategy:
    near = st.sampled_from([*thresholds, *(t - 1e-3 for t in thresholds), *(t + 1e-3 for t in thresholds)])
    return st.one_of(st.none(), near, st.floats(low, high, allow_nan=False))


@st.composite
def slot_measurements(draw: st.DrawFn, slot_id: str) -> SlotMeasurement:
    """Half the time a healthy seed (every gate input measured and passing), else anything."""
    if draw(st.booleans()):
        return SlotMeasurement(
            slot_id=slot_id,
            contribution=draw(st.floats(0.01, 0.3)),
            shadow_gain=draw(st.floats(0.005, 0.3)),
            grad_ratio=draw(st.floats(0.05, 10.0)),
        )
    return SlotMeasurement(
        slot_id=slot_id,
        contribution=draw(_gate_value([0.0, 0.01, 0.05], -0.2, 0.3)),
        shadow_gain=draw(_gate_value([0.0, 0.005, 0.05], -0.2, 0.3)),
        grad_ratio=draw(st.one_of(st.none(), st.sampled_from([0.0, 0.049, 0.05, 0.5, 10.0]),
                                  st.floats(0.0, 10.0))),
        seed_finite=draw(st.sampled_from([True] * 12 + [False])),
    )


@st.composite
def epoch_measurements(draw: st.DrawFn, state: LifecycleState) -> EpochMeasurements:
    """Measurements for the boundary after `state` (epoch + 1); any slot may be unreported."""
    reported = [s.slot_id for s in state.slots if draw(st.booleans()) or s.seed is not None]
    return EpochMeasurements(
        epoch=state.epoch + 1,
        val_acc=draw(st.floats(0.0, 1.0)),
        slots=tuple(draw(slot_measurements(slot_id)) for slot_id in reported),
    )


def any_actions(rules: Rules, n_slots: int) -> st.SearchStrategy[FactoredAction]:
    """Any action whose heads are in range (plus one past the end), legal or not."""
    n_bp, n_tempo = len(rules.catalogue.germinable), len(rules.config.tempo_choices)
    return st.builds(FactoredAction, st.sampled_from(list(Op)), st.integers(0, n_slots),
                     st.integers(0, n_bp), st.integers(0, n_tempo))


def legal_actions(view: LifecycleState, rules: Rules) -> st.SearchStrategy[FactoredAction]:
    """An action the masks allow on this view: WAIT, FOSSILIZE when legal, or any other.

    Weighted so that random episodes both act often and let seeds live long enough to finish.
    """
    allowed = masks(view, rules).allowed_actions()
    fossilize = [a for a in allowed if a.op == Op.FOSSILIZE]
    active = [a for a in allowed if a.op != Op.WAIT]
    choices = [st.just(FactoredAction.wait())]
    choices += [st.sampled_from(fossilize)] if fossilize else []
    choices += [st.sampled_from(active)] if active else []
    return st.one_of(choices)


@st.composite
def reachable_states(draw: st.DrawFn, max_steps: int = 40,
                     topology: str | None = None) -> tuple[Rules, LifecycleState]:
    """A state reached from DORMANT by up to `max_steps` legal boundaries."""
    rules, state = draw(rules_and_state(topology))
    for _ in range(draw(st.integers(0, max_steps))):
        view = lifecycle.record(state, draw(epoch_measurements(state)))
        state, _ = lifecycle.apply_action(view, draw(legal_actions(view, rules)), rules)
    return rules, state


@st.composite
def reachable_views(draw: st.DrawFn, max_steps: int = 40,
                    topology: str | None = None) -> tuple[Rules, LifecycleState]:
    """A recorded view (what masks and controllers see) of a reachable state."""
    rules, state = draw(reachable_states(max_steps, topology))
    return rules, lifecycle.record(state, draw(epoch_measurements(state)))
