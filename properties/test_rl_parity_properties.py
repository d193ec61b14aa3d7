"""docs/rl.md §10 items 5–6 as properties: vmap equals a Python loop, and torch.compile(fullgraph=True) equals eager,
for GAE (scalar and per-step λ), the episode layout, the three reward modes, the discounted return prefix and
the PPO loss.

vmap == loop runs in float64 on drawn shapes and values. Elementwise pipelines must agree bit for bit; the PPO
loss, whose batch reductions vmap or a permutation of the env axis may reorder, to 1e-12. It is checked two
ways: permuting the B (env) axis leaves the loss, the diagnostics and the permuted gradients unchanged, and
vmap over K stacked minibatches equals a loop over them.

compiled == eager runs in float32 (rtol 1e-5, atol 1e-6) on FIXED shapes with drawn values. Each graph is
compiled once (lazily, cached at module level, dynamic=False); every later example runs under
`torch.compiler.set_stance("fail_on_recompile")`, so a guard or shape change fails the property instead of
silently recompiling. Anything that would specialise a guard (γ, λ of the episode layout, θ, the PPO
coefficients) is a fixed constant; the scalar GAE λ travels as a 0-d tensor.
"""

import math
from collections.abc import Callable
from functools import partial

import attrs
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from esper.core.actions import RELEVANCE, Op
from esper.core.gae import episode_arrays, gae
from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, ppo_loss
from esper.core.rewards import RewardComponents, RewardInputs, discounted_prefix, reward
from esper.core.rl_config import REWARD_MODES, RLConfig
from esper.core.stages import Stage

F32, F64 = torch.float32, torch.float64
CONFIGS = {mode: RLConfig(reward_mode=mode) for mode in REWARD_MODES}
DEFAULTS = CONFIGS["shaped"]
THETA = 0.01  # LifecycleConfig's default G5 threshold, fixed for the compiled graph
COEFS = PPOCoefs.from_config(DEFAULTS, entropy_coef=DEFAULTS.entropy_coef_start)
RELEVANCE_TABLE = torch.tensor([RELEVANCE[op] for op in Op], dtype=F64)  # [op, head]
unit = st.floats(0.0, 1.0)


# --- strategies ------------------------------------------------------------------------------------


def _array(draw: st.DrawFn, shape: tuple[int, ...], lo: float, hi: float, dtype: torch.dtype) -> Tensor:
    """Finite floats in [lo, hi]; width 32 so the float32 cast of the compiled properties is exact."""
    n = math.prod(shape)
    values = draw(st.lists(st.floats(lo, hi, width=32), min_size=n, max_size=n))
    return torch.tensor(values, dtype=dtype).reshape(shape)


def _ints(draw: st.DrawFn, shape: tuple[int, ...], lo: int, hi: int) -> Tensor:
    n = math.prod(shape)
    return torch.tensor(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), dtype=torch.int64).reshape(shape)


def _prefix_mask(draw: st.DrawFn, lead: tuple[int, ...], steps: int, dtype: torch.dtype) -> Tensor:
    """valid[..., t] = t < T_v per row: a kept prefix of any length 0 … T."""
    kept = _ints(draw, lead, 0, steps)
    return (torch.arange(steps) < kept[..., None]).to(dtype)


@st.composite
def gae_batches(draw: st.DrawFn, n: int | None = None, t: int | None = None, dtype: torch.dtype = F64) -> dict:
    n = n or draw(st.integers(1, 4))
    t = t or draw(st.integers(1, 10))
    return {
        "rewards": _array(draw, (n, t), -5.0, 5.0, dtype), "discounts": _array(draw, (n, t), 0.0, 1.0, dtype),
        "values": _array(draw, (n, t), -5.0, 5.0, dtype), "bootstrap": _array(draw, (n,), -5.0, 5.0, dtype),
        "lam_steps": _array(draw, (n, t), 0.0, 1.0, dtype), "lam": draw(st.floats(0.0, 1.0, width=32)),
    }


@st.composite
def episode_rows(draw: st.DrawFn, n: int | None = None, e: int | None = None, dtype: torch.dtype = F64) -> dict:
    """Buffer rows: a kept prefix, terminal only at the last step of an uncut row."""
    n = n or draw(st.integers(1, 4))
    e = e or draw(st.integers(1, 10))
    valid = _prefix_mask(draw, (n,), e, dtype)
    ends = _ints(draw, (n,), 0, 1).to(dtype) * valid[:, -1]
    terminal = torch.zeros(n, e, dtype=dtype)
    terminal[:, -1] = ends
    return {"rewards": _array(draw, (n, e), -5.0, 5.0, dtype), "values": _array(draw, (n, e), -5.0, 5.0, dtype),
            "valid": valid, "terminal": terminal}


@st.composite
def reward_batches(draw: st.DrawFn, n: int | None = None, s: int | None = None,
                   dtype: torch.dtype = F64) -> RewardInputs:
    """N envs' stacked step inputs with S slots: valid Stage / Op codes, fractions in [0, 1], integer params."""
    n = n or draw(st.integers(1, 4))
    s = s or draw(st.integers(1, 4))

    def flags(shape: tuple[int, ...]) -> Tensor:
        return _ints(draw, shape, 0, 1).to(dtype)

    return RewardInputs(
        stage_before=_ints(draw, (n, s), 0, len(Stage) - 1), stage_after=_ints(draw, (n, s), 0, len(Stage) - 1),
        contribution=_array(draw, (n, s), -1.0, 1.0, dtype), measured=flags((n, s)),
        acc_at_germination=_array(draw, (n, s), 0.0, 1.0, dtype),
        last_contribution=_array(draw, (n, s), -1.0, 1.0, dtype),
        seed_params_before=_ints(draw, (n, s), 0, 5_000_000).to(dtype),
        host_params=_ints(draw, (n,), 1, 5_000_000).to(dtype), acc=_array(draw, (n,), 0.0, 1.0, dtype),
        op=_ints(draw, (n,), 0, len(Op) - 1), slot=_ints(draw, (n,), 0, s - 1),
        culled_age=_ints(draw, (n,), 0, 20).to(dtype), terminal=flags((n,)), rolled_back=flags((n,)),
    )


@st.composite
def ppo_cases(draw: st.DrawFn, lead: tuple[int, ...], t: int, dtype: torch.dtype = F64) -> tuple:
    """(logp, ent_norm, value, PPOBatch) with leading dims `lead` (B, or K × B) and T steps."""
    logp_old = _array(draw, (*lead, t, 4), -5.0, 0.0, dtype)
    logp = (logp_old + _array(draw, (*lead, t, 4), -1.0, 1.0, dtype)).clamp(max=0.0)
    value_old = _array(draw, (*lead, t), -5.0, 5.0, dtype)
    value = value_old + _array(draw, (*lead, t), -0.5, 0.5, dtype)  # straddles the value clip ε_v
    batch = PPOBatch(
        logp_old=logp_old, value_old=value_old, relevance=RELEVANCE_TABLE.to(dtype)[_ints(draw, (*lead, t), 0, 3)],
        valid=_prefix_mask(draw, lead, t, dtype), advantages=_array(draw, (*lead, t), -5.0, 5.0, dtype),
        returns=_array(draw, (*lead, t), -5.0, 5.0, dtype),
    )
    return logp, _array(draw, (*lead, t, 4), 0.0, 1.0, dtype), value, batch


coefs_strategy = st.builds(PPOCoefs, clip_eps=st.floats(0.05, 0.3), value_clip_eps=st.floats(0.05, 0.3),
                           value_coef=st.floats(0.0, 1.0), entropy_coef=st.floats(0.0, 0.05))


# --- helpers ---------------------------------------------------------------------------------------


def _row(tree: object, i: int) -> object:
    return torch_pytree.tree_map(lambda leaf: leaf[i], tree)


def _assert_equal_trees(got: object, want: object) -> None:
    """Bit-identical leaves; the tree structures (RewardComponents, tuples) must match too."""
    got_leaves, got_spec = torch_pytree.tree_flatten(got)
    want_leaves, want_spec = torch_pytree.tree_flatten(want)
    assert got_spec == want_spec
    for a, b in zip(got_leaves, want_leaves, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def _assert_close_trees(got: object, want: object, rtol: float, atol: float) -> None:
    got_leaves, got_spec = torch_pytree.tree_flatten(got)
    want_leaves, want_spec = torch_pytree.tree_flatten(want)
    assert got_spec == want_spec
    for i, (a, b) in enumerate(zip(got_leaves, want_leaves, strict=True)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, i=i: f"leaf {i}: {m}")


def _loss_and_grads(fn: Callable, logp: Tensor, ent: Tensor, value: Tensor, batch: PPOBatch) -> tuple:
    """(loss, diagnostics, (∂L/∂logp, ∂L/∂ent_norm, ∂L/∂value)) with `fn` computing (loss, diagnostics)."""
    logp, ent, value = (x.clone().requires_grad_() for x in (logp, ent, value))
    loss, diag = fn(logp, ent, value, batch)
    return loss.detach(), diag, torch.autograd.grad(loss, (logp, ent, value))


# --- vmap == loop ------------------------------------------------------------------------------------


@given(gae_batches(), st.booleans())
def test_vmap_equals_loop_for_gae(tr: dict, per_step: bool):
    lam = tr["lam_steps"] if per_step else tr["lam"]
    in_dims = (0, 0, 0, 0, 0 if per_step else None)
    args = (tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"])
    batched = torch.func.vmap(gae, in_dims=in_dims)(*args, lam)
    looped = [gae(*(a[i] for a in args), lam[i] if per_step else lam) for i in range(args[0].shape[0])]
    _assert_equal_trees(batched, tuple(torch.stack(parts) for parts in zip(*looped, strict=True)))


@given(episode_rows(), unit, unit)
def test_vmap_equals_loop_for_episode_arrays(rows: dict, gamma: float, lam: float):
    args = (rows["rewards"], rows["values"], rows["valid"], rows["terminal"])
    batched = torch.func.vmap(episode_arrays, in_dims=(0, 0, 0, 0, None, None))(*args, gamma, lam)
    looped = [episode_arrays(*(a[i] for a in args), gamma, lam) for i in range(args[0].shape[0])]
    _assert_equal_trees(batched, tuple(torch.stack(parts) for parts in zip(*looped, strict=True)))


@pytest.mark.parametrize("mode", REWARD_MODES)
@given(x=reward_batches(), theta=st.floats(0.0, 0.2))
def test_vmap_equals_loop_for_rewards(mode: str, x: RewardInputs, theta: float):
    fn = partial(reward, cfg=CONFIGS[mode], min_fossilize_contribution=theta)
    batched = torch.func.vmap(fn)(x)
    assert isinstance(batched, RewardComponents)
    looped = [fn(_row(x, i)) for i in range(x.acc.shape[0])]
    _assert_equal_trees(batched, torch_pytree.tree_map(lambda *leaves: torch.stack(leaves), *looped))


@given(episode_rows(), unit)
def test_vmap_equals_loop_for_discounted_prefix(rows: dict, gamma: float):
    r, valid = rows["rewards"], rows["valid"]
    batched = torch.func.vmap(partial(discounted_prefix, gamma=gamma))(r, valid)
    _assert_equal_trees(batched, torch.stack([discounted_prefix(r[i], valid[i], gamma) for i in range(r.shape[0])]))


@st.composite
def permuted_cases(draw: st.DrawFn) -> tuple:
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    return draw(ppo_cases((b,), t)), draw(st.permutations(range(b)))


@given(permuted_cases(), coefs_strategy)
def test_ppo_loss_is_invariant_to_the_order_of_envs(case_perm: tuple, coefs: PPOCoefs):
    (logp, ent, value, batch), perm = case_perm
    index = torch.tensor(perm, dtype=torch.int64)
    fn = partial(ppo_loss, coefs=coefs)
    loss, diag, grads = _loss_and_grads(fn, logp, ent, value, batch)
    p_loss, p_diag, p_grads = _loss_and_grads(fn, logp[index], ent[index], value[index],
                                              torch_pytree.tree_map(lambda leaf: leaf[index], batch))
    _assert_close_trees((p_loss, p_diag), (loss, diag), rtol=1e-12, atol=1e-12)
    _assert_close_trees(p_grads, tuple(g[index] for g in grads), rtol=1e-12, atol=1e-12)  # grads move with envs


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
    looped = [fn(logp[k], ent[k], value[k], _row(batch, k)) for k in range(logp.shape[0])]
    want = torch_pytree.tree_map(lambda *leaves: torch.stack(leaves), *looped)
    _assert_close_trees((loss, diag), want, rtol=1e-12, atol=1e-12)


# --- compiled (fullgraph, fixed shapes) == eager -------------------------------------------------------

N_ENVS, STEPS, SLOTS = 3, 8, 3
COMPILED_TOL = {"rtol": 1e-5, "atol": 1e-6}
_COMPILED: dict[str, Callable] = {}


def _compiled_call(fn: Callable, *args: object) -> object:
    """Run `fn` compiled (fullgraph, static shapes); compile on first use, refuse any later recompile."""
    compiled = _COMPILED.get(fn.__name__)
    if compiled is None:
        compiled = _COMPILED[fn.__name__] = torch.compile(fn, fullgraph=True, dynamic=False)
        return compiled(*args)
    with torch.compiler.set_stance("fail_on_recompile"):
        return compiled(*args)


def _gae_graph(r: Tensor, d: Tensor, v: Tensor, b: Tensor, lam_steps: Tensor, lam: Tensor, raw_r: Tensor,
               raw_v: Tensor, valid: Tensor, terminal: Tensor) -> tuple:
    """vmapped gae with per-step and scalar λ, and the rollout layout episode_arrays → gae."""
    per_step = torch.func.vmap(gae)(r, d, v, b, lam_steps)
    scalar = torch.func.vmap(gae, in_dims=(0, 0, 0, 0, None))(r, d, v, b, lam)
    layout = torch.func.vmap(episode_arrays, in_dims=(0, 0, 0, 0, None, None))(
        raw_r, raw_v, valid, terminal, DEFAULTS.gamma, DEFAULTS.gae_lambda)
    er, ed, elam, ev, eb = layout
    return per_step, scalar, layout, torch.func.vmap(gae)(er, ed, ev, eb, elam)


def _reward_graph(x: RewardInputs, r: Tensor, valid: Tensor) -> tuple:
    """Every reward mode vmapped over envs, and the return prefix of the reward normaliser."""
    modes = tuple(torch.func.vmap(partial(reward, cfg=CONFIGS[m], min_fossilize_contribution=THETA))(x)
                  for m in REWARD_MODES)
    return modes, torch.func.vmap(partial(discounted_prefix, gamma=DEFAULTS.gamma))(r, valid)


def _ppo_graph(logp: Tensor, ent: Tensor, value: Tensor, batch: PPOBatch) -> tuple[Tensor, PPODiagnostics]:
    return ppo_loss(logp, ent, value, batch, COEFS)


@settings(max_examples=20)
@given(gae_batches(n=N_ENVS, t=STEPS, dtype=F32), episode_rows(n=N_ENVS, e=STEPS, dtype=F32))
def test_compiled_gae_equals_eager(tr: dict, rows: dict):
    args = (tr["rewards"], tr["discounts"], tr["values"], tr["bootstrap"], tr["lam_steps"],
            torch.tensor(tr["lam"], dtype=F32), rows["rewards"], rows["values"], rows["valid"], rows["terminal"])
    _assert_close_trees(_compiled_call(_gae_graph, *args), _gae_graph(*args), **COMPILED_TOL)


@settings(max_examples=20)
@given(reward_batches(n=N_ENVS, s=SLOTS, dtype=F32), episode_rows(n=N_ENVS, e=STEPS, dtype=F32))
def test_compiled_rewards_equal_eager(x: RewardInputs, rows: dict):
    args = (x, rows["rewards"], rows["valid"])
    got = _compiled_call(_reward_graph, *args)
    assert all(isinstance(c, RewardComponents) for c in got[0])
    _assert_close_trees(got, _reward_graph(*args), **COMPILED_TOL)


@settings(max_examples=20)
@given(ppo_cases((N_ENVS,), STEPS, dtype=F32))
def test_compiled_ppo_loss_equals_eager(case: tuple):
    got = _loss_and_grads(lambda *a: _compiled_call(_ppo_graph, *a), *case)
    assert isinstance(got[1], PPODiagnostics)
    _assert_close_trees(got, _loss_and_grads(_ppo_graph, *case), **COMPILED_TOL)


def _tiny_case() -> tuple:
    z = torch.zeros(1, 1, 4)
    batch = PPOBatch(logp_old=z, value_old=z[..., 0], relevance=torch.ones(1, 1, 4), valid=torch.ones(1, 1),
                     advantages=z[..., 0], returns=z[..., 0])
    return z, z, z[..., 0], batch


def test_every_diagnostic_is_compared():
    """The tree comparison walks PPODiagnostics' fields: a field kept out of the pytree would go unchecked."""
    _, diag = _ppo_graph(*_tiny_case())
    assert len(torch_pytree.tree_leaves(diag)) == len(attrs.fields(PPODiagnostics))
