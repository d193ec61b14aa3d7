"""esper.core.lr_schedule: s(e) over a run of E epochs, e = epochs already trained."""

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper.core.lr_schedule import lr_factor


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_constant_is_one_everywhere(run):
    epochs, epoch = run
    assert lr_factor("constant", epoch, epochs) == 1.0


@given(st.integers(2, 500))
def test_cosine_starts_at_one_falls_strictly_and_never_reaches_zero(epochs):
    factors = [lr_factor("cosine", e, epochs) for e in range(epochs)]
    assert factors[0] == 1.0
    assert all(a > b for a, b in itertools.pairwise(factors))
    assert factors[-1] > 0.0


def test_cosine_is_half_at_mid_run():
    assert lr_factor("cosine", 15, 30) == pytest.approx(0.5)
    assert lr_factor("cosine", 29, 30) == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))


@pytest.mark.parametrize(("schedule", "epoch", "epochs"), [("linear", 0, 10), ("cosine", 10, 10), ("cosine", -1, 10)])
def test_unknown_schedule_or_epoch_outside_the_run_is_an_error(schedule, epoch, epochs):
    with pytest.raises(ValueError):
        lr_factor(schedule, epoch, epochs)
