"""The example budget comes from the Hypothesis profile (issue 20): `thorough` explores at least
10× `ci`'s examples for every property and is ≥ `ci` in every other budget, and no property caps
its own `max_examples` or `stateful_step_count` (a cap would beat every profile)."""

import ast
from pathlib import Path

import pytest
from hypothesis import settings
from profiles import ci_examples, scaled, scaled_examples, scaled_steps

PROPERTIES = Path(__file__).parent
BUDGET_KEYS = {"max_examples", "stateful_step_count"}


def _scaled_weights() -> list[float]:
    """Every literal weight passed to `scaled(...)` in the property files (not this one's)."""
    weights = []
    for path in sorted(set(PROPERTIES.glob("*.py")) - {Path(__file__)}):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "scaled":
                weights += [a.value for a in node.args if isinstance(a, ast.Constant)]
                weights += [k.value.value for k in node.keywords
                            if k.arg == "steps" and isinstance(k.value, ast.Constant)]
    return weights


def test_thorough_explores_at_least_ci():
    ci, thorough = settings.get_profile("ci"), settings.get_profile("thorough")
    assert thorough.max_examples >= 10 * ci.max_examples
    assert thorough.stateful_step_count >= ci.stateful_step_count
    assert thorough.deadline is None or (ci.deadline is not None and thorough.deadline >= ci.deadline)
    assert set(thorough.phases) >= set(ci.phases)
    assert set(thorough.suppress_health_check) <= set(ci.suppress_health_check)  # as strict or more
    assert ci.derandomize, "the ci run must be pinned"


def test_every_scaled_property_runs_ten_times_its_ci_examples_under_thorough():
    ci, thorough = settings.get_profile("ci"), settings.get_profile("thorough")
    weights = _scaled_weights()
    assert len(weights) >= 10, "the scan found the scaled properties"
    for w in weights:
        assert scaled_examples(w, ci) == ci_examples(w)
        assert scaled_examples(w, thorough) >= 10 * scaled_examples(w, ci), w
        assert scaled_steps(w, thorough) >= scaled_steps(w, ci), w


def test_no_property_caps_its_own_budget():
    """A `settings(...)` call or `.settings = ...` assignment in properties/ that names a budget
    key fails this; budgets are `scaled(weight)` shares of the profile (profiles.py alone sets counts)."""
    offenders = []
    for path in sorted(PROPERTIES.glob("*.py")):
        if path.name == "profiles.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "settings":
                named = BUDGET_KEYS & {k.arg for k in node.keywords}
                offenders += [f"{path.name}:{node.lineno} {key}" for key in sorted(named)]
    assert offenders == []


def test_scaled_refuses_counts_and_bad_weights():
    with pytest.raises(ValueError, match="weights, not counts"):
        scaled(0.5, max_examples=3)
    with pytest.raises(ValueError, match="positive"):
        scaled(0.0)
    with pytest.raises(ValueError, match="positive"):
        scaled(1.0, steps=-1.0)
    assert scaled(1.0).max_examples == settings.default.max_examples
