"""Shared cases of the RL numerics properties: Hypothesis strategies, pytree comparisons, and the fixed-shape
graphs that `test_rl_parity_properties` (compiled == eager) and `test_numerics_torch_jax_properties` (torch ==
jax) both run, so each graph is compiled once per session.

The graphs take the framework's `vmap` as their first argument (`torch.func.vmap` and `jax.vmap` share the
signature `vmap(fn, in_axes)`), so torch and jax run literally the same code around the same core functions.
"""

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.utils._pytree as torch_pytree
from hypothesis import strategies as st
from torch import Tensor

from esper.core.actions import RELEVANCE, Op
from esper.core.gae import episode_arrays, gae
from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, ppo_loss
from esper.core.rewards import RewardInputs, discounted_prefix, reward
from esper.core.rl_config import REWARD_MODES, RLConfig
from esper.core.running_stats import RunningStats, merge, normalize
from esper.core.stages import Stage

F32, F64 = torch.float32, torch.float64
CONFIGS = {mode: RLConfig(reward_mode=mode) for mode in REWARD_MODES}
DEFAULTS = CONFIGS["shaped"]
THETA = 0.01  # LifecycleConfig's default G5 threshold, fixed for the compiled graph
COEFS = PPOCoefs.from_config(DEFAULTS, entropy_coef=DEFAULTS.entropy_coef_start)
RELEVANCE_TABLE = torch.tensor([RELEVANCE[op] for op in Op], dtype=F64)  # [op, head]
STD_FLOOR, OBS_CLIP = 1e-2, 5.0
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


def assert_equal_trees(got: object, want: object) -> None:
    """Bit-identical leaves; the tree structures (RewardComponents, tuples) must match too."""
    got_leaves, got_spec = torch_pytree.tree_flatten(got)
    want_leaves, want_spec = torch_pytree.tree_flatten(want)
    assert got_spec == want_spec
    for a, b in zip(got_leaves, want_leaves, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def assert_close_trees(got: object, want: object, rtol: float, atol: float) -> None:
    got_leaves, got_spec = torch_pytree.tree_flatten(got)
    want_leaves, want_spec = torch_pytree.tree_flatten(want)
    assert got_spec == want_spec
    for i, (a, b) in enumerate(zip(got_leaves, want_leaves, strict=True)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, i=i: f"leaf {i}: {m}")


def loss_and_grads(fn: Callable, logp: Tensor, ent: Tensor, value: Tensor, batch: PPOBatch) -> tuple:
    """(loss, diagnostics, (∂L/∂logp, ∂L/∂ent_norm, ∂L/∂value)) with `fn` computing (loss, diagnostics)."""
    logp, ent, value = (x.clone().requires_grad_() for x in (logp, ent, value))
    loss, diag = fn(logp, ent, value, batch)
    return loss.detach(), diag, torch.autograd.grad(loss, (logp, ent, value))


# --- fixed-shape graphs, compiled once (fullgraph, static shapes) ---------------------------------------

N_ENVS, STEPS, SLOTS, DIM, ROWS = 3, 8, 3, 4, 5
COMPILED_TOL = {"rtol": 1e-5, "atol": 1e-6}
_COMPILED: dict[Callable, Callable] = {}


def compiled_call(fn: Callable, *args: object) -> object:
    """Run `fn` compiled (fullgraph, static shapes); compile on first use, refuse any later recompile."""
    compiled = _COMPILED.get(fn)
    if compiled is None:
        compiled = _COMPILED[fn] = torch.compile(fn, fullgraph=True, dynamic=False)
        return compiled(*args)
    with torch.compiler.set_stance("fail_on_recompile"):
        return compiled(*args)


def gae_graph(vmap: Callable, r: Any, d: Any, v: Any, b: Any, lam_steps: Any, lam: Any, raw_r: Any, raw_v: Any,
              valid: Any, terminal: Any) -> tuple:
    """vmapped gae with per-step and scalar λ, and the rollout layout episode_arrays → gae."""
    per_step = vmap(gae)(r, d, v, b, lam_steps)
    scalar = vmap(gae, (0, 0, 0, 0, None))(r, d, v, b, lam)
    layout = vmap(episode_arrays, (0, 0, 0, 0, None, None))(raw_r, raw_v, valid, terminal, DEFAULTS.gamma,
                                                            DEFAULTS.gae_lambda)
    er, ed, elam, ev, eb = layout
    return per_step, scalar, layout, vmap(gae)(er, ed, ev, eb, elam)


def reward_graph(vmap: Callable, x: RewardInputs, r: Any, valid: Any) -> tuple:
    """Every reward mode vmapped over envs, and the return prefix of the reward normaliser."""
    modes = tuple(vmap(partial(reward, cfg=CONFIGS[m], min_fossilize_contribution=THETA))(x) for m in REWARD_MODES)
    return modes, vmap(partial(discounted_prefix, gamma=DEFAULTS.gamma))(r, valid)


def stats_graph(vmap: Callable, stats: RunningStats, x: Any, valid: Any, obs: Any, binary: Any) -> tuple:
    """Per-env running stats merged with a batch of rows, then used to normalise one observation per env."""
    merged = vmap(merge)(stats, x, valid)
    return merged, vmap(partial(normalize, std_floor=STD_FLOOR, clip=OBS_CLIP))(merged, obs, binary)


def ppo_graph(logp: Any, ent: Any, value: Any, batch: PPOBatch) -> tuple[Any, PPODiagnostics]:
    return ppo_loss(logp, ent, value, batch, COEFS)


def torch_gae_graph(*args: Tensor) -> tuple:
    return gae_graph(torch.func.vmap, *args)


def torch_reward_graph(x: RewardInputs, r: Tensor, valid: Tensor) -> tuple:
    return reward_graph(torch.func.vmap, x, r, valid)


def torch_stats_graph(*args: Any) -> tuple:
    return stats_graph(torch.func.vmap, *args)


@st.composite
def stats_cases(draw: st.DrawFn, dtype: torch.dtype = F32) -> tuple:
    """(stats[N, D], rows[N, R, D], valid[N, R], obs[N, D], binary[N, D]) at the fixed graph shapes."""
    stats = RunningStats(mean=_array(draw, (N_ENVS, DIM), -3.0, 3.0, dtype),
                         var=_array(draw, (N_ENVS, DIM), 0.0, 4.0, dtype),
                         count=_ints(draw, (N_ENVS,), 0, 50).to(dtype))
    valid = _ints(draw, (N_ENVS, ROWS), 0, 1) > 0
    binary = _ints(draw, (N_ENVS, DIM), 0, 1) > 0
    return (stats, _array(draw, (N_ENVS, ROWS, DIM), -5.0, 5.0, dtype), valid,
            _array(draw, (N_ENVS, DIM), -10.0, 10.0, dtype), binary)
