"""Reward inputs shared by the core reward tests."""

import torch

from esper.core.rewards import RewardInputs


def calm_inputs(n: int = 3, **overrides: object) -> RewardInputs:
    """A calm float64 step: nothing measured, no seeds, not terminal; `overrides` are plain values."""
    values: dict[str, object] = {
        "stage_before": [0] * n, "stage_after": [0] * n, "contribution": [0.0] * n, "measured": [0.0] * n,
        "acc_at_germination": [0.0] * n, "last_contribution": [0.0] * n, "seed_params_before": [0.0] * n,
        "host_params": 10_000.0, "acc": 0.5, "op": 0, "slot": 0, "culled_age": 0.0, "terminal": 0.0,
        "rolled_back": 0.0, **overrides,
    }
    ints = {"stage_before", "stage_after", "op", "slot"}
    return RewardInputs(**{k: torch.tensor(v, dtype=torch.int64 if k in ints else torch.float64)
                           for k, v in values.items()})
