"""docs/lifecycle.md §11 P4: alpha schedules. Exact endpoints, monotone, positive inside the ramp,
the tensor form equals the float form, and vmap / grad / compile(fullgraph) agree with eager."""

import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from esper.core.alpha import Curve, alpha_at, alpha_curve, curve_value, ramp_alpha

curves = st.sampled_from(list(Curve))
unit = st.floats(0.0, 1.0)
steepness = st.sampled_from([1.0, 4.0, 12.0, 20.0])


@given(curves, steepness)
def test_endpoints_are_exact(curve, s):
    assert curve_value(curve, 0.0, s) == 0.0 and curve_value(curve, 1.0, s) == 1.0
    ends = alpha_curve(torch.tensor(int(curve)), torch.tensor([0.0, 1.0, -0.5, 1.5]), s)
    assert ends.tolist() == [0.0, 1.0, 0.0, 1.0]


@given(curves, unit, unit, steepness)
def test_non_decreasing(curve, u, v, s):
    lo, hi = min(u, v), max(u, v)
    assert curve_value(curve, lo, s) <= curve_value(curve, hi, s)


@given(curves, st.floats(1e-6, 1.0), steepness)
def test_positive_inside_the_ramp(curve, u, s):
    # Ramps produce u = (k - 1 + j/J) / T ≥ 1e-6 for any realistic steps-per-epoch J.
    assert curve_value(curve, u, s) > 0.0
    assert alpha_curve(torch.tensor(int(curve)), torch.tensor(u), s).item() > 0.0


@given(curves, st.lists(unit, min_size=1, max_size=16), steepness)
def test_tensor_form_equals_float_form(curve, us, s):
    got = alpha_curve(torch.tensor(int(curve)), torch.tensor(us, dtype=torch.float64), s)
    want = torch.tensor([curve_value(curve, u, s) for u in us], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


@given(curves, st.sampled_from([1, 3, 5, 8]), st.integers(0, 9), st.floats(0.0, 1.0))
def test_alpha_at_equals_ramp_alpha(curve, tempo, ramp_step, frac):
    got = alpha_at(torch.tensor(int(curve)), torch.tensor(float(tempo), dtype=torch.float64),
                   torch.tensor(ramp_step), torch.tensor(frac, dtype=torch.float64))
    assert got.item() == pytest.approx(ramp_alpha(curve, tempo, ramp_step, frac), abs=1e-12)


@given(st.lists(unit, min_size=4, max_size=4), st.lists(st.sampled_from(list(Curve)), min_size=4, max_size=4))
def test_vmap_equals_loop(us, cs):
    u, c = torch.tensor(us), torch.tensor([int(x) for x in cs])
    batched = torch.func.vmap(alpha_curve)(c, u)
    looped = torch.stack([alpha_curve(ci, ui) for ci, ui in zip(c, u, strict=True)])
    assert torch.equal(batched, looped)


@given(curves, st.floats(0.01, 0.99))
@example(Curve.SIGMOID, 0.5)  # regression: torch.minimum's tie at ½ gave a zero gradient
def test_grad_matches_finite_difference(curve, u):
    x = torch.tensor(u, dtype=torch.float64)
    grad = torch.func.grad(lambda v: alpha_curve(torch.tensor(int(curve)), v))(x)
    h = 1e-6
    fd = (curve_value(curve, u + h) - curve_value(curve, u - h)) / (2 * h)
    assert grad.item() == pytest.approx(fd, rel=1e-4, abs=1e-6)
    assert math.isfinite(grad.item()) and grad.item() >= 0.0


_compiled = torch.compile(alpha_curve, fullgraph=True, dynamic=False)


@given(st.lists(st.floats(-0.5, 1.5), min_size=8, max_size=8), curves)
def test_compiled_equals_eager(us, curve):
    u, c = torch.tensor(us), torch.full((8,), int(curve))
    torch.testing.assert_close(_compiled(c, u), alpha_curve(c, u), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("tempo", "curve", "table"), [
    (3, Curve.LINEAR, [.3333, .6667, 1]),
    (3, Curve.COSINE, [.25, .75, 1]),
    (3, Curve.SIGMOID, [.1173, .8827, 1]),
    (5, Curve.COSINE, [.0955, .3455, .6545, .9045, 1]),
    (5, Curve.SIGMOID, [.0242, .2301, .7699, .9758, 1]),
    (8, Curve.SIGMOID, [.0086, .0452, .1808, .5, .8192, .9548, .9914, 1]),
])
def test_spec_table(tempo, curve, table):
    """docs/lifecycle.md §4's table of alphas per BLENDING epoch (rounded to 4 places there)."""
    got = [ramp_alpha(curve, tempo, k) for k in range(1, tempo + 1)]
    assert got == pytest.approx(table, abs=5e-5)
    assert got[-1] == 1.0


# u outside [0, 1]: every other property here draws u inside it, so a ramp that stopped saturating
# at 1 for u > 1 (or at 0 for u < 0) went unseen. The boundaries and their neighbours are drawn often.
EDGES = (0.0, -0.0, 1.0, math.nextafter(1.0, 2.0), math.nextafter(0.0, -1.0), 1.5, 2.0, -0.5)
outside = st.one_of(st.sampled_from(EDGES), st.floats(1.0, 1e6), st.floats(-1e6, 0.0))


@given(curves, outside, steepness)
@example(Curve.LINEAR, 2.0, 12.0)  # an unclamped linear ramp gives 2.0
@example(Curve.LINEAR, math.nextafter(1.0, 2.0), 1.0)  # shrunk: the first float past 1
@example(Curve.COSINE, -0.5, 12.0)  # below the ramp: an unclamped cosine gives 0.5
def test_alpha_saturates_outside_the_unit_interval(curve, u, s):
    want = 1.0 if u >= 1.0 else 0.0
    assert curve_value(curve, u, s) == want
    for dtype in (torch.float32, torch.float64):
        assert alpha_curve(torch.tensor(int(curve)), torch.tensor(u, dtype=dtype), s).item() == want


@given(curves, st.integers(1, 8), st.integers(0, 8), st.floats(0.0, 1.0), steepness)
def test_ramp_past_its_last_step_stays_at_one(curve, tempo, extra, frac, s):
    """ramp_step beyond tempo (u > 1) keeps alpha at exactly 1, in the float and the tensor form."""
    ramp_step = tempo + 1 + extra
    assert ramp_alpha(curve, tempo, ramp_step, frac, s) == 1.0
    got = alpha_at(torch.tensor(int(curve)), torch.tensor(float(tempo)), torch.tensor(ramp_step), frac, s)
    assert got.item() == 1.0
