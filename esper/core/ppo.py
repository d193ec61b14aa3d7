r"""The clipped PPO loss over factored heads, its diagnostics and the entropy schedule (docs/rl.md §6).

Inputs are [B, T, ·] (B env sequences, step t = 0 … T−1 of each); heads h = op, slot, blueprint, tempo.
With u_h the relevance of head h under the executed op, valid_t the kept-step mask, m_{t,h} = valid_t·u_h,
ρ_h = exp(logp_h − logp_old_h), n = Σ valid and n_h = Σ m_h:

    L_π  = (1/n) Σ_t valid_t Σ_h u_h · max(−ρ_h Â_t, −clip(ρ_h, 1 ± ε) Â_t)
    L_V  = 0.5 · (1/n) Σ_t valid_t · max((V_t − G_t)², (V_old,t + clip(V_t − V_old,t, ±ε_v) − G_t)²)
    H̄_h  = Σ_t m_{t,h} Ĥ_{t,h} / max(n_h, 1),   L_H = −c(u) · Σ_h H̄_h
    L    = L_π + value_coef · L_V + L_H

    c(u) = max(c_end, c_start − (c_start − c_end) · min(1, u / (frac · U)))

Entries with m = 0 are *selected out* with `where` (never multiplied by 0), so the stored samples of an
irrelevant head, padding and any garbage (even inf/NaN) there change neither the loss nor a gradient.
Diagnostics are detached tensors; per-head statistics run over that head's relevant valid steps, and a
head with no such step reports 0. k3 KL estimator: E[(ρ − 1) − log ρ]. The joint log ratio of a step is
Σ_h u_h (logp_h − logp_old_h), whose k3 KL is the early-stop statistic.
"""

from typing import ClassVar

import attrs
import torch
from torch import Tensor

from esper.core.gae import explained_variance
from esper.core.pytree import register_pytree, set_frozen_fields
from esper.core.rl_config import RLConfig


def entropy_coef(update: int, total_updates: int, cfg: RLConfig) -> float:
    """c(u): linear anneal from start to end over the first `entropy_anneal_frac` of the updates, then flat."""
    span = cfg.entropy_anneal_frac * max(total_updates, 1)
    progress = min(1.0, update / span)
    start, end = cfg.entropy_coef_start, cfg.entropy_coef_end
    return max(end, start - (start - end) * progress)


@attrs.frozen(kw_only=True)
class PPOCoefs:
    clip_eps: float
    value_clip_eps: float
    value_coef: float
    entropy_coef: float

    @classmethod
    def from_config(cls, cfg: RLConfig, entropy_coef: float) -> "PPOCoefs":
        return cls(clip_eps=cfg.clip_eps, value_clip_eps=cfg.value_clip_eps, value_coef=cfg.value_coef,
                   entropy_coef=entropy_coef)


@register_pytree
@attrs.frozen(kw_only=True)
class PPOBatch:
    """Stored rollout quantities of a minibatch: [B, T, 4] per head, [B, T] per step."""

    logp_old: Tensor
    value_old: Tensor
    relevance: Tensor  # u_h(op_t), float 0/1
    valid: Tensor  # float 0/1
    advantages: Tensor  # normalised Â
    returns: Tensor  # G (from un-normalised A)




@register_pytree
@attrs.frozen(kw_only=True, init=False)
class PPODiagnostics:
    """Detached statistics of one loss evaluation; per-head fields have shape [4], the rest are scalars.

    Built inside the compiled loss, hence the hand-written keyword-only `__init__` (see `pytree.set_frozen_fields`).
    """

    HEAD_FIELDS: ClassVar[tuple[str, ...]] = ("ratio_mean", "ratio_std", "ratio_min", "ratio_max", "clip_frac",
                                              "approx_kl", "entropy", "policy_loss", "relevant_frac")

    ratio_mean: Tensor
    ratio_std: Tensor
    ratio_min: Tensor
    ratio_max: Tensor
    clip_frac: Tensor
    approx_kl: Tensor
    entropy: Tensor  # H̄_h
    policy_loss: Tensor  # each head's share of L_π (they sum to total_policy_loss)
    relevant_frac: Tensor  # n_h / n
    joint_approx_kl: Tensor
    max_abs_ratio_dev: Tensor
    total_policy_loss: Tensor  # L_π
    value_loss: Tensor  # L_V (before value_coef)
    entropy_loss: Tensor  # L_H
    loss: Tensor
    value_mean: Tensor
    value_std: Tensor
    explained_variance: Tensor

    def __init__(self, **values: Tensor) -> None:
        set_frozen_fields(self, values)


def _masked_sum(x: Tensor, mask: Tensor, dims: tuple[int, ...]) -> Tensor:
    return torch.where(mask, x, torch.zeros_like(x)).sum(dims)


def ppo_loss(logp: Tensor, ent_norm: Tensor, value: Tensor, batch: PPOBatch,
             coefs: PPOCoefs) -> tuple[Tensor, PPODiagnostics]:
    """(L, diagnostics) for new log-probs logp[B, T, 4], normalised entropies ent_norm[B, T, 4], values[B, T]."""
    step = batch.valid > 0  # [B, T]
    head = step[..., None] & (batch.relevance > 0)  # m_{t,h} > 0, [B, T, 4]
    n = step.to(value.dtype).sum().clamp_min(1.0)
    n_h = head.to(value.dtype).sum((0, 1))
    n_h1 = n_h.clamp_min(1.0)

    logratio = torch.where(head, logp - batch.logp_old, torch.zeros_like(logp))
    ratio = torch.exp(logratio)
    adv = torch.where(step, batch.advantages, torch.zeros_like(batch.advantages))[..., None]
    clipped = ratio.clamp(1.0 - coefs.clip_eps, 1.0 + coefs.clip_eps)
    surrogate = torch.maximum(-ratio * adv, -clipped * adv)
    head_policy = _masked_sum(surrogate, head, (0, 1)) / n
    policy_loss = head_policy.sum()

    value_loss = _value_loss(value, batch, step, n, coefs.value_clip_eps)
    entropy = _masked_sum(ent_norm, head, (0, 1)) / n_h1
    entropy_loss = -coefs.entropy_coef * entropy.sum()
    loss = policy_loss + coefs.value_coef * value_loss + entropy_loss

    diag = _diagnostics(ratio.detach(), logratio.detach(), head, step, n, n_h, coefs.clip_eps)
    value_d = value.detach()
    value_mean, value_std = _mean_std(value_d, step, n)
    return loss, PPODiagnostics(
        **diag, entropy=entropy.detach(), policy_loss=head_policy.detach(), relevant_frac=n_h / n,
        total_policy_loss=policy_loss.detach(), value_loss=value_loss.detach(),
        entropy_loss=entropy_loss.detach(), loss=loss.detach(), value_mean=value_mean, value_std=value_std,
        explained_variance=explained_variance(value_d, batch.returns, batch.valid),
    )


def _value_loss(value: Tensor, batch: PPOBatch, step: Tensor, n: Tensor, clip_eps: float) -> Tensor:
    # Select before the squares: a masked-out NaN would otherwise turn the zero gradient into 0 · NaN.
    v, v_old, g = (torch.where(step, x, torch.zeros_like(x)) for x in (value, batch.value_old, batch.returns))
    clipped = v_old + (v - v_old).clamp(-clip_eps, clip_eps)
    worst = torch.maximum((v - g) ** 2, (clipped - g) ** 2)
    return 0.5 * _masked_sum(worst, step, (0, 1)) / n


def _mean_std(x: Tensor, mask: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """Masked mean and Bessel standard deviation over all dims (0 for < 2 entries)."""
    mean = _masked_sum(x, mask, tuple(range(x.dim()))) / n
    dev = torch.where(mask, x - mean, torch.zeros_like(x))
    var = (dev * dev).sum() / (mask.to(x.dtype).sum() - 1.0).clamp_min(1.0)
    return mean, var.sqrt()


def _diagnostics(ratio: Tensor, logratio: Tensor, head: Tensor, step: Tensor, n: Tensor, n_h: Tensor,
                 clip_eps: float) -> dict[str, Tensor]:
    """Per-head ratio statistics over relevant valid steps, plus the joint-KL early-stop statistics."""
    n_h1 = n_h.clamp_min(1.0)
    acted = n_h > 0
    zero = torch.zeros_like(n_h)
    mean = _masked_sum(ratio, head, (0, 1)) / n_h1
    dev = torch.where(head, ratio - mean, torch.zeros_like(ratio))
    std = ((dev * dev).sum((0, 1)) / (n_h - 1.0).clamp_min(1.0)).sqrt()
    inf = torch.full_like(ratio, float("inf"))
    ratio_min = torch.where(head, ratio, inf).amin((0, 1))
    ratio_max = torch.where(head, ratio, -inf).amax((0, 1))
    deviation = (ratio - 1.0).abs()
    clip_frac = _masked_sum((deviation > clip_eps).to(ratio.dtype), head, (0, 1)) / n_h1
    k3 = (ratio - 1.0) - logratio
    joint_logratio = logratio.sum(-1)  # irrelevant heads and invalid steps are already exactly 0
    joint_k3 = (torch.exp(joint_logratio) - 1.0) - joint_logratio
    return {
        "ratio_mean": mean,
        "ratio_std": std,
        "ratio_min": torch.where(acted, ratio_min, zero),
        "ratio_max": torch.where(acted, ratio_max, zero),
        "clip_frac": clip_frac,
        "approx_kl": _masked_sum(k3, head, (0, 1)) / n_h1,
        "joint_approx_kl": _masked_sum(joint_k3, step, (0, 1)) / n,
        "max_abs_ratio_dev": torch.where(head, deviation, torch.zeros_like(deviation)).amax(),
    }
