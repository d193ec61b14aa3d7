"""Blend invariants of docs/lifecycle.md §5 over random shapes and alphas (§11 items 8 and 10).

I1: α = 0 gives exactly h, even when δ returns NaN or inf, in every stage that runs a seed.
I3: in BLENDING and PROBATIONARY ∂L/∂h == g and ∂L/∂d == α·g exactly; TRAINING's straight
through gives ∂L/∂h == ∂L/∂d == g. Value: blend == lerp(h, h + δ, α) for α in (0, 1].
"""

import torch
from hypothesis import example, given
from hypothesis import strategies as st

from esper.core.blend import blend, knobs_for, seed_input
from esper.core.stages import HAS_MODULE, Stage

shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**31 - 1)
nonfinite = st.sampled_from([float("nan"), float("inf"), -float("inf")])
unit_alphas = st.floats(0.0, 1.0, exclude_min=True, width=32)  # exact in float32, never 0
module_stages = st.sampled_from(sorted(HAS_MODULE))
release_stages = st.sampled_from([Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED])


def _randn(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=gen) for _ in range(3))  # h, d (or weights), g


def _per_sample(values: list[float], ndim: int) -> torch.Tensor:
    """Per-sample alpha over the leading dim, shaped (B, 1, …, 1) to broadcast against h."""
    return torch.tensor(values, dtype=torch.float32).reshape((-1,) + (1,) * (ndim - 1))


def _delta(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A generic elementwise δ with a nonzero Jacobian."""
    return torch.tanh(h * w + 0.5)


@given(shape=shapes, seed=seeds, bad=nonfinite, stage=module_stages, release=release_stages)
def test_alpha_zero_is_exact_identity_even_for_nonfinite_delta(
    shape: tuple[int, ...], seed: int, bad: float, stage: Stage, release: Stage
) -> None:
    h, _, _ = _randn(shape, seed)
    knobs = knobs_for(stage, release)
    d = torch.full_like(seed_input(h, knobs.input_grad), bad)
    assert torch.equal(blend(h, d, torch.tensor(0.0), knobs.ste), h)


@given(data=st.data(), shape=shapes, seed=seeds, bad=nonfinite, ste=st.booleans())
def test_per_sample_alpha_zero_rows_are_exact(
    data: st.DataObject, shape: tuple[int, ...], seed: int, bad: float, ste: bool
) -> None:
    h, d, _ = _randn(shape, seed)
    alphas = data.draw(st.lists(st.sampled_from([0.0, 0.25, 1.0]), min_size=shape[0], max_size=shape[0]))
    zero = torch.tensor(alphas) == 0
    d[zero] = bad  # the seed blows up exactly where it is switched off
    y = blend(h, d, _per_sample(alphas, len(shape)), ste)
    assert torch.equal(y[zero], h[zero])


@given(shape=shapes, seed=seeds, alpha=unit_alphas,
       stage=st.sampled_from([Stage.BLENDING, Stage.PROBATIONARY]))
def test_blending_and_probation_gradients_are_exact(
    shape: tuple[int, ...], seed: int, alpha: float, stage: Stage
) -> None:
    h, w, g = _randn(shape, seed)
    a = torch.tensor(1.0 if stage == Stage.PROBATIONARY else alpha)
    knobs = knobs_for(stage)
    h = h.requires_grad_()
    d = _delta(seed_input(h, knobs.input_grad), w.requires_grad_())  # w: the seed's parameters
    y = blend(h, d, a, knobs.ste)
    gh, gd = torch.autograd.grad(y, (h, d), grad_outputs=g)
    assert torch.equal(gh, g)
    assert torch.equal(gd, a * g)


@given(shape=shapes, seed=seeds, bad=st.one_of(st.just(0.0), nonfinite))
def test_training_straight_through_gradients_are_exact(shape: tuple[int, ...], seed: int, bad: float) -> None:
    h, d, g = _randn(shape, seed)
    knobs = knobs_for(Stage.TRAINING)
    h = h.requires_grad_()
    d = (d + bad).requires_grad_()  # bad = 0 keeps a finite δ; NaN/inf must not leak either way
    y = blend(h, d, torch.tensor(0.0), knobs.ste)
    gh, gd = torch.autograd.grad(y, (h, d), grad_outputs=g)
    assert torch.equal(y, h)
    assert torch.equal(gh, g) and torch.equal(gd, g)


@given(shape=shapes, seed=seeds)
def test_fossilized_gradient_carries_the_jacobian_term(shape: tuple[int, ...], seed: int) -> None:
    h, w, g = _randn(shape, seed)
    knobs = knobs_for(Stage.FOSSILIZED)
    h = h.requires_grad_()
    y = blend(h, _delta(seed_input(h, knobs.input_grad), w), torch.tensor(1.0), knobs.ste)
    (gh,) = torch.autograd.grad(y, h, grad_outputs=g)
    _, vjp = torch.func.vjp(lambda x: _delta(x, w), h.detach())
    torch.testing.assert_close(gh, g + vjp(g)[0])


@given(data=st.data(), shape=shapes, seed=seeds, ste=st.booleans(), per_sample=st.booleans())
def test_value_is_lerp_towards_the_seed(
    data: st.DataObject, shape: tuple[int, ...], seed: int, ste: bool, per_sample: bool
) -> None:
    h, d, _ = _randn(shape, seed)
    n = shape[0] if per_sample else 1
    values = data.draw(st.lists(unit_alphas, min_size=n, max_size=n))
    alpha = _per_sample(values, len(shape)) if per_sample else torch.tensor(values[0])
    y = blend(h, d, alpha, ste)
    torch.testing.assert_close(y, torch.lerp(h, h + d, alpha), rtol=1e-5, atol=1e-5)


@given(shape=shapes, seed=seeds, alpha=st.one_of(st.just(0.0), unit_alphas), release=release_stages)
@example(shape=(1,), seed=0, alpha=0.0, release=Stage.BLENDING)  # shrunk: TRAINING knobs with input_grad
def test_training_seed_input_is_detached_for_any_alpha(
    shape: tuple[int, ...], seed: int, alpha: float, release: Stage
) -> None:
    """The slot forward with TRAINING's knobs: ∂L/∂h == g exactly, whatever α and `input_grad_from`, for a δ
    with a nonzero Jacobian (the straight-through seed learns, the host does not see it)."""
    h, w, g = _randn(shape, seed)
    knobs = knobs_for(Stage.TRAINING, release)
    h, w = h.requires_grad_(), w.requires_grad_()
    y = blend(h, _delta(seed_input(h, knobs.input_grad), w), torch.tensor(alpha), knobs.ste)
    gh, gw = torch.autograd.grad(y, (h, w), grad_outputs=g)
    assert torch.equal(gh, g)
    assert bool(gw.ne(0).any())  # the seed does receive a gradient
