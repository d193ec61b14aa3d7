"""Observation contract (docs/rl.md §10 items 5 and 14): length 15 + S(18 + K), every entry inside its clamp
for NaN/Inf/huge inputs, one-hots consistent with real lifecycle views, binary entries untouched by
`normalize`, and vmap == loop for encode_observation."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from profiles import scaled

from esper.core.observation import (
    RUN_DIM,
    SLOT_SCALARS,
    STAGE_CODE,
    ObsContext,
    ObsInputs,
    encode_observation,
    feature_names,
    obs_binary,
    obs_bounds,
    obs_dim,
    pack_observation,
    slot_offset,
    stack_inputs,
)
from esper.core.running_stats import RunningStats, normalize
from esper.core.signals import TrackerState
from esper.testing.strategies import reachable_views

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)  # float64: huge values overflow float32 too
CODES = st.one_of(st.integers(-2, 9).map(float), ANY_FLOAT)


@st.composite
def obs_inputs(draw: st.DrawFn, n_slots: int, n_bp: int) -> ObsInputs:
    """Raw inputs of any float, stage and blueprint codes in and out of range (NaN/Inf included)."""
    bp_codes = st.one_of(st.integers(-1, n_bp - 1).map(float), CODES)

    def tensor(values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64).to(torch.float32)  # float32 cast: ±huge → ±inf

    return ObsInputs(
        run=tensor(draw(st.lists(ANY_FLOAT, min_size=RUN_DIM, max_size=RUN_DIM))),
        slot=tensor([draw(st.lists(ANY_FLOAT, min_size=len(SLOT_SCALARS), max_size=len(SLOT_SCALARS)))
                     for _ in range(n_slots)]),
        stage=tensor(draw(st.lists(CODES, min_size=n_slots, max_size=n_slots))),
        blueprint=tensor(draw(st.lists(bp_codes, min_size=n_slots, max_size=n_slots))),
    )


def assert_in_contract(obs: torch.Tensor, n_slots: int, n_bp: int) -> None:
    assert obs.shape == (obs_dim(n_slots, n_bp),)
    lo, hi = obs_bounds(n_slots, n_bp)
    binary = obs_binary(n_slots, n_bp)
    assert bool(torch.isfinite(obs).all())
    assert bool(((obs >= lo) & (obs <= hi)).all()), [n for n, ok in zip(
        feature_names(n_slots, n_bp), ((obs >= lo) & (obs <= hi)).tolist(), strict=True) if not ok]
    assert bool(((obs[binary] == 0) | (obs[binary] == 1)).all())
    for s in range(n_slots):
        block = obs[slot_offset(s, n_bp):slot_offset(s + 1, n_bp)]
        assert block[1:8].sum() <= 1 and block[18:].sum() <= 1  # one-hots hold at most one 1
        if block[0] == 0:  # a disabled slot's block is all zero
            assert bool((block == 0).all())


@given(data=st.data(), n_slots=st.integers(1, 4), n_bp=st.integers(1, 7))
def test_any_raw_input_encodes_inside_every_clamp(data: st.DataObject, n_slots: int, n_bp: int) -> None:
    inputs = data.draw(obs_inputs(n_slots, n_bp))
    assert_in_contract(encode_observation(inputs, n_bp), n_slots, n_bp)


MAYBE = st.one_of(st.none(), ANY_FLOAT)


@st.composite
def contexts(draw: st.DrawFn) -> ObsContext:
    return ObsContext(
        epochs=draw(st.integers(1, 100)), random_guess_loss=draw(st.one_of(st.just(math.log(10)), ANY_FLOAT)),
        train_loss=draw(ANY_FLOAT), train_acc=draw(ANY_FLOAT), val_loss=draw(ANY_FLOAT),
        prev_val_loss=draw(MAYBE), prev_val_acc=draw(MAYBE), rolled_back_now=draw(st.booleans()),
        rollbacks=draw(st.integers(0, 5)), max_rollbacks=draw(st.integers(0, 3)),
        host_params=draw(st.integers(0, 10**7)),
    )


@scaled(0.625)
@given(rules_view=reachable_views(max_steps=20), ctx=contexts(),
       best=MAYBE, plateau=st.integers(0, 40))
def test_packed_lifecycle_views_encode_inside_the_contract(rules_view, ctx, best, plateau) -> None:
    rules, view = rules_view
    n_slots, n_bp = len(view.slots), len(rules.catalogue.germinable)
    tracker = TrackerState(best_val_acc=best, plateau_epochs=plateau)
    obs = encode_observation(pack_observation(view, tracker, ctx, rules), n_bp)
    assert_in_contract(obs, n_slots, n_bp)
    for slot in view.slots:
        block = obs[slot_offset(slot.index, n_bp):slot_offset(slot.index + 1, n_bp)].tolist()
        assert block[0] == float(slot.enabled)
        if not slot.enabled:
            continue
        assert block[1 + STAGE_CODE[slot.stage]] == 1.0
        assert sum(block[18:]) == float(slot.seed is not None)
        measured = slot.seed is not None and slot.seed.contribution is not None
        assert block[12] == float(measured)
        if slot.seed is not None:
            k = rules.catalogue.germinable_index(slot.seed.blueprint)
            assert block[18 + k] == 1.0
            assert abs(block[8] - slot.seed.alpha) < 1e-6


@scaled(0.625)
@given(data=st.data(), n_envs=st.integers(1, 4), n_slots=st.integers(1, 3), n_bp=st.integers(1, 6))
def test_vmap_equals_loop(data: st.DataObject, n_envs: int, n_slots: int, n_bp: int) -> None:
    envs = [data.draw(obs_inputs(n_slots, n_bp)) for _ in range(n_envs)]
    stacked = stack_inputs(envs)
    loop = torch.stack([encode_observation(x, n_bp) for x in envs])
    assert torch.equal(torch.func.vmap(encode_observation, in_dims=(0, None))(stacked, n_bp), loop)
    assert torch.equal(encode_observation(stacked, n_bp), loop)  # leading batch dims work directly too


FINITE = st.floats(-1e6, 1e6, allow_nan=False)


@scaled(0.625)
@given(data=st.data(), n_slots=st.integers(1, 3), n_bp=st.integers(1, 6),
       floor=st.floats(1e-3, 1.0), clip=st.floats(0.5, 10.0))
def test_normalize_leaves_binary_entries_untouched(data: st.DataObject, n_slots: int, n_bp: int,
                                                   floor: float, clip: float) -> None:
    dim = obs_dim(n_slots, n_bp)
    obs = encode_observation(data.draw(obs_inputs(n_slots, n_bp)), n_bp)
    stats = RunningStats(mean=torch.tensor(data.draw(st.lists(FINITE, min_size=dim, max_size=dim))),
                         var=torch.tensor(data.draw(st.lists(st.floats(0, 1e6), min_size=dim, max_size=dim))),
                         count=torch.tensor(float(data.draw(st.integers(0, 1000)))))
    binary = obs_binary(n_slots, n_bp)
    out = normalize(stats, obs, binary, std_floor=floor, clip=clip)
    assert torch.equal(out[binary], obs[binary])
    assert bool((out[~binary].abs() <= clip).all()) and bool(torch.isfinite(out).all())
