"""Seed stages and the complete table of legal edges (docs/lifecycle.md §1).

Every stage change in esper goes through `lifecycle.transition`, which consults `EDGES`; any
pair not listed here raises `IllegalTransition`.
"""

from enum import IntEnum


class Stage(IntEnum):
    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    PROBATIONARY = 4
    FOSSILIZED = 5
    CULLED = 6
    EMBARGOED = 7
    RESETTING = 8

    def __str__(self) -> str:
        return self.name


LIVE = frozenset({Stage.GERMINATED, Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY})
HAS_MODULE = frozenset({Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY, Stage.FOSSILIZED})
COOLING = frozenset({Stage.CULLED, Stage.EMBARGOED, Stage.RESETTING})
TERMINAL = frozenset({Stage.FOSSILIZED})
CULLABLE = frozenset({Stage.TRAINING, Stage.BLENDING, Stage.PROBATIONARY})

# (from, to) -> edge name. Complete: docs/lifecycle.md §1.2.
EDGES: dict[tuple[Stage, Stage], str] = {
    (Stage.DORMANT, Stage.GERMINATED): "E1",
    (Stage.GERMINATED, Stage.TRAINING): "E2",
    (Stage.GERMINATED, Stage.CULLED): "E3",
    (Stage.TRAINING, Stage.BLENDING): "E4",
    (Stage.TRAINING, Stage.CULLED): "E5",
    (Stage.BLENDING, Stage.PROBATIONARY): "E6",
    (Stage.BLENDING, Stage.CULLED): "E7",
    (Stage.PROBATIONARY, Stage.FOSSILIZED): "E8",
    (Stage.PROBATIONARY, Stage.CULLED): "E9",
    (Stage.CULLED, Stage.EMBARGOED): "E10",
    (Stage.EMBARGOED, Stage.RESETTING): "E11",
    (Stage.RESETTING, Stage.DORMANT): "E12",
}


def is_legal_edge(from_stage: Stage, to_stage: Stage) -> bool:
    return (from_stage, to_stage) in EDGES


CULL_REASONS = frozenset(
    {
        "action",
        "training_timeout",
        "negative_contribution",
        "probation_timeout",
        "nonfinite",
        "governor_rollback",
    }
)


def is_cull_reason(reason: str) -> bool:
    """The closed set of cull reasons, plus `g1:<code>` for a germination that failed G1."""
    return reason in CULL_REASONS or reason.startswith("g1:")
