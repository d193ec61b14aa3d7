r"""Generalised advantage estimation, episode layout and advantage statistics (docs/rl.md §5).

Rank-1 trajectories in the rlax convention: step t = 0 … T−1 holds the reward r_t received after
acting at t, the discount d_t = γ·(1 − terminal_t) applied to what follows t, and the value v_t the
critic gave the observation o_t. Termination lives in `discounts`; the value after the last step is
the explicit `bootstrap`. With v_next_t = v_{t+1} for t < T−1 and v_next_{T−1} = bootstrap:

    δ_t     = r_t + d_t · v_next_t − v_t
    A_{T−1} = δ_{T−1},   A_t = δ_t + d_t · λ_t · A_{t+1}
            = Σ_{k=t}^{T−1} (Π_{j=t}^{k−1} d_j λ_j) · δ_k                       (closed form)
    G_t     = A_t + v_t = r_t + d_t[(1 − λ_t) v_next_t + λ_t G_{t+1}],  G_T ≡ bootstrap

Episode layout (`episode_arrays`): a buffer row of E steps keeps T_v of them (a prefix). Rewards and
discounts vanish beyond the kept prefix, λ_t = λ·valid_{t+1} stops the recursion at the last kept
step (so padding never leaks back), and a cut episode bootstraps through v_{T_v} = V(o_{T_v}):

    full episode: A_{E−1} = r_{E−1} − v_{E−1};   cut episode: A_{T_v−1} = r + γ·V(o_{T_v}) − v

Normalisation runs once per rollout batch over valid entries only (masked sums, no host sync):
μ = Σ vA / Σ v, σ² = Σ v(A − μ)² / max(Σ v − 1, 1), Â = (A − μ) / (σ + 1e-8).

Every function is pure, out-of-place, vmap-able over envs and accepted by torch.compile(fullgraph=True).
"""

import torch
from torch import Tensor

_NORM_EPS = 1e-8
_EV_MIN_VAR = 1e-8


def gae(rewards: Tensor, discounts: Tensor, values: Tensor, bootstrap: Tensor | float, lam: float | Tensor,
        stop_target_gradients: bool = True) -> tuple[Tensor, Tensor]:
    """(advantages[T], returns[T]) of one trajectory; `lam` is a scalar or a per-step Tensor[T].

    T is static (the last dimension): the backward recursion is unrolled in Python, which both vmap
    and compile(fullgraph) trace without a data-dependent loop.
    """
    if not isinstance(bootstrap, Tensor):
        bootstrap = values.new_full((), bootstrap)
    if stop_target_gradients:  # the targets are constants for the critic (rlax's stop_target_gradients)
        values, bootstrap = values.detach(), bootstrap.detach()
    steps = rewards.shape[-1]
    lam_t = rewards.new_ones(steps) * lam
    v_next = torch.cat([values[1:], bootstrap.reshape(1).to(values.dtype)])
    delta = rewards + discounts * v_next - values
    decay = discounts * lam_t
    acc = delta[steps - 1]
    reversed_advs = [acc]
    for t in range(steps - 2, -1, -1):
        acc = delta[t] + decay[t] * acc
        reversed_advs.append(acc)
    advantages = torch.stack(reversed_advs[::-1])
    return advantages, advantages + values


def episode_arrays(rewards: Tensor, values: Tensor, valid: Tensor, terminal: Tensor, gamma: float,
                   lam: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """GAE inputs (r, d, λ_t, v, bootstrap) of one buffer row of E steps (docs/rl.md §5, episode layout).

    `valid` marks the kept prefix (bool or 0/1 float); `values[T_v]` of a cut episode is the stored
    bootstrap V(o_{T_v}) and is kept, every value beyond it becomes 0; `terminal` may only be set at
    the last step of an uncut episode.
    """
    keep = valid.to(values.dtype)
    zero = keep.new_zeros(1)
    keep_next = torch.cat([keep[1:], zero])  # valid_E := 0
    # t ≤ T_v: kept steps plus the one after the prefix (valid_{−1} := 1), which carries V(o_{T_v}).
    keep_value = torch.maximum(keep, torch.cat([keep.new_ones(1), keep[:-1]]))
    # where, not multiply: padded garbage (even NaN) must not survive as 0 · NaN.
    r = torch.where(keep > 0, rewards, torch.zeros_like(rewards))
    d = gamma * keep * (1.0 - terminal.to(values.dtype))
    lam_t = lam * keep_next
    v = torch.where(keep_value > 0, values, torch.zeros_like(values))
    return r, d, lam_t, v, values.new_zeros(())


def factored_advantages(adv: Tensor, relevance: Tensor) -> Tensor:
    """A_t · u_h(op_t) for every head h: adv[...] × relevance[..., 4] → [..., 4]."""
    return adv[..., None] * relevance


def masked_mean_var(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mask, masked mean, masked Bessel variance); invalid entries are replaced, never multiplied."""
    mask = valid > 0
    w = mask.to(x.dtype)
    n = w.sum()
    x0 = torch.where(mask, x, torch.zeros_like(x))
    mean = x0.sum() / n.clamp_min(1.0)
    dev = torch.where(mask, x - mean, torch.zeros_like(x))
    var = (dev * dev).sum() / (n - 1.0).clamp_min(1.0)
    return mask, mean, var


def normalize_advantages(adv: Tensor, valid: Tensor) -> Tensor:
    """Â = (A − μ)/(σ + 1e-8) over the valid entries of the whole batch; invalid entries → 0."""
    mask, mean, var = masked_mean_var(adv, valid)
    normed = (adv - mean) / (var.sqrt() + _NORM_EPS)
    return torch.where(mask, normed, torch.zeros_like(normed))


def explained_variance(values: Tensor, returns: Tensor, valid: Tensor) -> Tensor:
    """1 − Var(G − V)/Var(G) over valid entries; 0 when Var(G) ≤ 1e-8 (nothing to explain)."""
    _, _, var_g = masked_mean_var(returns, valid)
    _, _, var_res = masked_mean_var(returns - values, valid)
    ev = 1.0 - var_res / var_g.clamp_min(_EV_MIN_VAR)
    return torch.where(var_g > _EV_MIN_VAR, ev, torch.zeros_like(ev))
