"""The PPO update's core numerics compiled at run time (issue 17, docs/rl.md §6 "Update procedure"): a compiled
update (inductor on CPU) gives the eager update's policy and numbers, compiles once for a run's repeated updates
(the entropy anneal included), keeps DD-PPO's counts= shards summing to the whole minibatch; reduce-overhead on CUDA.

Tolerances. Compiled and eager run the same float32 operations; inductor fuses them and reassociates the sums
(the loss's and the advantage normalisation's reductions run over ≤ N·E·4 = 48 terms), so each differs by a few
float32 roundings: |δ| ≲ 48 · 6e-8 ≈ 3e-6 relative. Adam turns a gradient g into lr · g / (|g| + eps) per step;
for |g| ≫ eps a relative error of g barely moves that, so after 4 steps the parameters agree to ~1e-7 (measured
≤ 1.5e-8). Hence rtol 1e-5 and atol 1e-6 for the numbers and the parameters (atol for the values near 0).
The decisions (applied, steps taken, where a KL stop fell) must agree exactly.
"""

import contextlib
import io
import math

import attrs
import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils._pytree import tree_map

from esper.core.errors import ConfigError
from esper.core.ppo import PPOBatch, step_counts
from esper.core.pytree import tree_index
from esper.core.rl_config import RLConfig
from esper.shell.dist import process_group
from esper.shell.rl.rollout import RolloutBuffer
from esper.shell.rl.runner import build_learner
from esper.shell.rl.update import Normalisers, UpdateResult, ppo_update
from esper.shell.rl.update_numerics import UpdateNumerics, update_compile_mode
from esper.testing.ranks import run_ranks

N, E, D, S, K, T3 = 4, 3, 6, 2, 3, 3  # envs, steps, obs dim, slots, blueprints, tempo choices
RL = RLConfig(hidden=16, head_hidden=8, n_envs=N, minibatch_envs=2, ppo_epochs=2, episodes=4 * N)
RTOL, ATOL = 1e-5, 1e-6
DECISIONS = ("applied", "epochs_done", "minibatches_done", "stop_epoch", "stop_minibatch")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/shell/rl/conftest.py


def _buffer(policy: torch.nn.Module, seed: int, device: torch.device) -> RolloutBuffer:
    """A [N, E] rollout whose logp and value are the policy's own; env 3 cut after one step."""
    g = torch.Generator().manual_seed(seed)
    buf = RolloutBuffer.empty(N, E, D, S, K, T3)
    buf.obs = torch.randn(N, E, D, generator=g)
    buf.obs_raw = buf.obs.clone()
    buf.actions = torch.stack([torch.randint(0, n, (N, E), generator=g) for n in (4, S, K, T3)], -1)
    buf.relevance = (torch.rand(N, E, 4, generator=g) > 0.3).float()
    buf.op_mask[:], buf.slot_mask[:], buf.bp_mask[:], buf.tempo_mask[:] = True, True, True, True
    buf.reward = torch.randn(N, E, generator=g)
    buf.valid[:] = 1.0
    buf.terminal[:, -1] = 1.0
    on_device = tree_map(lambda x: x.to(device), (buf.obs, buf.actions, buf.masks))
    with torch.no_grad():
        logp, _, value = policy.evaluate(*on_device)
    buf.logp, buf.value = logp.cpu(), value.cpu()
    buf.cut_env(3, 2, "test")
    return buf


def _run(mode: str, device: torch.device, updates: int) -> tuple[list[UpdateResult], list[torch.Tensor]]:
    """`updates` consecutive updates of one learner (c(u) anneals between them); each one's result and the
    policy's flat parameters after it. From the second update on, any recompile raises."""
    learner = build_learner((D, S, K), RL, 0, device)
    norms, results, params = Normalisers.initial(D), [], []
    for u in range(updates):
        buf = _buffer(learner.policy, seed=u, device=device)
        strict = torch.compiler.set_stance("fail_on_recompile") if u and mode != "off" else contextlib.nullcontext()
        with strict:
            result, norms = ppo_update(learner.policy, learner.optimizer, buf, norms, RL, update=u,
                                       shuffle=torch.Generator().manual_seed(u), device=device, compile_mode=mode)
        results.append(result)
        params.append(torch.cat([p.detach().reshape(-1) for p in learner.policy.parameters()]).cpu())
    return results, params


def _numbers(result: UpdateResult) -> dict[str, float]:
    """Every float the update reports: the scalars and the last minibatch's diagnostics (per head flattened)."""
    out = {k: v for k, v in attrs.asdict(result).items() if isinstance(v, float) and k != "entropy_coef"}
    diag = result.diagnostics
    out.update({f"{h}.{k}": v for h, stats in diag["heads"].items() for k, v in stats.items()})
    out.update({k: v for k, v in diag.items() if k != "heads"})
    return out


def _assert_same_updates(compiled: tuple[list, list], eager: tuple[list, list]) -> None:
    for got, want in zip(compiled[0], eager[0], strict=True):
        assert [getattr(got, k) for k in DECISIONS] == [getattr(want, k) for k in DECISIONS]
        assert got.entropy_coef == want.entropy_coef
        numbers, expected = _numbers(got), _numbers(want)
        assert numbers.keys() == expected.keys()
        for name, value in numbers.items():
            assert math.isclose(value, expected[name], rel_tol=RTOL, abs_tol=ATOL), (name, value, expected[name])
    for got, want in zip(compiled[1], eager[1], strict=True):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_a_compiled_run_updates_like_the_eager_one_and_compiles_once():
    """Three updates, c(u) = 0.05, 0.03, 0.01: the first compiles the advantages and the loss (two graphs),
    the later ones none (`fail_on_recompile` would raise); every update matches the eager one."""
    cpu = torch.device("cpu")
    eager = _run("off", cpu, updates=3)
    assert [r.entropy_coef for r in eager[0]] == pytest.approx([0.05, 0.03, 0.01])
    torch._dynamo.reset()  # graphs another test left for these shapes would hide this run's compiles
    before = counters["stats"]["unique_graphs"]
    compiled = _run("default", cpu, updates=3)
    assert counters["stats"]["unique_graphs"] - before == 2
    _assert_same_updates(compiled, eager)


def test_dd_ppo_shards_of_a_compiled_loss_sum_to_the_whole_minibatch():
    """counts= compiled: two ranks' shard losses (and gradients) add up to the eager loss of the minibatch."""
    g = torch.Generator().manual_seed(3)
    b, t = 4, 5
    batch = PPOBatch(logp_old=-torch.rand(b, t, 4, generator=g), value_old=torch.randn(b, t, generator=g),
                     relevance=(torch.rand(b, t, 4, generator=g) > 0.3).float(),
                     valid=(torch.arange(t) < torch.tensor([[5], [2], [4], [1]])).float(),
                     advantages=torch.randn(b, t, generator=g), returns=torch.randn(b, t, generator=g))
    logp = (batch.logp_old + 0.1 * torch.randn(b, t, 4, generator=g)).requires_grad_()
    ent, value = torch.rand(b, t, 4, generator=g), torch.randn(b, t, generator=g).requires_grad_()
    compiled, eager = UpdateNumerics("default"), UpdateNumerics("off")
    whole, _ = eager.loss(logp, ent, value, batch, eager.coefs(RL, 0.02, logp.device))
    counts, coefs = step_counts(batch), compiled.coefs(RL, 0.02, logp.device)
    shards = [compiled.loss(logp[rows], ent[rows], value[rows], tree_index(batch, rows), coefs, counts)[0]
              for rows in (torch.arange(0, 2), torch.arange(2, 4))]
    torch.testing.assert_close(shards[0] + shards[1], whole, rtol=RTOL, atol=ATOL)
    want = torch.autograd.grad(whole, (logp, value))
    got = torch.autograd.grad(shards[0] + shards[1], (logp, value))
    for a, w in zip(got, want, strict=True):
        torch.testing.assert_close(a, w, rtol=RTOL, atol=ATOL)


def _ranks_update(mode: str) -> tuple[dict[str, float], list[object], bytes, int]:
    """One rank (world from the launcher environment) of a two-update DD-PPO run on the whole batch: its
    numbers, decisions and flat parameters (as `torch.save` bytes) after the second update, and the graphs
    it compiled (the second update under `fail_on_recompile`)."""
    torch.set_num_threads(1)
    with process_group() as ranks:
        learner = build_learner((D, S, K), RL, 0, torch.device("cpu"))
        norms = Normalisers.initial(D)
        for u in range(2):
            buf = _buffer(learner.policy, seed=u, device=torch.device("cpu"))
            with torch.compiler.set_stance("fail_on_recompile") if u else contextlib.nullcontext():
                result, norms = ppo_update(learner.policy, learner.optimizer, buf, norms, RL, update=u,
                                           shuffle=torch.Generator().manual_seed(u), device=torch.device("cpu"),
                                           ranks=ranks, compile_mode=mode)
    payload = io.BytesIO()
    torch.save(torch.cat([p.detach().reshape(-1) for p in learner.policy.parameters()]), payload)
    graphs = counters["stats"]["unique_graphs"]
    return _numbers(result), [getattr(result, k) for k in DECISIONS], payload.getvalue(), graphs


@pytest.mark.slow  # two fresh processes each compile (about a minute on two shared cores)
def test_two_compiled_ranks_update_like_one_eager_rank():
    """DD-PPO, W = 2, compiled: each rank compiles three graphs once (the advantages, its counts= shard loss
    and the gathered diagnostics' no-grad loss); the ranks end bitwise equal and agree with one eager rank
    (the sharded policy matmuls round differently from the whole batch's: atol 1e-5 as in test_ddppo)."""
    results, params = _run("off", torch.device("cpu"), updates=2)
    ranks = run_ranks(_ranks_update, world=2, timeout_s=300, args=("default",))
    flat = [torch.load(io.BytesIO(r[2])) for r in ranks]
    assert torch.equal(flat[0], flat[1])
    assert [r[3] for r in ranks] == [3, 3]
    torch.testing.assert_close(flat[0], params[-1], rtol=0, atol=1e-5)
    numbers, decisions = ranks[0][0], ranks[0][1]
    assert decisions == [getattr(results[-1], k) for k in DECISIONS]
    for name, value in _numbers(results[-1]).items():
        assert math.isclose(numbers[name], value, rel_tol=1e-4, abs_tol=1e-5), (name, numbers[name], value)


def test_the_compile_flag_resolves_per_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [update_compile_mode("auto", d) for d in (cpu, cuda)] == ["off", "reduce-overhead"]
    assert [update_compile_mode(m, cuda) for m in ("off", "default")] == ["off", "default"]
    with pytest.raises(ConfigError, match="--compile"):
        update_compile_mode("max-autotune", cpu)
    with pytest.raises(ValueError):
        UpdateNumerics("fast")


@pytest.mark.gpu
def test_reduce_overhead_on_cuda_updates_like_eager_and_compiles_once():
    if not torch.cuda.is_available():
        pytest.fail("the gpu marker needs a CUDA device (make test-gpu runs on the device machine)")
    cuda = torch.device("cuda")
    assert update_compile_mode("auto", cuda) == "reduce-overhead"
    _assert_same_updates(_run("reduce-overhead", cuda, updates=3), _run("off", cuda, updates=3))
