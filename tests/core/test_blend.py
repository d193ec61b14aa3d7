"""Example tests of docs/lifecycle.md §5: the blend table, straight-through, vmap/grad/compile parity."""

import pytest
import torch

from esper.core.blend import BlendKnobs, StraightThrough, blend, knobs_for, seed_input
from esper.core.errors import ConfigError, LifecycleError
from esper.core.stages import Stage


def _tensors(seed: int = 0, shape: tuple[int, ...] = (3, 4, 5)) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=gen) for _ in range(3))  # h, d, g


def _grads(h: torch.Tensor, d: torch.Tensor, alpha: torch.Tensor, ste: bool, g: torch.Tensor):
    h, d = h.clone().requires_grad_(), d.clone().requires_grad_()
    y = blend(h, d, alpha, ste)
    gh, gd = torch.autograd.grad(y, (h, d), grad_outputs=g)
    return y.detach(), gh, gd


# ---------------------------------------------------------------- knobs (§5 table)


def test_knobs_follow_the_table_with_default_release() -> None:
    assert knobs_for(Stage.TRAINING) == BlendKnobs(ste=True, input_grad=False)
    assert knobs_for(Stage.BLENDING) == BlendKnobs(ste=False, input_grad=False)
    assert knobs_for(Stage.PROBATIONARY) == BlendKnobs(ste=False, input_grad=False)
    assert knobs_for(Stage.FOSSILIZED) == BlendKnobs(ste=False, input_grad=True)


def test_knobs_with_early_release() -> None:
    assert knobs_for(Stage.TRAINING, Stage.BLENDING) == BlendKnobs(ste=True, input_grad=False)
    assert knobs_for(Stage.BLENDING, Stage.BLENDING).input_grad
    assert knobs_for(Stage.PROBATIONARY, Stage.BLENDING).input_grad
    assert not knobs_for(Stage.BLENDING, Stage.PROBATIONARY).input_grad
    assert knobs_for(Stage.PROBATIONARY, Stage.PROBATIONARY).input_grad


@pytest.mark.parametrize("stage", [Stage.DORMANT, Stage.GERMINATED, Stage.CULLED, Stage.EMBARGOED,
                                   Stage.RESETTING])
def test_knobs_refuse_stages_without_a_module(stage: Stage) -> None:
    with pytest.raises(LifecycleError):
        knobs_for(stage)


@pytest.mark.parametrize("release", [Stage.DORMANT, Stage.TRAINING, Stage.CULLED])
def test_knobs_refuse_a_bad_release_stage(release: Stage) -> None:
    # The message is the one line a user sees for a bad `input_grad_from`: what is allowed and what was given.
    with pytest.raises(ConfigError, match=rf"one of \['BLENDING', 'PROBATIONARY', 'FOSSILIZED'\], got {release.name}$"):
        knobs_for(Stage.BLENDING, release)


def test_knobs_are_frozen() -> None:
    knobs = knobs_for(Stage.TRAINING)
    with pytest.raises(AttributeError):
        knobs.ste = False  # type: ignore[misc]


# ---------------------------------------------------------------- values


def test_seed_input_detaches_unless_released() -> None:
    h = torch.randn(2, 3, requires_grad=True)
    assert seed_input(h, True) is h
    detached = seed_input(h, False)
    assert not detached.requires_grad and torch.equal(detached, h)


@pytest.mark.parametrize("ste", [True, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_alpha_zero_gives_exactly_h_even_for_nonfinite_delta(ste: bool, bad: float) -> None:
    h, _, _ = _tensors()
    d = torch.full_like(h, bad)
    assert torch.equal(blend(h, d, torch.tensor(0.0), ste), h)


def test_training_output_is_h_exactly_and_a_view() -> None:
    h, _, _ = _tensors()
    d = torch.full_like(h, float("nan"))
    y = StraightThrough.apply(h, d)
    assert torch.equal(y, h) and y._is_view()


def test_per_sample_alpha_zero_rows_are_exact() -> None:
    h, d, _ = _tensors()
    d[0] = float("nan")
    alpha = torch.tensor([0.0, 0.5, 1.0])[:, None, None]
    y = blend(h, d, alpha, ste=False)
    assert torch.equal(y[0], h[0])
    assert torch.equal(y[1], h[1] + 0.5 * d[1])
    assert torch.equal(y[2], h[2] + d[2])


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.0])
def test_value_is_lerp_towards_the_seed(alpha: float) -> None:
    h, d, _ = _tensors()
    y = blend(h, d, torch.tensor(alpha), ste=False)
    torch.testing.assert_close(y, torch.lerp(h, h + d, alpha))


# ---------------------------------------------------------------- gradients


def test_training_straight_through_gradients() -> None:
    """TRAINING: ∂L/∂h == g (host gradient unchanged) and ∂L/∂d == g, even with a NaN delta."""
    h, d, g = _tensors()
    for delta in (d, torch.full_like(d, float("nan"))):
        y, gh, gd = _grads(h, delta, torch.tensor(0.0), True, g)
        assert torch.equal(y, h)
        assert torch.equal(gh, g) and torch.equal(gd, g)


@pytest.mark.parametrize("alpha", [0.1173, 0.5, 0.9758, 1.0])
def test_blending_and_probation_gradients(alpha: float) -> None:
    """BLENDING/PROBATIONARY (I3): ∂L/∂h == g, ∂L/∂d == α·g, exactly."""
    h, d, g = _tensors()
    a = torch.tensor(alpha)
    _, gh, gd = _grads(h, d, a, False, g)
    assert torch.equal(gh, g)
    assert torch.equal(gd, a * g)


def test_blending_without_release_cuts_the_seed_path_upstream() -> None:
    h, _, g = _tensors()
    w = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    h = h.clone().requires_grad_()
    y = blend(h, torch.tanh(seed_input(h, False) @ w), torch.tensor(0.5), ste=False)
    (gh,) = torch.autograd.grad(y, h, grad_outputs=g)
    assert torch.equal(gh, g)


def test_fossilized_passes_the_jacobian_term_upstream() -> None:
    """FOSSILIZED (I4): ∂L/∂h = g + J_δ(h)ᵀ g, nonzero for a generic δ."""
    h, _, g = _tensors()
    w = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    knobs = knobs_for(Stage.FOSSILIZED)
    h = h.clone().requires_grad_()

    def delta(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ w)

    y = blend(h, delta(seed_input(h, knobs.input_grad)), torch.tensor(1.0), knobs.ste)
    (gh,) = torch.autograd.grad(y, h, grad_outputs=g)
    _, jvp_t = torch.func.vjp(delta, h.detach())
    (jt_g,) = jvp_t(g)
    assert jt_g.abs().sum() > 0
    torch.testing.assert_close(gh, g + jt_g)


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize("ste", [True, False])
def test_vmap_equals_a_python_loop(ste: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    h, d = torch.randn(6, 3, 4, generator=gen), torch.randn(6, 3, 4, generator=gen)
    alpha = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    if ste:
        d[0] = float("nan")
    batched = torch.func.vmap(lambda h, d, a: blend(h, d, a, ste))(h, d, alpha)
    looped = torch.stack([blend(h[i], d[i], alpha[i], ste) for i in range(6)])
    assert torch.equal(batched, looped)
    assert torch.equal(batched[0], h[0])


@pytest.mark.parametrize("ste", [True, False])
def test_func_grad_through_blend(ste: bool) -> None:
    h, d, g = _tensors(3)
    alpha = torch.tensor(0.0 if ste else 0.25)

    def loss(d: torch.Tensor, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (blend(h, d, alpha, ste) * g).sum()

    gd, gh = torch.func.grad(loss, argnums=(0, 1))(d, h, g)
    assert torch.equal(gh, g)
    assert torch.equal(gd, g if ste else alpha * g)
    # grad under vmap: per-sample gradients equal the batched ones (no cross-sample terms).
    per_sample = torch.func.vmap(torch.func.grad(loss))(d, h, g)
    assert torch.equal(per_sample, gd)


def test_compile_fullgraph_equals_eager() -> None:
    h, d, g = _tensors(4)
    d[0] = float("nan")
    alpha = torch.tensor([0.0, 0.3, 1.0])[:, None, None]
    for ste in (True, False):
        compiled = torch.compile(lambda h, d, a, ste=ste: blend(h, d, a, ste), fullgraph=True)
        # rows with α = 0 are exact; the NaN row only ever feeds the discarded branch
        y_eager, gh_eager, gd_eager = _grads(h, d, alpha, ste, g)
        hc, dc = h.clone().requires_grad_(), d.clone().requires_grad_()
        y = compiled(hc, dc, alpha)
        gh, gd = torch.autograd.grad(y, (hc, dc), grad_outputs=g)
        assert torch.equal(y[0], h[0])
        torch.testing.assert_close(y, y_eager, equal_nan=True)
        torch.testing.assert_close(gh, gh_eager)
        torch.testing.assert_close(gd, gd_eager)
