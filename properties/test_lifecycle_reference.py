"""The reference model's alpha curve (lifecycle_reference.ref_curve) reproduces the spec's table
(docs/lifecycle.md §4), so the state machine's alpha checks compare esper.core.alpha with an
independent, anchored curve rather than with itself."""

import pytest
from lifecycle_reference import ref_curve

# docs/lifecycle.md §4: alpha in BLENDING epoch k = 1…T is a(k/T), rounded to 4 decimals there
SPEC_TABLE = {
    3: {"LINEAR": (.3333, .6667, 1), "COSINE": (.25, .75, 1), "SIGMOID": (.1173, .8827, 1)},
    5: {"LINEAR": (.2, .4, .6, .8, 1), "COSINE": (.0955, .3455, .6545, .9045, 1),
        "SIGMOID": (.0242, .2301, .7699, .9758, 1)},
    8: {"LINEAR": (.125, .25, .375, .5, .625, .75, .875, 1),
        "COSINE": (.0381, .1464, .3087, .5, .6913, .8536, .9619, 1),
        "SIGMOID": (.0086, .0452, .1808, .5, .8192, .9548, .9914, 1)},
}


@pytest.mark.parametrize("tempo", sorted(SPEC_TABLE))
@pytest.mark.parametrize("curve", ["LINEAR", "COSINE", "SIGMOID"])
def test_reference_curve_reproduces_the_spec_table(tempo: int, curve: str):
    got = [ref_curve(curve, k / tempo) for k in range(1, tempo + 1)]
    assert got == pytest.approx(SPEC_TABLE[tempo][curve], abs=5e-5)


@pytest.mark.parametrize("curve", ["LINEAR", "COSINE", "SIGMOID"])
def test_reference_curve_is_pinned_at_the_ends(curve: str):
    assert ref_curve(curve, 0.0) == 0.0 and ref_curve(curve, -0.5) == 0.0
    assert ref_curve(curve, 1.0) == 1.0 and ref_curve(curve, 1.5) == 1.0
