"""docs/rl.md §10 items 5–6 as properties: vmap equals a Python loop, and torch.compile(fullgraph=True) equals eager,
for GAE (scalar and per-step λ), the episode layout, the three reward modes, the discounted return prefix, the
running-stats merge and normalisation, and the PPO loss; and each of them traces without a graph break.

vmap == loop runs in float64 on drawn shapes and values. Elementwise pipelines must agree bit for bit; the PPO
loss, whose batch reductions vmap or a permutation of the env axis may reorder, to 1e-12. It is checked two
ways: permuting the B (env) axis leaves the loss, the diagnostics and the permuted gradients unchanged, and
vmap over K stacked minibatches equals a loop over them.

compiled == eager runs in float32 (rtol 1e-5, atol 1e-6) on FIXED shapes with drawn values. Each graph is
compiled once per session (lazily, cached in `rl_cases`, dynamic=False, shared with the torch == jax
properties); every later example runs under
`torch.compiler.set_stance("fail_on_recompile")`, so a guard or shape change fails the property instead of
silently recompiling. Anything that would specialise a guard (γ, λ of the episode layout, θ, the PPO
coefficients, the normaliser's floor and clip) is a fixed constant; the scalar GAE λ travels as a 0-d tensor.
"""

from collections.abc import Callable
from functools import partial

import attrs
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given
from hypothesis import strategies as st
from profiles import scaled
from rl_cases import (
    COMPILED_TOL,
    CONFIGS,
    F32,
    N_ENVS,
    SLOTS,
    STEPS,
    assert_close_trees,
    assert_equal_trees,
    coefs_strategy,
    compiled_call,
    episode_rows,
    gae_batches,
    loss_and_grads,
    ppo_cases,
    ppo_graph,
    reward_batches,
    stats_cases,
    torch_gae_graph,
    torch_reward_graph,
    torch_stats_graph,
    unit,
)

from esper.core.gae import episode_arrays, gae
from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, ppo_loss
from esper.core.pytree import tree_index, tree_stack
from esper.core.rewards import RewardComponents, RewardInputs, discounted_prefix, reward
from esper.core.rl_config import REWARD_MODES
from esper.core.running_stats import RunningStats, merge

# --- vmap == loop ------------------------------------------------------------------------------------


@given(gae_batches(), st.booleans())
def test_vmap_equals_loop_for_gae(tr: dict, per_step: bool):
    lam = tr["lam_steps"] if per_step else tr["lam"]
    in_dims = (0, 0, 0, 0, 0 if per_step else None)
    args = (tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"])
    batched = torch.func.vmap(gae, in_dims=in_dims)(*args, lam)
    looped = [gae(*(a[i] for a in args), lam[i] if per_step else lam) for i in range(args[0].shape[0])]
    assert_equal_trees(batched, tree_stack(looped))


@given(episode_rows(), unit, unit)
def test_vmap_equals_loop_for_episode_arrays(rows: dict, gamma: float, lam: float):
    args = (rows["rewards"], rows["values"], rows["valid"], rows["terminal"])
    batched = torch.func.vmap(episode_arrays, in_dims=(0, 0, 0, 0, None, None))(*args, gamma, lam)
    looped = [episode_arrays(*(a[i] for a in args), gamma, lam) for i in range(args[0].shape[0])]
    assert_equal_trees(batched, tree_stack(looped))


@pytest.mark.parametrize("mode", REWARD_MODES)
@given(x=reward_batches(), theta=st.floats(0.0, 0.2))
def test_vmap_equals_loop_for_rewards(mode: str, x: RewardInputs, theta: float):
    fn = partial(reward, cfg=CONFIGS[mode], min_fossilize_contribution=theta)
    batched = torch.func.vmap(fn)(x)
    assert isinstance(batched, RewardComponents)
    looped = [fn(tree_index(x, i)) for i in range(x.acc.shape[0])]
    assert_equal_trees(batched, tree_stack(looped))


@given(episode_rows(), unit)
def test_vmap_equals_loop_for_discounted_prefix(rows: dict, gamma: float):
    r, valid = rows["rewards"], rows["valid"]
    batched = torch.func.vmap(partial(discounted_prefix, gamma=gamma))(r, valid)
    assert_equal_trees(batched, torch.stack([discounted_prefix(r[i], valid[i], gamma) for i in range(r.shape[0])]))


@st.composite
def permuted_cases(draw: st.DrawFn) -> tuple:
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    return draw(ppo_cases((b,), t)), draw(st.permutations(range(b)))


@given(permuted_cases(), coefs_strategy)
def test_ppo_loss_is_invariant_to_the_order_of_envs(case_perm: tuple, coefs: PPOCoefs):
    (logp, ent, value, batch), perm = case_perm
    index = torch.tensor(perm, dtype=torch.int64)
    fn = partial(ppo_loss, coefs=coefs)
    loss, diag, grads = loss_and_grads(fn, logp, ent, value, batch)
    p_loss, p_diag, p_grads = loss_and_grads(fn, logp[index], ent[index], value[index],
                                              tree_index(batch, index))
    assert_close_trees((p_loss, p_diag), (loss, diag), rtol=1e-12, atol=1e-12)
    assert_close_trees(p_grads, tuple(g[index] for g in grads), rtol=1e-12, atol=1e-12)  # grads move with envs


@st.composite
def stacked_cases(draw: st.DrawFn) -> tuple:
    k, b, t = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 5))
    return draw(ppo_cases((k, b), t))


@given(stacked_cases(), coefs_strategy)
def test_vmap_over_stacked_minibatches_equals_loop_for_ppo_loss(case: tuple, coefs: PPOCoefs):
    logp, ent, value, batch = case
    fn = partial(ppo_loss, coefs=coefs)
    loss, diag = torch.func.vmap(fn)(logp, ent, value, batch)
    assert isinstance(diag, PPODiagnostics)
    looped = [fn(logp[k], ent[k], value[k], tree_index(batch, k)) for k in range(logp.shape[0])]
    want = tree_stack(looped)
    assert_close_trees((loss, diag), want, rtol=1e-12, atol=1e-12)


@scaled(0.5)
@given(gae_batches(n=N_ENVS, t=STEPS, dtype=F32), episode_rows(n=N_ENVS, e=STEPS, dtype=F32))
def test_compiled_gae_equals_eager(tr: dict, rows: dict):
    args = (tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"], tr["lam_steps"],
            torch.tensor(tr["lam"], dtype=F32), rows["rewards"], rows["values"], rows["valid"], rows["terminal"])
    assert_close_trees(compiled_call(torch_gae_graph, *args), torch_gae_graph(*args), **COMPILED_TOL)


@scaled(0.5)
@given(reward_batches(n=N_ENVS, s=SLOTS, dtype=F32), episode_rows(n=N_ENVS, e=STEPS, dtype=F32))
def test_compiled_rewards_equal_eager(x: RewardInputs, rows: dict):
    args = (x, rows["rewards"], rows["valid"])
    got = compiled_call(torch_reward_graph, *args)
    assert all(isinstance(c, RewardComponents) for c in got[0])
    assert_close_trees(got, torch_reward_graph(*args), **COMPILED_TOL)


@scaled(0.5)
@given(ppo_cases((N_ENVS,), STEPS, dtype=F32))
def test_compiled_ppo_loss_equals_eager(case: tuple):
    got = loss_and_grads(lambda *a: compiled_call(ppo_graph, *a), *case)
    assert isinstance(got[1], PPODiagnostics)
    assert_close_trees(got, loss_and_grads(ppo_graph, *case), **COMPILED_TOL)


@scaled(0.5)
@given(stats_cases())
def test_compiled_running_stats_equal_eager(case: tuple):
    got = compiled_call(torch_stats_graph, *case)
    assert isinstance(got[0], RunningStats)
    assert_close_trees(got, torch_stats_graph(*case), **COMPILED_TOL)


def _graph_count(fn: Callable, *args: object) -> int:
    """Graphs dynamo makes of fn(*args) under fullgraph=True, which raises on any graph break.

    A counting backend, not torch._dynamo.explain: explain resets dynamo, dropping the graphs compiled above."""
    graphs = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs.append(gm)
        return gm.forward

    torch.compile(fn, fullgraph=True, dynamic=False, backend=backend)(*args)
    return len(graphs)


def test_gae_and_merge_called_directly_trace_to_one_graph():
    """The calls the compiled properties above do not make: gae as an analyst calls it (one trajectory, Python
    float bootstrap and λ) and merge as the PPO update calls it (no vmap). reward and ppo_loss are compiled
    above exactly as the rollout and the update call them; fullgraph=True raises on any graph break there too."""
    g = torch.Generator().manual_seed(0)
    r, v, d = (torch.rand(5, generator=g) for _ in range(3))
    assert _graph_count(gae, r, d, v, 0.5, 0.9) == 1
    stats, rows = RunningStats.initial(3), torch.rand(4, 3, generator=g)
    assert _graph_count(merge, stats, rows, torch.tensor([True, False, True, True])) == 1


def _tiny_case() -> tuple:
    z = torch.zeros(1, 1, 4)
    batch = PPOBatch(logp_old=z, value_old=z[..., 0], relevance=torch.ones(1, 1, 4), valid=torch.ones(1, 1),
                     advantages=z[..., 0], returns=z[..., 0])
    return z, z, z[..., 0], batch


def test_every_diagnostic_is_compared():
    """The tree comparison walks PPODiagnostics' fields: a field kept out of the pytree would go unchecked."""
    _, diag = ppo_graph(*_tiny_case())
    assert len(torch_pytree.tree_leaves(diag)) == len(attrs.fields(PPODiagnostics))
