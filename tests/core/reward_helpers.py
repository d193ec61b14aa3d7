"""Reward inputs shared by the core reward tests."""

import torch

from esper.core.rewards import RewardInputs
from esper.core.stages import Stage


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


def random_inputs(n_envs: int, n_slots: int, seed: int, dtype: torch.dtype = torch.float32, *,
                  continuous_params: bool = False, host_low: float = 1e4,
                  alternate_terminal: bool = False) -> RewardInputs:
    """Random inputs [n_envs, n_slots] / [n_envs], drawn in float64 and cast to `dtype`. Seed parameter
    counts are integers unless `continuous_params`; terminal flags are random unless `alternate_terminal`
    (every other env, from env 0). Each variant draws the same stream its test file always drew."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return (torch.rand(*shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(dtype)

    def k(hi: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, hi, shape, generator=g)

    shape = (n_envs, n_slots)
    stage_before, stage_after = k(len(Stage), *shape), k(len(Stage), *shape)
    contribution, measured = u(*shape, lo=-0.1, hi=0.2), k(2, *shape).to(dtype)
    acc_at_germination, last_contribution = u(*shape, hi=0.8), u(*shape, lo=-0.05, hi=0.1)
    seed_params = u(*shape, hi=400_000.0) if continuous_params else k(400_000, *shape).to(dtype)
    host_params, acc = u(n_envs, lo=host_low, hi=1e6), u(n_envs)
    op, slot, culled_age = k(4, n_envs), k(n_slots, n_envs), k(9, n_envs).to(dtype)
    terminal = (torch.arange(n_envs) % 2 == 0).to(dtype) if alternate_terminal else k(2, n_envs).to(dtype)
    return RewardInputs(
        stage_before=stage_before, stage_after=stage_after, contribution=contribution, measured=measured,
        acc_at_germination=acc_at_germination, last_contribution=last_contribution,
        seed_params_before=seed_params, host_params=host_params, acc=acc, op=op, slot=slot,
        culled_age=culled_age, terminal=terminal, rolled_back=(u(n_envs) < 0.3).to(dtype),
    )
