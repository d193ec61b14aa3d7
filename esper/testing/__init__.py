"""Hypothesis strategies for esper's core values, for anyone's property tests.

    from esper.testing import strategies as es

    @given(es.rules_and_state(), st.data())
    def test_my_invariant(setup, data): ...

Needs `hypothesis` (the `dev` extra).
"""

from esper.testing import strategies

__all__ = ["strategies"]
