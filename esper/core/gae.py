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

Every function is pure and out-of-place, and is written once over the array namespace (`esper.core.xp`): the
same source runs on torch tensors (eager, vmap-able over envs, accepted by torch.compile(fullgraph=True)) and on
jax arrays (jax.jit, jax.vmap).
"""

from esper.core.xp import Array, namespace, stop_gradient

_NORM_EPS = 1e-8
_EV_MIN_VAR = 1e-8


def gae(rewards: Array, discounts: Array, values: Array, bootstrap: Array | float, lam: float | Array,
        stop_target_gradients: bool = True) -> tuple[Array, Array]:
    """(advantages[T], returns[T]) of one trajectory; `lam` is a scalar or a per-step array[T].

    T is static (the last dimension): the backward recursion is unrolled in Python, which vmap, jit and
    compile(fullgraph) all trace without a data-dependent loop.
    """
    xp = namespace(values)
    if isinstance(bootstrap, int | float):
        bootstrap = xp.full_like(values[:1], bootstrap)  # values' dtype and device
    else:
        bootstrap = xp.reshape(xp.astype(bootstrap, values.dtype), (1,))
    if stop_target_gradients:  # the targets are constants for the critic (rlax's stop_target_gradients)
        values, bootstrap = stop_gradient(values), stop_gradient(bootstrap)
    steps = rewards.shape[-1]
    v_next = xp.concat([values[1:], bootstrap])
    delta = rewards + discounts * v_next - values
    decay = discounts * (xp.ones_like(rewards) * lam)
    acc = delta[steps - 1]
    reversed_advs = [acc]
    for t in range(steps - 2, -1, -1):
        acc = delta[t] + decay[t] * acc
        reversed_advs.append(acc)
    advantages = xp.stack(reversed_advs[::-1])
    return advantages, advantages + values


def episode_arrays(rewards: Array, values: Array, valid: Array, terminal: Array, gamma: float,
                   lam: float) -> tuple[Array, Array, Array, Array, Array]:
    """GAE inputs (r, d, λ_t, v, bootstrap) of one buffer row of E steps (docs/rl.md §5, episode layout).

    `valid` marks the kept prefix (bool or 0/1 float); `values[T_v]` of a cut episode is the stored
    bootstrap V(o_{T_v}) and is kept, every value beyond it becomes 0; `terminal` may only be set at
    the last step of an uncut episode.
    """
    xp = namespace(values)
    keep = xp.astype(valid, values.dtype)
    keep_next = xp.concat([keep[1:], xp.zeros_like(keep[:1])])  # valid_E := 0
    # t ≤ T_v: kept steps plus the one after the prefix (valid_{−1} := 1), which carries V(o_{T_v}).
    keep_value = xp.maximum(keep, xp.concat([xp.ones_like(keep[:1]), keep[:-1]]))
    # where, not multiply: padded garbage (even NaN) must not survive as 0 · NaN.
    r = xp.where(keep > 0, rewards, xp.zeros_like(rewards))
    d = gamma * keep * (1.0 - xp.astype(terminal, values.dtype))
    lam_t = lam * keep_next
    v = xp.where(keep_value > 0, values, xp.zeros_like(values))
    return r, d, lam_t, v, xp.zeros_like(values[0])


def masked_mean_var(x: Array, valid: Array) -> tuple[Array, Array, Array]:
    """(mask, masked mean, masked Bessel variance); invalid entries are replaced, never multiplied."""
    xp = namespace(x)
    mask = valid > 0
    n = xp.sum(xp.astype(mask, x.dtype))
    x0 = xp.where(mask, x, xp.zeros_like(x))
    mean = xp.sum(x0) / xp.clip(n, min=1.0)
    dev = xp.where(mask, x - mean, xp.zeros_like(x))
    var = xp.sum(dev * dev) / xp.clip(n - 1.0, min=1.0)
    return mask, mean, var


def normalize_advantages(adv: Array, valid: Array) -> Array:
    """Â = (A − μ)/(σ + 1e-8) over the valid entries of the whole batch; invalid entries → 0."""
    xp = namespace(adv)
    mask, mean, var = masked_mean_var(adv, valid)
    normed = (adv - mean) / (xp.sqrt(var) + _NORM_EPS)
    return xp.where(mask, normed, xp.zeros_like(normed))


def explained_variance(values: Array, returns: Array, valid: Array) -> Array:
    """1 − Var(G − V)/Var(G) over valid entries; 0 when Var(G) ≤ 1e-8 (nothing to explain)."""
    xp = namespace(values)
    _, _, var_g = masked_mean_var(returns, valid)
    _, _, var_res = masked_mean_var(returns - values, valid)
    ev = 1.0 - var_res / xp.clip(var_g, min=_EV_MIN_VAR)
    return xp.where(var_g > _EV_MIN_VAR, ev, xp.zeros_like(ev))
