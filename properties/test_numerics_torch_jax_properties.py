"""docs/rl.md §10 item 7: one source, two frameworks. GAE, the episode layout, the advantage statistics, the
rewards, the running-stats merge and normalisation and `ppo_loss` are written once over the array namespace
(`esper.core.xp`); here the same functions run on jax arrays and must agree with torch:

- float64, drawn values, a few fixed sizes (each jitted program compiles once per size): `jax.jit` of the
  function, vmapped over envs with `jax.vmap`, equals it on torch tensors under `torch.func.vmap`, to 1e-12,
  for the values, every `PPODiagnostics` field and the gradients of the loss. T stays small: jax unrolls the
  GAE recursion like torch does, and its compile time grows with T;
- float32, the fixed-shape graphs of `rl_cases`: the graph under `jax.jit` with `jax.vmap` equals the same graph
  under `torch.compile(fullgraph=True)` with `torch.func.vmap` (within the compiled tolerance). The torch graphs
  are the ones `test_rl_parity_properties` compiles, cached per session, so this file adds no torch compile.

Values cross between the frameworks through DLPack; the result pytrees (tuples, `RewardComponents`,
`RunningStats`, `PPODiagnostics`) must have the same structure on both sides.
"""

from functools import partial

import pytest

jax = pytest.importorskip("jax")  # installed in CI through the `jax` extra

import torch  # noqa: E402
import torch.utils._pytree as torch_pytree  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from profiles import scaled  # noqa: E402
from rl_cases import (  # noqa: E402
    COEFS,
    COMPILED_TOL,
    F32,
    F64,
    N_ENVS,
    SLOTS,
    STEPS,
    assert_close_trees,
    compiled_call,
    episode_rows,
    gae_batches,
    gae_graph,
    loss_and_grads,
    ppo_cases,
    ppo_graph,
    reward_batches,
    reward_graph,
    stats_cases,
    stats_graph,
    torch_gae_graph,
    torch_reward_graph,
    torch_stats_graph,
)

from esper.core.gae import episode_arrays, explained_variance, gae, normalize_advantages  # noqa: E402
from esper.core.ppo import PPOBatch, PPODiagnostics, ppo_loss  # noqa: E402
from esper.core.rewards import RewardComponents  # noqa: E402
from esper.core.xp import clip_closed  # noqa: E402

jax.config.update("jax_enable_x64", True)  # compare in float64; float32 inputs stay float32
EXACT = {"rtol": 1e-12, "atol": 1e-12}
seeds = st.integers(0, 2**31 - 1)


def to_jax(tree: object) -> object:
    return torch_pytree.tree_map(lambda t: jax.dlpack.from_dlpack(t.contiguous()), tree)


def to_torch(tree: object) -> object:
    return jax.tree_util.tree_map(torch.from_dlpack, tree)


def _jax_loss_and_grads(fn, logp, ent, value, batch) -> tuple:
    """(loss, diagnostics, (∂L/∂logp, ∂L/∂ent_norm, ∂L/∂value)) by jax autodiff, as `loss_and_grads` on torch."""
    (loss, diag), grads = jax.value_and_grad(fn, argnums=(0, 1, 2), has_aux=True)(logp, ent, value, batch)
    return loss, diag, grads


_JITTED: dict[object, object] = {}


def _jitted(key: object, build):
    """One jitted function per key for the session (a jitted closure rebuilt per example would retrace)."""
    if key not in _JITTED:
        _JITTED[key] = build()
    return _JITTED[key]


# --- float64: jax.jit(jax.vmap(f)) == torch.func.vmap(f) ----------------------------------------------------


@given(st.sampled_from([1, 9]), seeds, st.booleans())
def test_gae_agrees_across_frameworks(t: int, seed: int, per_step: bool):
    g = torch.Generator().manual_seed(seed)
    r, v = torch.randn(3, t, generator=g, dtype=F64), torch.randn(3, t, generator=g, dtype=F64)
    d = torch.rand(3, t, generator=g, dtype=F64)
    b = torch.randn(3, generator=g, dtype=F64)
    lam = torch.rand(3, t, generator=g, dtype=F64) if per_step else torch.tensor(0.97, dtype=F64)
    in_axes = (0, 0, 0, 0, 0 if per_step else None)
    want = torch.func.vmap(gae, in_axes)(r, d, v, b, lam)
    got = _jitted(("gae", per_step), lambda: jax.jit(jax.vmap(gae, in_axes)))(*to_jax((r, d, v, b, lam)))
    assert_close_trees(to_torch(got), want, **EXACT)


@given(st.sampled_from([1, 6]), seeds)
def test_episode_layout_and_advantage_statistics_agree_across_frameworks(e: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    r, v, adv = (torch.randn(3, e, generator=g, dtype=F64) for _ in range(3))
    kept = torch.randint(1, e + 1, (3,), generator=g)
    valid = (torch.arange(e)[None] < kept[:, None]).to(F64)
    terminal = torch.zeros(3, e, dtype=F64)
    terminal[:, -1] = (kept == e).to(F64)

    def pipeline(vmap, r, v, valid, terminal, adv):
        layout = vmap(episode_arrays, (0, 0, 0, 0, None, None))(r, v, valid, terminal, 0.995, 0.97)
        return layout, normalize_advantages(adv, valid), explained_variance(v, adv, valid)

    want = pipeline(torch.func.vmap, r, v, valid, terminal, adv)
    got = _jitted("episode", lambda: jax.jit(partial(pipeline, jax.vmap)))(*to_jax((r, v, valid, terminal, adv)))
    assert_close_trees(to_torch(got), want, **EXACT)


@given(ppo_cases((2,), 5))
def test_ppo_loss_diagnostics_and_gradients_agree_across_frameworks(case: tuple):
    fn = partial(ppo_loss, coefs=COEFS)
    want = loss_and_grads(fn, *case)
    got = to_torch(_jitted("ppo", lambda: jax.jit(partial(_jax_loss_and_grads, fn)))(*to_jax(case)))
    assert isinstance(got[1], PPODiagnostics)
    assert_close_trees(got, want, **EXACT)


@given(ppo_cases((3, 2), 4))
def test_ppo_loss_vmapped_over_minibatches_agrees_across_frameworks(case: tuple):
    fn = partial(ppo_loss, coefs=COEFS)
    want = torch.func.vmap(fn)(*case)
    got = to_torch(_jitted("ppo_vmap", lambda: jax.jit(jax.vmap(fn)))(*to_jax(case)))
    assert isinstance(got[1], PPODiagnostics)
    assert_close_trees(got, want, **EXACT)


# --- float32: jax.jit(graph) == torch.compile(graph, fullgraph=True) -----------------------------------------


@scaled(0.25)
@given(gae_batches(n=N_ENVS, t=STEPS, dtype=F32), episode_rows(n=N_ENVS, e=STEPS, dtype=F32))
def test_jitted_gae_equals_compiled_gae(tr: dict, rows: dict):
    args = (tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"], tr["lam_steps"],
            torch.tensor(tr["lam"], dtype=F32), rows["rewards"], rows["values"], rows["valid"], rows["terminal"])
    got = _jitted("gae_graph", lambda: jax.jit(partial(gae_graph, jax.vmap)))(*to_jax(args))
    assert_close_trees(to_torch(got), compiled_call(torch_gae_graph, *args), **COMPILED_TOL)


@scaled(0.25)
@given(reward_batches(n=N_ENVS, s=SLOTS, dtype=F32), episode_rows(n=N_ENVS, e=STEPS, dtype=F32))
def test_jitted_rewards_equal_compiled_rewards(x, rows: dict):
    args = (x, rows["rewards"], rows["valid"])
    got = to_torch(_jitted("reward_graph", lambda: jax.jit(partial(reward_graph, jax.vmap)))(*to_jax(args)))
    assert all(isinstance(c, RewardComponents) for c in got[0])
    assert_close_trees(got, compiled_call(torch_reward_graph, *args), **COMPILED_TOL)


@scaled(0.25)
@given(stats_cases())
def test_jitted_running_stats_equal_compiled_running_stats(case: tuple):
    got = _jitted("stats_graph", lambda: jax.jit(partial(stats_graph, jax.vmap)))(*to_jax(case))
    assert_close_trees(to_torch(got), compiled_call(torch_stats_graph, *case), **COMPILED_TOL)


@scaled(0.25)
@given(ppo_cases((N_ENVS,), STEPS, dtype=F32))
def test_jitted_ppo_loss_equals_compiled_ppo_loss(case: tuple):
    got = to_torch(_jitted("ppo_graph", lambda: jax.jit(partial(_jax_loss_and_grads, ppo_graph)))(*to_jax(case)))
    want = loss_and_grads(lambda *a: compiled_call(ppo_graph, *a), *case)
    assert_close_trees(got, want, **COMPILED_TOL)


def test_gradients_agree_at_the_clip_bounds():
    """A sample exactly at a clip bound gets slope 1 on both frameworks (jnp.clip alone would give 1/2)."""
    x = torch.tensor([-0.2, -0.1, 0.2, 0.3], dtype=F64, requires_grad=True)
    clip_closed(x, -0.2, 0.2).sum().backward()
    jax_slope = jax.grad(lambda a: clip_closed(a, -0.2, 0.2).sum())(to_jax(x.detach()))
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0] == to_torch(jax_slope).tolist()
    # V − V_old = ε_v exactly: the value loss's gradient runs through the clipped branch as well.
    b, t = 1, 2
    batch = PPOBatch(logp_old=torch.zeros(b, t, 4, dtype=F64), value_old=torch.zeros(b, t, dtype=F64),
                     relevance=torch.ones(b, t, 4, dtype=F64), valid=torch.ones(b, t, dtype=F64),
                     advantages=torch.ones(b, t, dtype=F64), returns=torch.full((b, t), -1.0, dtype=F64))
    value = torch.full((b, t), COEFS.value_clip_eps, dtype=F64)
    case = (torch.zeros(b, t, 4, dtype=F64), torch.zeros(b, t, 4, dtype=F64), value, batch)
    fn = partial(ppo_loss, coefs=COEFS)
    got = to_torch(jax.jit(partial(_jax_loss_and_grads, fn))(*to_jax(case)))
    assert_close_trees(got, loss_and_grads(fn, *case), **EXACT)
