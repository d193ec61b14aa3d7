"""Hypothesis profiles and the per-test example budget (docs/lifecycle.md §11).

`ci` (default) is pinned (derandomized) and bounded; `thorough` explores: 10× `ci`'s examples for
every property and at least its stateful steps. A property that is costly per example does not
cap its own `max_examples` (a cap would beat every profile); it asks for a share of the active
profile's budget instead, so `HYPOTHESIS_PROFILE=thorough` lifts it too:

    @scaled(0.25)        # a quarter of ci's examples under ci, 10× that under thorough
    @given(...)
    def test_costly(...): ...

A cheap property that must explore more in `ci` (the lifecycle machine, whose `ci` run must reach
every edge) may ask for more than one share.
"""

import math
import os

from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "ci",
    max_examples=40,
    stateful_step_count=100,
    derandomize=True,  # pinned: the same examples on every CI run
    deadline=None,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],  # no explain
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=400,  # 10× ci: every property, including the scaled ones, runs 10× its ci examples
    stateful_step_count=150,  # ≥ ci's: longer episodes, not only more of them
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def load_from_env() -> str:
    """Load the profile named by $HYPOTHESIS_PROFILE (default `ci`); returns its name."""
    name = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    settings.load_profile(name)
    return name


def ci_examples(weight: float) -> int:
    """Examples a property of this relative weight (> 0; 1 = the profile's own count) runs under `ci`."""
    if not weight > 0.0:
        raise ValueError(f"a property's weight is positive, got {weight}")
    return max(1, round(weight * settings.get_profile("ci").max_examples))


def scaled_examples(weight: float, profile: settings | None = None) -> int:
    """The example budget of a property of this weight under `profile` (default: the active one):
    its `ci` count times the profile's `max_examples` / ci's, rounded up (never below 1)."""
    active = profile if profile is not None else settings.default
    ci_max = settings.get_profile("ci").max_examples
    return max(1, math.ceil(ci_examples(weight) * active.max_examples / ci_max))


def scaled_steps(weight: float, profile: settings | None = None) -> int:
    """The stateful step budget of a state machine of this weight under `profile` (default:
    the active one), scaled as `scaled_examples` scales examples."""
    if not weight > 0.0:
        raise ValueError(f"a machine's step weight is positive, got {weight}")
    active = profile if profile is not None else settings.default
    return max(1, math.ceil(weight * active.stateful_step_count))


def scaled(weight: float, steps: float | None = None, **other) -> settings:
    """Settings (usable as a decorator) giving a property `weight` of the active profile's
    examples and, for a state machine, `steps` of its stateful steps; `other` are further
    settings (deadline, health checks), never `max_examples` or `stateful_step_count`."""
    if {"max_examples", "stateful_step_count"} & other.keys():
        raise ValueError("budgets come from the profile: pass weights, not counts")
    if steps is not None:
        other["stateful_step_count"] = scaled_steps(steps)
    return settings(max_examples=scaled_examples(weight), **other)
