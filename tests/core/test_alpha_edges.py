"""Alpha schedules at their edges (docs/lifecycle.md §4): the pinned ends and their slope, steep curves in both
float dtypes, alpha_at's defaults and a floating ramp_step, and the unknown-curve error. The alpha properties
draw u inside the ramp at the default steepness; these pin what `make mutate` found unchecked there."""

import pytest
import torch

from esper.core.alpha import Curve, alpha_at, alpha_curve, curve_value, ramp_alpha

CODES = torch.tensor([int(c) for c in Curve])
F64 = torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize(("u", "pinned"), [(0.0, 0.0), (1.0, 1.0)])
def test_the_ends_are_pinned_with_zero_slope(dtype: torch.dtype, u: float, pinned: float) -> None:
    """a(u) = 0 for u ≤ 0 and 1 for u ≥ 1, ends included: the pinned constant, not the curve, owns u = 0 and u = 1,
    so autograd sees its zero slope there (the curve's own slope at the ends is 1 for LINEAR, > 0 for SIGMOID)."""
    x = torch.full((len(CODES),), u, dtype=dtype, requires_grad=True)
    got = alpha_curve(CODES, x)
    assert got.tolist() == [pinned] * len(CODES)
    (grad,) = torch.autograd.grad(got.sum(), x)
    assert grad.tolist() == [0.0] * len(CODES)


# A steepness s whose half-curve still fits the dtype (sinh(s/4) finite) but whose full-range closed form does not
# (sinh(s·u/2) overflows for u near 1): only evaluating the increasing half on the clamped u keeps it finite.
STEEP = [(torch.float32, 200.0), (F64, 2000.0)]


@pytest.mark.parametrize(("dtype", "s"), STEEP)
def test_a_steep_curve_stays_finite_inside_and_outside_the_ramp(dtype: torch.dtype, s: float) -> None:
    u = torch.linspace(-0.5, 1.5, 41, dtype=dtype).repeat(len(CODES), 1).requires_grad_()
    codes = CODES[:, None].expand_as(u)
    got = alpha_curve(codes, u, s)
    (grad,) = torch.autograd.grad(got.sum(), u)
    assert torch.isfinite(got).all() and torch.isfinite(grad).all()
    assert ((got >= 0) & (got <= 1)).all()
    assert torch.all(got[:, 1:] >= got[:, :-1])  # still non-decreasing
    late = got[int(Curve.SIGMOID), u[0] >= 0.9]  # this steep a sigmoid has saturated by u = 0.9
    assert late.tolist() == pytest.approx([1.0] * len(late), abs=1e-6)


def test_a_steep_curve_in_python_floats_stays_finite() -> None:
    """curve_value's twin of the above: the direct closed form would overflow math.sinh(s·u/2) for u near 1."""
    s = 2000.0
    values = [curve_value(Curve.SIGMOID, k / 20, s) for k in range(21)]
    assert values[10] == 0.5 and values[-1] == 1.0
    assert all(0.0 <= v <= 1.0 for v in values) and values == sorted(values)
    assert values[18] == pytest.approx(1.0, abs=1e-12)


def test_alpha_at_defaults_are_ramp_alphas() -> None:
    """frac defaults to 1 (the end of BLENDING epoch k) and the steepness to 12, as in ramp_alpha (an integer
    ramp_step computes in the default dtype, float32, hence the tolerance)."""
    tempo, steps = torch.tensor(5.0, dtype=F64), torch.arange(0, 7)
    for curve in Curve:
        got = alpha_at(torch.tensor(int(curve)), tempo, steps)
        want = [ramp_alpha(curve, 5, int(k)) for k in steps]
        assert got.tolist() == pytest.approx(want, abs=1e-6)


def test_alpha_at_passes_its_steepness_on() -> None:
    steps, half = torch.arange(1, 5, dtype=F64), torch.tensor(0.5, dtype=F64)
    got = alpha_at(torch.tensor(int(Curve.SIGMOID)), torch.tensor(4.0, dtype=F64), steps, half, steepness=4.0)
    want = [ramp_alpha(Curve.SIGMOID, 4, int(k), 0.5, steepness=4.0) for k in steps]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    assert want != pytest.approx([ramp_alpha(Curve.SIGMOID, 4, int(k), 0.5) for k in steps], abs=1e-3)


def test_a_floating_ramp_step_keeps_its_dtype_and_precision() -> None:
    """Only an integer ramp_step is cast (to the default dtype); a float64 one is used as it is, so u and alpha
    stay float64 even with a Python-float frac."""
    steps = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64)
    for curve in Curve:
        got = alpha_at(torch.tensor(int(curve)), torch.tensor(3.0, dtype=F64), steps, 0.1)
        assert got.dtype == F64
        want = [ramp_alpha(curve, 3, k, 0.1) for k in range(4)]
        torch.testing.assert_close(got, torch.tensor(want, dtype=F64), rtol=1e-14, atol=1e-15)


def test_an_unknown_curve_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"^unknown curve 3$"):
        curve_value(3, 0.5)  # type: ignore[arg-type]  # a code outside Curve, as a caller might pass
