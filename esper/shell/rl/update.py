"""One PPO update over a rollout batch (RL.md §6 "Update procedure"), top to bottom:

    1  the CPU buffer to the policy device
    2  reward scale from the frozen reward normaliser (first batch: merge first); r = clamp(r·scale, ±10)
    3  vmap(episode_arrays) → vmap(gae) → Â (normalised over valid steps), G; rollout explained variance
    4  for each epoch, for each minibatch of whole env sequences: evaluate, ppo_loss, backward, clip;
       one host fetch of [joint KL, loss, grad norm]; non-finite → abort the update (restore); KL over
       1.5·target → stop; else step
    5  merge raw observations into the obs normaliser, discounted return prefixes into the reward one

The normalisers are frozen for a whole rollout and its update (they change only in step 5).
"""

import copy
import math
from functools import partial
from typing import Any

import attrs
import torch
from torch import Tensor
from torch.func import vmap

from esper.core.gae import episode_arrays, explained_variance, gae, masked_mean_var, normalize_advantages
from esper.core.nets.policy import PolicyNet
from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, entropy_coef, ppo_loss
from esper.core.pytree import tree_index
from esper.core.rewards import discounted_prefix
from esper.core.rl_config import RLConfig
from esper.core.running_stats import RunningStats, merge
from esper.core.sampling import MaskTensors
from esper.shell.rl.rollout import RolloutBuffer

HEAD_NAMES = ("op", "slot", "blueprint", "tempo")


@attrs.frozen
class Normalisers:
    obs: RunningStats
    reward: RunningStats

    def to_dict(self) -> dict[str, Any]:
        return {"obs": self.obs.to_dict(), "reward": self.reward.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalisers":
        return cls(RunningStats.from_dict(data["obs"]), RunningStats.from_dict(data["reward"]))

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


def reward_scale(norm: RunningStats, cfg: RLConfig) -> Tensor:
    """1 / max(std of the discounted return, floor): a scale only, never a shift (keeps PBRS exact)."""
    return 1.0 / torch.sqrt(norm.var[0]).clamp_min(cfg.reward_std_floor)


def merge_returns(norm: RunningStats, buffer: RolloutBuffer, cfg: RLConfig) -> RunningStats:
    prefix = discounted_prefix(buffer.reward, buffer.valid, cfg.gamma)
    return merge(norm, prefix.reshape(-1, 1), buffer.valid.reshape(-1) > 0)


def advantages(buffer: RolloutBuffer, rewards: Tensor, cfg: RLConfig) -> tuple[Tensor, Tensor, Tensor]:
    """(raw A[N, E], normalised Â[N, E], returns G[N, E]) of the whole batch."""
    layout = vmap(partial(episode_arrays, gamma=cfg.gamma, lam=cfg.gae_lambda))
    r, d, lam_t, v, boot = layout(rewards, buffer.value, buffer.valid, buffer.terminal)
    adv, ret = vmap(gae)(r, d, v, boot, lam_t)
    valid = buffer.valid
    return adv, normalize_advantages(adv, valid), torch.where(valid > 0, ret, torch.zeros_like(ret))


def ppo_update(policy: PolicyNet, optimizer: torch.optim.Optimizer, buffer: RolloutBuffer,
               norms: Normalisers, cfg: RLConfig, *, update: int, shuffle: torch.Generator,
               device: torch.device) -> tuple[UpdateResult, Normalisers]:
    first = norms.reward.count.item() == 0
    reward_norm = merge_returns(norms.reward, buffer, cfg) if first else norms.reward
    scale = reward_scale(reward_norm, cfg)
    raw = buffer.reward * scale
    rewards = raw.clamp(-cfg.reward_clip, cfg.reward_clip)
    valid = buffer.valid > 0
    clipped_frac = ((raw.abs() > cfg.reward_clip) & valid).float().sum() / valid.float().sum().clamp_min(1)
    adv_raw, adv_hat, returns = advantages(buffer, rewards, cfg)
    rollout_ev = explained_variance(buffer.value, returns, buffer.valid)
    ent_coef = entropy_coef(update, cfg.updates, cfg)
    coefs = PPOCoefs.from_config(cfg, ent_coef)
    data = _to_device(buffer, adv_hat, returns, device)
    saved = (copy.deepcopy(policy.state_dict()), copy.deepcopy(optimizer.state_dict()))
    loop = _minibatch_loop(policy, optimizer, data, cfg, coefs, shuffle, n_envs=buffer.valid.shape[0])
    if not loop["finite"]:
        policy.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
    if not first:
        reward_norm = merge_returns(reward_norm, buffer, cfg)
    obs_norm = merge(norms.obs, buffer.obs_raw.reshape(-1, buffer.obs_raw.shape[-1]), valid.reshape(-1))
    adv_mean, adv_std = _masked_mean_std(adv_raw, valid)
    ret_mean, ret_std = _masked_mean_std(returns, valid)
    grad_norms = loop["grad_norms"] or [0.0]
    result = UpdateResult(
        applied=loop["finite"], epochs_done=loop["epochs_done"], minibatches_done=loop["minibatches"],
        stop_epoch=loop["stop"][0] if loop["stop"] else None, stop_minibatch=loop["stop"][1] if loop["stop"] else None,
        initial_logratio_max=loop["initial_logratio_max"], grad_norm_mean=sum(grad_norms) / len(grad_norms),
        grad_norm_max=max(grad_norms), reward_scale=float(scale), clip_frac_reward=float(clipped_frac),
        advantage_mean=adv_mean, advantage_std=adv_std, return_mean=ret_mean, return_std=ret_std,
        rollout_explained_variance=float(rollout_ev), entropy_coef=ent_coef,
        diagnostics=diagnostics_dict(loop["diagnostics"]))
    return result, Normalisers(obs_norm, reward_norm)


def _to_device(buffer: RolloutBuffer, adv_hat: Tensor, returns: Tensor, device: torch.device) -> dict[str, Any]:
    move = partial(torch.Tensor.to, device=device, non_blocking=True)
    masks = buffer.masks
    return {
        "obs": move(buffer.obs), "actions": move(buffer.actions),
        "masks": MaskTensors(op=move(masks.op), slot=move(masks.slot), blueprint=move(masks.blueprint),
                             tempo=move(masks.tempo)),
        "batch": PPOBatch(logp_old=move(buffer.logp), value_old=move(buffer.value), relevance=move(buffer.relevance),
                          valid=move(buffer.valid), advantages=move(adv_hat), returns=move(returns)),
    }


def _rows(data: dict[str, Any], index: Tensor) -> tuple[Tensor, Tensor, MaskTensors, PPOBatch]:
    return tree_index((data["obs"], data["actions"], data["masks"], data["batch"]), index)


def _minibatch_loop(policy: PolicyNet, optimizer: torch.optim.Optimizer, data: dict[str, Any], cfg: RLConfig,
                    coefs: PPOCoefs, shuffle: torch.Generator, n_envs: int) -> dict[str, Any]:
    size = min(cfg.minibatch_envs, n_envs)
    out: dict[str, Any] = {"finite": True, "epochs_done": 0, "minibatches": 0, "stop": None,
                           "initial_logratio_max": 0.0, "grad_norms": [], "diagnostics": None}
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(n_envs, generator=shuffle)
        for mb, start in enumerate(range(0, n_envs, size)):
            index = order[start:start + size].to(data["obs"].device)
            obs, actions, masks, batch = _rows(data, index)
            logp, ent, value = policy.evaluate(obs, actions, masks)
            loss, diag = ppo_loss(logp, ent, value, batch, coefs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            kl, loss_v, gn, dev = torch.stack([diag.joint_approx_kl, loss.detach(), grad_norm,
                                               diag.max_abs_ratio_dev]).tolist()  # the one fetch
            if epoch == 0 and mb == 0:
                out["initial_logratio_max"] = dev
            out["diagnostics"] = diag
            if not all(math.isfinite(x) for x in (kl, loss_v, gn)):
                out["finite"] = False
                return out
            out["grad_norms"].append(gn)
            if kl > cfg.kl_stop_factor * cfg.target_kl:
                optimizer.zero_grad(set_to_none=True)
                out["stop"] = (epoch, mb)
                out["epochs_done"] = epoch + 1
                return out
            optimizer.step()
            out["minibatches"] += 1
        out["epochs_done"] = epoch + 1
    return out


def _masked_mean_std(x: Tensor, valid: Tensor) -> tuple[float, float]:
    _, mean, var = masked_mean_var(x, valid)
    return float(mean), float(var.sqrt())


def diagnostics_dict(diag: PPODiagnostics | None) -> dict[str, Any]:
    """Per-head fields as {head: {stat: value}}, scalars as numbers (JSON types for telemetry)."""
    if diag is None:
        return {"heads": {h: {} for h in HEAD_NAMES}}
    heads: dict[str, dict[str, float]] = {h: {} for h in HEAD_NAMES}
    for name in PPODiagnostics.HEAD_FIELDS:
        for h, value in zip(HEAD_NAMES, getattr(diag, name).tolist(), strict=True):
            heads[h][name] = value
    scalars = {f.name: float(getattr(diag, f.name)) for f in attrs.fields(PPODiagnostics)
               if f.name not in PPODiagnostics.HEAD_FIELDS}
    return {"heads": heads, **scalars}
