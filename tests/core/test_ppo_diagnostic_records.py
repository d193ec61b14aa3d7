"""PPO diagnostics, counts and the entropy schedule pinned by hand (docs/rl.md §6): what `make mutate` found
unchecked. The hand batch has a head with three relevant steps (a Bessel std that differs from n and n − 2),
ratios exactly at the clip bound ε, and three valid values."""

import math

import attrs
import pytest
import torch

from esper.core.ppo import PPOBatch, PPOCoefs, entropy_coef, ppo_loss, step_counts
from esper.core.rl_config import RLConfig

F64 = torch.float64
EPS = 0.25  # 1 ± 0.25 and exp(log(1.25)), exp(log(0.75)) are exact binary floats: deviations hit ε exactly
COEFS = PPOCoefs(clip_eps=EPS, value_clip_eps=0.2, value_coef=0.5, entropy_coef=0.0)
GERMINATE, WAIT = (1.0, 1.0, 1.0, 1.0), (1.0, 0.0, 0.0, 0.0)


def _hand(dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PPOBatch]:
    """B = 1, T = 3, all valid: GERMINATE, GERMINATE, WAIT. The op head's ratios are 1.25, 0.75, 1.5; the other
    heads' ratios are 1 on their two relevant steps and garbage (9) on the irrelevant third."""
    logp = torch.zeros(1, 3, 4, dtype=dtype)
    logp[0, :, 0] = torch.log(torch.tensor([1.25, 0.75, 1.5], dtype=dtype))
    logp[0, 2, 1:] = 9.0
    batch = PPOBatch(logp_old=torch.zeros(1, 3, 4, dtype=dtype), value_old=torch.zeros(1, 3, dtype=dtype),
                     relevance=torch.tensor([[GERMINATE, GERMINATE, WAIT]], dtype=dtype),
                     valid=torch.ones(1, 3, dtype=dtype), advantages=torch.zeros(1, 3, dtype=dtype),
                     returns=torch.zeros(1, 3, dtype=dtype))
    return logp, torch.zeros(1, 3, 4, dtype=dtype), torch.tensor([[1.0, 2.0, 4.0]], dtype=dtype), batch


def test_ratio_statistics_clip_fraction_and_value_std_by_hand() -> None:
    _, d = ppo_loss(*_hand(), COEFS)
    op_std = math.sqrt(((1 / 12) ** 2 + (5 / 12) ** 2 + (4 / 12) ** 2) / (3 - 1))  # around the mean 7/6
    want = {
        "ratio_mean": [3.5 / 3, 1.0, 1.0, 1.0], "ratio_std": [op_std, 0.0, 0.0, 0.0],
        "ratio_min": [0.75, 1.0, 1.0, 1.0], "ratio_max": [1.5, 1.0, 1.0, 1.0],
        # |ρ − 1| = 0.25, 0.25, 0.5: only the strict excess over ε is clipped (clip_closed keeps the bound's slope)
        "clip_frac": [1 / 3, 0.0, 0.0, 0.0], "relevant_frac": [1.0, 2 / 3, 2 / 3, 2 / 3],
    }
    for name, values in want.items():
        assert getattr(d, name).tolist() == pytest.approx(values, abs=1e-12), name
    assert d.max_abs_ratio_dev.item() == 0.5
    # Values 1, 2, 4: mean 7/3, Bessel variance (16 + 1 + 25) / 9 / (3 − 1) = 7/3.
    assert (d.value_mean.item(), d.value_std.item()) == pytest.approx((7 / 3, math.sqrt(7 / 3)), abs=1e-12)


def test_step_counts_by_hand_in_the_mask_dtype() -> None:
    for dtype in (torch.float32, F64):
        n, n_h = step_counts(_hand(dtype)[3])
        assert (n.dtype, n_h.dtype) == (dtype, dtype)
        assert (n.item(), n_h.tolist()) == (3.0, [3.0, 2.0, 2.0, 2.0])


def _dtypes(loss: torch.Tensor, diag: object) -> set[torch.dtype]:
    return {loss.dtype} | {v.dtype for v in attrs.asdict(diag, recurse=False).values()}


def test_loss_and_diagnostics_come_in_the_values_dtype() -> None:
    """n and n_h are cast to the values' dtype: a float64 mask (or float64 counts of a larger batch) leaves a
    float32 evaluation float32, and a bfloat16 evaluation stays bfloat16 throughout."""
    logp, ent, value, batch = _hand(torch.float32)
    mask64 = attrs.evolve(batch, valid=batch.valid.to(F64))
    assert _dtypes(*ppo_loss(logp, ent, value, mask64, COEFS)) == {torch.float32}
    assert _dtypes(*ppo_loss(logp, ent, value, batch, COEFS, step_counts(mask64))) == {torch.float32}
    assert _dtypes(*ppo_loss(*_hand(torch.bfloat16), COEFS)) == {torch.bfloat16}


def test_a_one_update_run_anneals_to_the_end() -> None:
    """U = 1 with the anneal over every update: update 0 uses c_start, update 1 (after the last) c_end."""
    cfg = RLConfig(entropy_anneal_frac=1.0)
    want = [cfg.entropy_coef_start] + [cfg.entropy_coef_end] * 2
    assert [entropy_coef(u, 1, cfg) for u in (0, 1, 2)] == pytest.approx(want, abs=1e-15)


def test_the_entropy_coefficient_is_exactly_start_then_exactly_end() -> None:
    """c(u) = c_end exactly once the anneal is over (not 0.010000000000000002, the rounding of 0.05 − 0.04)."""
    for cfg in (RLConfig(), RLConfig(entropy_coef_start=0.1, entropy_coef_end=0.02, entropy_anneal_frac=0.3)):
        total = 50
        end_of_anneal = math.ceil(cfg.entropy_anneal_frac * total)
        assert entropy_coef(0, total, cfg) == cfg.entropy_coef_start
        tail = [entropy_coef(u, total, cfg) for u in range(end_of_anneal, total + 1)]
        assert tail == [cfg.entropy_coef_end] * len(tail)
        ramp = [entropy_coef(u, total, cfg) for u in range(end_of_anneal + 1)]
        assert ramp == sorted(ramp, reverse=True) and len(set(ramp)) == len(ramp)
