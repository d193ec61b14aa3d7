"""docs/rl.md §5–7 numerics written once for torch and jax (esper.core.xp): the shared gae, ppo_loss, reward and
running-stats merge against the torch-only implementations they replaced, same process, eager and compiled.

    python benchmarks/bench_shared_numerics.py [--device cpu] [--threads 1] [--rounds 7] [--calls 30] [--updates 3]
                                              [--out benchmarks/results]

The baseline is the torch code as it was before the array namespace (copied below, `old_*`). Each workload is
what the RL loop runs: vmap(episode_arrays) → vmap(gae) over N envs × E steps, ppo_loss forward + backward on a
minibatch, vmap(reward) over N envs, and the merge of a rollout's rows into the observation normaliser.
Printed per workload: the time of one call of each, eager and under torch.compile(fullgraph=True), the ratio
shared / old (> 1: the shared source is slower), and the seconds dynamo + AOT autograd take to trace each
(fullgraph; a graph break raises); the record (benchmarks/_record.py) holds the same numbers.

Then the whole PPO update as a run does it (esper.shell.rl.update.ppo_update: default RLConfig and policy, N × E
rollout, every epoch and minibatch, no KL stop), eager against its compiled mode (`--compile auto` on CUDA:
reduce-overhead; default on CPU): ms per update over --updates updates after one warm-up, and the warm-up's
seconds (the compile). --updates 0 skips it.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch._functorch.config
import torch._inductor.config
from _record import add_out_argument, write_record
from torch import Tensor
from torch.func import vmap
from torch.utils._pytree import tree_map

from esper.core.gae import episode_arrays, gae
from esper.core.observation import obs_dim
from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, ppo_loss
from esper.core.rewards import RewardComponents, RewardInputs, reward
from esper.core.rl_config import RLConfig
from esper.core.running_stats import RunningStats, merge
from esper.core.sampling import relevance
from esper.core.stages import Stage
from esper.shell.rl.rollout import RolloutBuffer
from esper.shell.rl.runner import build_learner
from esper.shell.rl.update import ppo_update

N_ENVS, STEPS, MINIBATCH, SLOTS, FEATURES = 8, 50, 4, 3, 84
CFG = RLConfig()
THETA = 0.01

# --- the baseline: the torch-only implementations before the array namespace ----------------------------


def old_gae(rewards: Tensor, discounts: Tensor, values: Tensor, bootstrap: Tensor, lam: Tensor) -> tuple:
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


def old_episode_arrays(rewards: Tensor, values: Tensor, valid: Tensor, terminal: Tensor, gamma: float,
                       lam: float) -> tuple:
    keep = valid.to(values.dtype)
    keep_next = torch.cat([keep[1:], keep.new_zeros(1)])
    keep_value = torch.maximum(keep, torch.cat([keep.new_ones(1), keep[:-1]]))
    r = torch.where(keep > 0, rewards, torch.zeros_like(rewards))
    d = gamma * keep * (1.0 - terminal.to(values.dtype))
    v = torch.where(keep_value > 0, values, torch.zeros_like(values))
    return r, d, lam * keep_next, v, values.new_zeros(())


def old_masked_mean_var(x: Tensor, valid: Tensor) -> tuple:
    mask = valid > 0
    n = mask.to(x.dtype).sum()
    mean = torch.where(mask, x, torch.zeros_like(x)).sum() / n.clamp_min(1.0)
    dev = torch.where(mask, x - mean, torch.zeros_like(x))
    return mask, mean, (dev * dev).sum() / (n - 1.0).clamp_min(1.0)


def old_explained_variance(values: Tensor, returns: Tensor, valid: Tensor) -> Tensor:
    _, _, var_g = old_masked_mean_var(returns, valid)
    _, _, var_res = old_masked_mean_var(returns - values, valid)
    ev = 1.0 - var_res / var_g.clamp_min(1e-8)
    return torch.where(var_g > 1e-8, ev, torch.zeros_like(ev))


def _msum(x: Tensor, mask: Tensor, dims: tuple[int, ...]) -> Tensor:
    return torch.where(mask, x, torch.zeros_like(x)).sum(dims)


def old_ppo_loss(logp: Tensor, ent_norm: Tensor, value: Tensor, batch: PPOBatch, coefs: PPOCoefs) -> tuple:
    step = batch.valid > 0
    head = step[..., None] & (batch.relevance > 0)
    n = step.to(value.dtype).sum().clamp_min(1.0)
    n_h = head.to(value.dtype).sum((0, 1))
    logratio = torch.where(head, logp - batch.logp_old, torch.zeros_like(logp))
    ratio = torch.exp(logratio)
    adv = torch.where(step, batch.advantages, torch.zeros_like(batch.advantages))[..., None]
    clipped = ratio.clamp(1.0 - coefs.clip_eps, 1.0 + coefs.clip_eps)
    head_policy = _msum(torch.maximum(-ratio * adv, -clipped * adv), head, (0, 1)) / n
    policy_loss = head_policy.sum()
    v, v_old, g = (torch.where(step, x, torch.zeros_like(x)) for x in (value, batch.value_old, batch.returns))
    v_clipped = v_old + (v - v_old).clamp(-coefs.value_clip_eps, coefs.value_clip_eps)
    value_loss = 0.5 * _msum(torch.maximum((v - g) ** 2, (v_clipped - g) ** 2), step, (0, 1)) / n
    entropy = _msum(ent_norm, head, (0, 1)) / n_h.clamp_min(1.0)
    entropy_loss = -coefs.entropy_coef * entropy.sum()
    loss = policy_loss + coefs.value_coef * value_loss + entropy_loss
    diag = _old_diagnostics(ratio.detach(), logratio.detach(), head, step, n, n_h, coefs.clip_eps)
    value_d = value.detach()
    value_mean = _msum(value_d, step, (0, 1)) / n
    dev = torch.where(step, value_d - value_mean, torch.zeros_like(value_d))
    value_std = ((dev * dev).sum() / (step.to(value.dtype).sum() - 1.0).clamp_min(1.0)).sqrt()
    return loss, PPODiagnostics(
        **diag, entropy=entropy.detach(), policy_loss=head_policy.detach(), relevant_frac=n_h / n,
        total_policy_loss=policy_loss.detach(), value_loss=value_loss.detach(), entropy_loss=entropy_loss.detach(),
        loss=loss.detach(), value_mean=value_mean, value_std=value_std,
        explained_variance=old_explained_variance(value_d, batch.returns, batch.valid))


def _old_diagnostics(ratio: Tensor, logratio: Tensor, head: Tensor, step: Tensor, n: Tensor, n_h: Tensor,
                     clip_eps: float) -> dict[str, Tensor]:
    n_h1 = n_h.clamp_min(1.0)
    acted, zero = n_h > 0, torch.zeros_like(n_h)
    mean = _msum(ratio, head, (0, 1)) / n_h1
    dev = torch.where(head, ratio - mean, torch.zeros_like(ratio))
    inf = torch.full_like(ratio, float("inf"))
    deviation = (ratio - 1.0).abs()
    joint = logratio.sum(-1)
    return {
        "ratio_mean": mean, "ratio_std": ((dev * dev).sum((0, 1)) / (n_h - 1.0).clamp_min(1.0)).sqrt(),
        "ratio_min": torch.where(acted, torch.where(head, ratio, inf).amin((0, 1)), zero),
        "ratio_max": torch.where(acted, torch.where(head, ratio, -inf).amax((0, 1)), zero),
        "clip_frac": _msum((deviation > clip_eps).to(ratio.dtype), head, (0, 1)) / n_h1,
        "approx_kl": _msum((ratio - 1.0) - logratio, head, (0, 1)) / n_h1,
        "joint_approx_kl": _msum((torch.exp(joint) - 1.0) - joint, step, (0, 1)) / n,
        "max_abs_ratio_dev": torch.where(head, deviation, torch.zeros_like(deviation)).amax(),
    }


def old_reward_shaped(x: RewardInputs, cfg: RLConfig, threshold: float) -> RewardComponents:
    gain = torch.clamp(x.acc.unsqueeze(-1) - x.acc_at_germination, min=0.0)
    shrunk = torch.sqrt(torch.clamp(x.contribution * gain, min=0.0))
    c_hat = torch.where(x.contribution <= gain, x.contribution, shrunk)
    per_slot = x.measured * torch.clamp(c_hat, -cfg.contribution_cap, cfg.contribution_cap)
    contribution = torch.clamp(cfg.contribution_weight * per_slot.sum(-1), -cfg.contribution_total_cap,
                               cfg.contribution_total_cap)
    phi = torch.tensor(cfg.potentials, dtype=x.acc.dtype, device=x.acc.device)
    pbrs = cfg.gamma * phi[x.stage_after].sum(-1) * (1.0 - x.terminal) - phi[x.stage_before].sum(-1)
    ratio = x.seed_params_before.sum(-1) / torch.clamp(x.host_params, min=1.0)
    rent = -torch.clamp(cfg.rent_weight * torch.log1p(ratio), max=cfg.rent_cap)
    good = (x.stage_after == int(Stage.FOSSILIZED)) & (x.last_contribution >= threshold)
    fossils = good.to(x.acc.dtype).sum(-1)
    terminal = x.terminal * (cfg.terminal_acc_weight * x.acc + cfg.terminal_fossil_weight * fossils)
    governor = -cfg.governor_penalty * x.rolled_back
    zero = torch.zeros_like(x.acc)
    total = contribution + pbrs + rent + terminal + governor + zero
    return RewardComponents(total=total, contribution=contribution, pbrs=pbrs, rent=rent, terminal=terminal,
                            governor=governor, early_cull=zero)


def old_merge(stats: RunningStats, x: Tensor, valid: Tensor) -> RunningStats:
    dtype = stats.mean.dtype
    x = x.to(dtype)
    mask = valid.unsqueeze(-1)
    n_b = valid.to(dtype).sum(-1).unsqueeze(-1)
    zeros = torch.zeros_like(x)
    mean_b = torch.where(mask, x, zeros).sum(-2) / n_b.clamp(min=1.0)
    m2_b = torch.where(mask, (x - mean_b.unsqueeze(-2)) ** 2, zeros).sum(-2)
    n_a = stats.count.unsqueeze(-1)
    total = n_a + n_b
    frac = n_b / total.clamp(min=1.0)
    delta = mean_b - stats.mean
    var = (stats.var * n_a + m2_b + delta * delta * n_a * frac) / total.clamp(min=1.0)
    has_rows = n_b > 0
    return RunningStats(mean=torch.where(has_rows, stats.mean + delta * frac, stats.mean),
                        var=torch.where(has_rows, var, stats.var), count=stats.count + n_b.squeeze(-1))


# --- workloads: (old, shared) callables and their inputs --------------------------------------------------


def _advantages(layout: Callable, estimate: Callable) -> Callable:
    def run(r: Tensor, v: Tensor, valid: Tensor, terminal: Tensor) -> tuple:
        er, ed, elam, ev, eb = vmap(partial(layout, gamma=CFG.gamma, lam=CFG.gae_lambda))(r, v, valid, terminal)
        return vmap(estimate)(er, ed, ev, eb, elam)

    return run


COEFS = PPOCoefs.from_config(CFG, 0.01)


def _loss_step(loss_fn: Callable) -> Callable:
    def run(logp: Tensor, ent: Tensor, value: Tensor, batch: PPOBatch) -> Tensor:
        return loss_fn(logp, ent, value, batch, COEFS)[0]

    return run


def _inputs(device: torch.device) -> dict[str, tuple]:
    g = torch.Generator().manual_seed(0)

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g).to(device)

    def codes(hi: int, *shape: int) -> Tensor:
        return torch.randint(0, hi, shape, generator=g).to(device)

    valid = (torch.arange(STEPS)[None] < torch.randint(STEPS // 2, STEPS + 1, (N_ENVS, 1), generator=g)).float()
    terminal = torch.zeros(N_ENVS, STEPS)
    terminal[:, -1] = valid[:, -1]
    lead = (MINIBATCH, STEPS)
    batch = PPOBatch(logp_old=-u(*lead, 4), value_old=u(*lead), relevance=(u(*lead, 4) > 0.3).float(),
                     valid=valid[:MINIBATCH].to(device), advantages=u(*lead) - 0.5, returns=u(*lead))
    x = RewardInputs(stage_before=codes(len(Stage), N_ENVS, SLOTS), stage_after=codes(len(Stage), N_ENVS, SLOTS),
                     contribution=u(N_ENVS, SLOTS) - 0.5, measured=(u(N_ENVS, SLOTS) > 0.5).float(),
                     acc_at_germination=u(N_ENVS, SLOTS), last_contribution=u(N_ENVS, SLOTS),
                     seed_params_before=1e4 * u(N_ENVS, SLOTS), host_params=1e6 * u(N_ENVS) + 1,
                     acc=u(N_ENVS), op=codes(5, N_ENVS), slot=codes(SLOTS, N_ENVS), culled_age=10 * u(N_ENVS),
                     terminal=(u(N_ENVS) > 0.5).float(), rolled_back=(u(N_ENVS) > 0.9).float())
    stats = RunningStats.initial(FEATURES, device=device)
    return {
        "gae": (u(N_ENVS, STEPS), u(N_ENVS, STEPS), valid.to(device), terminal.to(device)),
        "ppo_loss": (batch.logp_old + 0.1 * u(*lead, 4), u(*lead, 4), u(*lead), batch),
        "reward": (x,),
        "merge": (stats, u(N_ENVS * STEPS, FEATURES), u(N_ENVS * STEPS) > 0.1),
    }


WORKLOADS: dict[str, tuple[Callable, Callable]] = {
    "gae": (_advantages(old_episode_arrays, old_gae), _advantages(episode_arrays, gae)),
    "ppo_loss": (_loss_step(old_ppo_loss), _loss_step(ppo_loss)),
    "reward": (vmap(partial(old_reward_shaped, cfg=CFG, threshold=THETA)),
               vmap(partial(reward, cfg=CFG, min_fossilize_contribution=THETA))),
    "merge": (old_merge, merge),
}


# --- measurement -------------------------------------------------------------------------------------------


def _call(fn: Callable, args: tuple, backward: bool, sync: Callable[[], None]) -> None:
    out = fn(*args)
    if backward:
        out.backward()
    sync()


def _compiled(fn: Callable, args: tuple, backward: bool, sync: Callable[[], None]) -> Callable:
    """fn under torch.compile(fullgraph=True) (a graph break raises), called once."""
    compiled = torch.compile(fn, fullgraph=True, dynamic=False)
    _call(compiled, args, backward, sync)
    return compiled


def _trace_seconds(pair: tuple[Callable, Callable], args: tuple, backward: bool) -> tuple[float, float]:
    """Seconds to trace each of the pair (dynamo + AOT autograd, backend aot_eager), the better of both orders.

    Tracing is where the namespace's wrappers could cost; inductor's code generation then sees the same
    graph, and its on-disk kernel cache would flatter whichever of the two compiled second.
    """
    best = [float("inf"), float("inf")]
    for order in ((0, 1), (1, 0)):
        torch._dynamo.reset()
        for i in order:
            started = time.perf_counter()
            _call(torch.compile(pair[i], fullgraph=True, dynamic=False, backend="aot_eager"), args, backward,
                  lambda: None)
            best[i] = min(best[i], time.perf_counter() - started)
    return best[0], best[1]


def _per_call_us(pair: tuple[Callable, Callable], args: tuple, backward: bool, sync: Callable[[], None],
                 rounds: int, calls: int) -> tuple[float, float]:
    """Median over rounds of the mean µs per call; old and shared alternate, so load drift hits both alike."""
    samples: tuple[list[float], list[float]] = ([], [])
    for fn in pair:  # warm-up
        for _ in range(calls):
            _call(fn, args, backward, sync)
    for _ in range(rounds):
        for fn, out in zip(pair, samples, strict=True):
            started = time.perf_counter()
            for _ in range(calls):
                _call(fn, args, backward, sync)
            out.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples[0]), statistics.median(samples[1])


def _row(name: str, mode: str, old: float, new: float, unit: str) -> dict[str, float | str]:
    ratio = new / old
    print(f"{name:9s} {mode:9s} old {old:9.2f} {unit:2s}  shared {new:9.2f} {unit:2s}  ratio shared/old {ratio:.2f}x")
    return {"workload": name, "mode": mode, "unit": unit, "old": old, "shared": new, "ratio": ratio}


def measure(device: torch.device, rounds: int, calls: int) -> list[dict[str, float | str]]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    inputs, rows = _inputs(device), []
    for name, pair in WORKLOADS.items():
        args = inputs[name]
        backward = name == "ppo_loss"
        if backward:
            args = (*(a.clone().requires_grad_() for a in args[:3]), args[3])
        rows.append(_row(name, "eager", *_per_call_us(pair, args, backward, sync, rounds, calls), "us"))
        compiled = tuple(_compiled(fn, args, backward, sync) for fn in pair)
        rows.append(_row(name, "compiled", *_per_call_us(compiled, args, backward, sync, rounds, calls), "us"))
        rows.append(_row(name, "trace", *_trace_seconds(pair, args, backward), "s"))
    return rows


def _update_buffer(policy: torch.nn.Module, device: torch.device) -> RolloutBuffer:
    """A full N × E rollout of random decisions whose logp and value are the policy's own."""
    g = torch.Generator().manual_seed(1)
    d, blueprints = obs_dim(SLOTS, 4), 4
    buf = RolloutBuffer.empty(N_ENVS, STEPS, d, SLOTS, blueprints, 3)
    buf.obs = torch.randn(N_ENVS, STEPS, d, generator=g)
    buf.obs_raw = buf.obs.clone()
    op = torch.randint(0, 4, (N_ENVS, STEPS), generator=g)
    picks = [op] + [torch.randint(0, n, (N_ENVS, STEPS), generator=g) for n in (SLOTS, blueprints, 3)]
    buf.relevance = relevance(op)
    buf.actions = torch.stack(picks, -1) * (buf.relevance > 0).long()
    buf.op_mask[:], buf.slot_mask[:], buf.bp_mask[:], buf.tempo_mask[:] = True, True, True, True
    buf.reward, buf.valid[:], buf.terminal[:, -1] = torch.randn(N_ENVS, STEPS, generator=g), 1.0, 1.0
    with torch.no_grad():
        on_device = tree_map(lambda x: x.to(device), (buf.obs, buf.actions, buf.masks))
        buf.logp, _, buf.value = (x.cpu() for x in policy.evaluate(*on_device))
    return buf


def measure_update(device: torch.device, updates: int) -> list[dict[str, float | str]]:
    """ms per ppo_update, eager and compiled, each on its own fresh learner; the compiled warm-up's seconds."""
    rl = RLConfig(n_envs=N_ENVS, target_kl=1e9)  # no KL stop: both do every epoch's minibatches
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {}
    for name in ("off", mode):
        learner = build_learner((obs_dim(SLOTS, 4), SLOTS, 4), rl, 0, device)
        buf, norms = _update_buffer(learner.policy, device), learner.norms
        times[name] = []
        for u in range(updates + 1):
            started = time.perf_counter()
            _, norms = ppo_update(learner.policy, learner.optimizer, buf, norms, rl, update=u,
                                  shuffle=torch.Generator().manual_seed(u), device=device, compile_mode=name)
            sync()
            times[name].append(time.perf_counter() - started)
    eager, compiled = (statistics.median(times[k][1:]) * 1e3 for k in ("off", mode))
    print(f"update    {mode:9s} eager {eager:9.2f} ms  compiled {compiled:9.2f} ms  "
          f"speedup {eager / compiled:.2f}x  (compile warm-up {times[mode][0]:.1f} s)")
    return [{"workload": "update", "mode": mode, "unit": "ms", "eager": eager, "compiled": compiled,
             "speedup": eager / compiled, "warmup_s": times[mode][0]}]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--device", default="cpu")
    args.add_argument("--rounds", type=int, default=7)
    args.add_argument("--calls", type=int, default=30)
    args.add_argument("--threads", type=int, default=1,
                      help="CPU threads; 1 by default, as OpenMP spin-waits swamp the ratio on a loaded machine")
    args.add_argument("--updates", type=int, default=3, help="timed PPO updates per mode (0: skip the update)")
    add_out_argument(args)
    a = args.parse_args()
    # Both sides compile from scratch: a cached graph of one must not make the other look fast.
    torch._inductor.config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    print(f"device {device}, torch {torch.__version__}, {a.threads} CPU thread(s): N={N_ENVS} envs x E={STEPS} "
          f"steps, minibatch {MINIBATCH} envs, S={SLOTS} slots, D={FEATURES} features")
    rows = measure(device, a.rounds, a.calls)
    if a.updates:
        rows += measure_update(device, a.updates)
    write_record("bench_shared_numerics", device, key_numbers(rows), {"args": vars(a), "rows": rows}, a.out)


def key_numbers(rows: list[dict]) -> dict[str, float]:
    """shared / old per workload and mode (µs per call; trace seconds), and the update's compiled speedup."""
    out = {f"{r['workload']}_{r['mode']}_shared_vs_old": r["ratio"] for r in rows if "ratio" in r}
    out |= {f"update_{r['mode']}_speedup": r["speedup"] for r in rows if r["workload"] == "update"}
    return out


if __name__ == "__main__":
    main()
