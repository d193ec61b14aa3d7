"""Pearson's r (`esper.core.stats.pearson`, docs/rl.md §8): symmetric, in [−1, 1], unchanged when either
series goes through a positive affine map x ↦ a·x + b, and negated by a negative scale."""

import math

from hypothesis import assume, given
from hypothesis import strategies as st

from esper.core.stats import pearson

VALUES = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
SCALES = st.floats(1e-2, 1e2)
SHIFTS = st.floats(-1e3, 1e3)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """Paired series of 3–20 points, each spread by more than 1e-3 (so r is defined and well conditioned)."""
    n = draw(st.integers(3, 20))
    x = draw(st.lists(VALUES, min_size=n, max_size=n))
    y = draw(st.lists(VALUES, min_size=n, max_size=n))
    assume(max(x) - min(x) > 1e-3 and max(y) - min(y) > 1e-3)
    return x, y


@given(xy=pairs())
def test_pearson_is_symmetric_and_bounded(xy: tuple[list[float], list[float]]) -> None:
    x, y = xy
    r = pearson(x, y)
    assert -1.0 <= r <= 1.0
    assert math.isclose(r, pearson(y, x), abs_tol=1e-12)  # equal up to rounding: numpy divides in one order


@given(xy=pairs(), a=SCALES, b=SHIFTS, c=SCALES, d=SHIFTS)
def test_pearson_is_invariant_under_positive_affine_maps(xy: tuple[list[float], list[float]], a: float, b: float,
                                                        c: float, d: float) -> None:
    x, y = xy
    r = pearson(x, y)
    mapped = pearson([a * v + b for v in x], [c * v + d for v in y])
    assert math.isclose(mapped, r, abs_tol=1e-9)
    assert math.isclose(pearson([-a * v + b for v in x], y), -r, abs_tol=1e-9)
