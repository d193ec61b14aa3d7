"""One PPO update over a rollout batch (docs/rl.md §6 "Update procedure"), top to bottom:

    1  the CPU buffer to the policy device
    2  reward scale from the frozen reward normaliser (first batch: merge first); r = clamp(r·scale, ±10)
    3  vmap(episode_arrays) → vmap(gae) → Â (normalised over valid steps), G; rollout explained variance
    4  for each epoch, for each minibatch of whole env sequences: evaluate, ppo_loss, backward, clip;
       one host fetch of [joint KL, loss, grad norm] → MinibatchOutcome; non-finite → abort the update
       (restore); KL over 1.5·target → stop; else step. The loop's LoopOutcome keeps every outcome.
    5  merge raw observations into the obs normaliser, discounted return prefixes into the reward one

Under DD-PPO (docs/rl.md §12) every rank holds the whole batch, so 1–3 and 5 are one rank's numbers;
in 4 each rank evaluates its shard of every minibatch and the gradients are summed across ranks
(esper.shell.rl.ddppo) before the clip and the step.

The normalisers are frozen for a whole rollout and its update (they change only in step 5).
`compile_mode` (esper.shell.rl.update_numerics): step 3 and step 4's ppo_loss run eagerly ("off": today's numbers,
bitwise) or under torch.compile(fullgraph=True), compiled once per process and shape.
"""

import copy
import math
from functools import partial
from typing import Any

import attrs
import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from esper.core.gae import explained_variance, masked_mean_var
from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, entropy_coef, step_counts
from esper.core.pytree import register_pytree, tree_index
from esper.core.rewards import discounted_prefix
from esper.core.rl_config import RLConfig
from esper.core.running_stats import RunningStats, merge
from esper.core.sampling import MaskTensors
from esper.shell.dist import Ranks
from esper.shell.fetch import fetch
from esper.shell.nets.policy import PolicyNet
from esper.shell.rl.ddppo import ShardOutputs, gather_outputs, local_rows, sum_gradients
from esper.shell.rl.rollout import RolloutBuffer
from esper.shell.rl.update_numerics import EAGER, UpdateNumerics

HEAD_NAMES = ("op", "slot", "blueprint", "tempo")


@attrs.frozen
class Normalisers:
    obs: RunningStats
    reward: RunningStats

    @classmethod
    def initial(cls, obs_dim: int) -> "Normalisers":
        return cls(RunningStats.initial(obs_dim), RunningStats.initial(1))


@attrs.frozen
class UpdateResult:
    """What one update did; tensors already fetched to Python numbers for telemetry."""

    applied: bool  # False: non-finite, the policy and optimizer were restored
    epochs_done: int
    minibatches_done: int
    stop_epoch: int | None
    stop_minibatch: int | None
    initial_logratio_max: float
    grad_norm_mean: float
    grad_norm_max: float
    reward_scale: float
    clip_frac_reward: float
    advantage_mean: float
    advantage_std: float
    return_mean: float
    return_std: float
    rollout_explained_variance: float
    entropy_coef: float
    diagnostics: dict[str, Any]  # the last minibatch's PPODiagnostics as numbers (per head as dicts)


@register_pytree
@attrs.frozen
class UpdateData:
    """The rollout batch on the policy device, as the minibatch loop indexes it (rows = envs)."""

    obs: Tensor  # [N, E, obs_dim], normalised
    actions: Tensor  # [N, E, 4]
    masks: MaskTensors
    batch: PPOBatch

    def rows(self, index: Tensor) -> "UpdateData":
        return tree_index(self, index)


@attrs.frozen
class MinibatchOutcome:
    """One minibatch's loss evaluation and clipped gradient, with the numbers the loop decides on."""

    joint_kl: float
    loss: float
    grad_norm: float  # before clipping
    max_abs_ratio_dev: float
    diagnostics: PPODiagnostics  # detached, on the policy device (of this rank's shard under DD-PPO)
    shard: ShardOutputs | None = None  # DD-PPO: this rank's outputs, for the whole minibatch's diagnostics

    @property
    def finite(self) -> bool:
        return all(math.isfinite(x) for x in (self.joint_kl, self.loss, self.grad_norm))


@attrs.frozen
class LoopOutcome:
    """What the minibatch loop did: every minibatch it evaluated, in order, and where it stopped."""

    minibatches: tuple[MinibatchOutcome, ...]
    steps: int  # optimizer steps taken
    epochs_done: int
    stop: tuple[int, int] | None = None  # (epoch, minibatch) of a KL early stop

    @property
    def finite(self) -> bool:
        """False: the last minibatch was non-finite and the loop aborted before stepping on it."""
        return all(m.finite for m in self.minibatches)

    @property
    def initial_logratio_max(self) -> float:
        return self.minibatches[0].max_abs_ratio_dev if self.minibatches else 0.0

    @property
    def grad_norms(self) -> tuple[float, ...]:
        """The pre-clip gradient norm of every finite minibatch (the KL-stopped one included)."""
        return tuple(m.grad_norm for m in self.minibatches if m.finite)

    @property
    def diagnostics(self) -> PPODiagnostics | None:
        """The last minibatch's."""
        return self.minibatches[-1].diagnostics if self.minibatches else None


def reward_scale(norm: RunningStats, cfg: RLConfig) -> Tensor:
    """1 / max(std of the discounted return, floor): a scale only, never a shift (keeps PBRS exact)."""
    return 1.0 / torch.sqrt(norm.var[0]).clamp_min(cfg.reward_std_floor)


def merge_returns(norm: RunningStats, buffer: RolloutBuffer, cfg: RLConfig) -> RunningStats:
    prefix = discounted_prefix(buffer.reward, buffer.valid, cfg.gamma)
    return merge(norm, prefix.reshape(-1, 1), buffer.valid.reshape(-1) > 0)


def advantages(buffer: RolloutBuffer, rewards: Tensor, cfg: RLConfig,
               numerics: UpdateNumerics = EAGER) -> tuple[Tensor, Tensor, Tensor]:
    """(raw A[N, E], normalised Â[N, E], returns G[N, E]) of the whole batch."""
    return numerics.advantages(rewards, buffer.value, buffer.valid, buffer.terminal, cfg)


def ppo_update(policy: PolicyNet, optimizer: torch.optim.Optimizer, buffer: RolloutBuffer,
               norms: Normalisers, cfg: RLConfig, *, update: int, shuffle: torch.Generator,
               device: torch.device, ranks: Ranks | None = None,
               compile_mode: str = "off") -> tuple[UpdateResult, Normalisers]:
    ranks, numerics = ranks or Ranks(), UpdateNumerics(compile_mode)
    first = norms.reward.count.item() == 0
    reward_norm = merge_returns(norms.reward, buffer, cfg) if first else norms.reward
    scale = reward_scale(reward_norm, cfg)
    raw = buffer.reward * scale
    rewards = raw.clamp(-cfg.reward_clip, cfg.reward_clip)
    valid = buffer.valid > 0
    clipped_frac = ((raw.abs() > cfg.reward_clip) & valid).float().sum() / valid.float().sum().clamp_min(1)
    adv_raw, adv_hat, returns = advantages(buffer, rewards, cfg, numerics)
    rollout_ev = explained_variance(buffer.value, returns, buffer.valid)
    ent_coef = entropy_coef(update, cfg.updates, cfg)
    coefs = numerics.coefs(cfg, ent_coef, device)
    data = _to_device(buffer, adv_hat, returns, device)
    saved = (copy.deepcopy(policy.state_dict()), copy.deepcopy(optimizer.state_dict()))
    loop = _minibatch_loop(policy, optimizer, data, cfg, coefs, shuffle, buffer.valid.shape[0], ranks, numerics)
    if not loop.finite:
        policy.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
    if not first:
        reward_norm = merge_returns(reward_norm, buffer, cfg)
    obs_norm = merge(norms.obs, buffer.obs_raw.reshape(-1, buffer.obs_raw.shape[-1]), valid.reshape(-1))
    adv_mean, adv_std = _masked_mean_std(adv_raw, valid)
    ret_mean, ret_std = _masked_mean_std(returns, valid)
    grad_norms = loop.grad_norms or (0.0,)
    result = UpdateResult(
        applied=loop.finite, epochs_done=loop.epochs_done, minibatches_done=loop.steps,
        stop_epoch=loop.stop[0] if loop.stop else None, stop_minibatch=loop.stop[1] if loop.stop else None,
        initial_logratio_max=loop.initial_logratio_max, grad_norm_mean=sum(grad_norms) / len(grad_norms),
        grad_norm_max=max(grad_norms), reward_scale=float(scale), clip_frac_reward=float(clipped_frac),
        advantage_mean=adv_mean, advantage_std=adv_std, return_mean=ret_mean, return_std=ret_std,
        rollout_explained_variance=float(rollout_ev), entropy_coef=ent_coef,
        diagnostics=diagnostics_dict(_whole_diagnostics(loop, data, coefs, ranks, numerics)))
    return result, Normalisers(obs_norm, reward_norm)


def _to_device(buffer: RolloutBuffer, adv_hat: Tensor, returns: Tensor, device: torch.device) -> UpdateData:
    on_cpu = UpdateData(obs=buffer.obs, actions=buffer.actions, masks=buffer.masks,
                        batch=PPOBatch(logp_old=buffer.logp, value_old=buffer.value, relevance=buffer.relevance,
                                       valid=buffer.valid, advantages=adv_hat, returns=returns))
    return tree_map(partial(torch.Tensor.to, device=device, non_blocking=True), on_cpu)


def _minibatch_loop(policy: PolicyNet, optimizer: torch.optim.Optimizer, data: UpdateData, cfg: RLConfig,
                    coefs: PPOCoefs, shuffle: torch.Generator, n_envs: int, ranks: Ranks,
                    numerics: UpdateNumerics) -> LoopOutcome:
    size = min(cfg.minibatch_envs, n_envs)
    done: list[MinibatchOutcome] = []
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(n_envs, generator=shuffle)
        for mb, start in enumerate(range(0, n_envs, size)):
            index = order[start:start + size].to(data.obs.device)
            outcome = _minibatch(policy, optimizer, data, index, cfg, coefs, ranks, numerics)
            done.append(outcome)
            steps = len(done) - 1  # every minibatch before this one stepped
            if not outcome.finite:
                return LoopOutcome(tuple(done), steps, epochs_done=epoch)
            if outcome.joint_kl > cfg.kl_stop_factor * cfg.target_kl:
                optimizer.zero_grad(set_to_none=True)
                return LoopOutcome(tuple(done), steps, epochs_done=epoch + 1, stop=(epoch, mb))
            optimizer.step()
    return LoopOutcome(tuple(done), len(done), epochs_done=cfg.ppo_epochs)


def _minibatch(policy: PolicyNet, optimizer: torch.optim.Optimizer, data: UpdateData, index: Tensor,
               cfg: RLConfig, coefs: PPOCoefs, ranks: Ranks, numerics: UpdateNumerics) -> MinibatchOutcome:
    """Evaluate, loss, backward, clip (no step): the caller steps once the outcome is known good.
    DD-PPO: this rank's rows, its share of the minibatch's loss; gradients summed over ranks first."""
    rows, counts = data.rows(index), None
    if ranks.distributed:  # the whole minibatch's (n, n_h), then this rank's rows
        counts = step_counts(rows.batch)
        rows = data.rows(local_rows(ranks, index))
    logp, ent, value = policy.evaluate(rows.obs, rows.actions, rows.masks)
    loss, diag = numerics.loss(logp, ent, value, rows.batch, coefs, counts)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    kl, total, dev = sum_gradients(ranks, list(policy.parameters()), diag.joint_approx_kl, loss,
                                   diag.max_abs_ratio_dev)
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    kl, loss_v, gn, dev = fetch((kl, total, grad_norm, dev))  # the one fetch
    shard = ShardOutputs(index, logp.detach(), ent.detach(), value.detach()) if ranks.distributed else None
    return MinibatchOutcome(kl, loss_v, gn, dev, diag, shard)


def _whole_diagnostics(loop: LoopOutcome, data: UpdateData, coefs: PPOCoefs, ranks: Ranks,
                       numerics: UpdateNumerics) -> PPODiagnostics | None:
    """The last minibatch's diagnostics; DD-PPO: recomputed from every rank's outputs on its rows (one
    all-gather), so each statistic (std, min, explained variance …) is the whole minibatch's."""
    last = loop.minibatches[-1] if loop.minibatches else None
    if last is None or last.shard is None:
        return loop.diagnostics
    logp, ent, value = gather_outputs(ranks, last.shard, data.obs.device)
    return numerics.loss(logp, ent, value, data.rows(last.shard.index).batch, coefs)[1]


def _masked_mean_std(x: Tensor, valid: Tensor) -> tuple[float, float]:
    _, mean, var = masked_mean_var(x, valid)
    return float(mean), float(var.sqrt())


def diagnostics_dict(diag: PPODiagnostics | None) -> dict[str, Any]:
    """Per-head fields as {head: {stat: value}}, scalars as numbers (JSON types for telemetry)."""
    if diag is None:
        return {"heads": {h: {} for h in HEAD_NAMES}}
    values: dict[str, Any] = fetch(attrs.asdict(diag, recurse=False))  # one copy, not one per field
    heads: dict[str, dict[str, float]] = {h: {} for h in HEAD_NAMES}
    for name in PPODiagnostics.HEAD_FIELDS:
        for h, value in zip(HEAD_NAMES, values[name], strict=True):
            heads[h][name] = value
    scalars = {name: value for name, value in values.items() if name not in PPODiagnostics.HEAD_FIELDS}
    return {"heads": heads, **scalars}
