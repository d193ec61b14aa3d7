"""One rollout batch (docs/rl.md §1.3, §8): every env steps E epochs; one batched policy act per step.

    for t in 0..E−1:
        each live env: begin_epoch → view           (train, validate, governor, tracker, record)
        all envs:      encode → normalise (frozen stats) → masks → policy.act (CPU, acting copy)
        each live env: finish_epoch(action)          (act, advance, sync_to) → reward inputs
        all envs:      vmap(reward) → store

Under DD-PPO (docs/rl.md §12) `vec` holds one rank's envs; the acting noise is still drawn for all N
envs of the batch and each env takes its own row, so env i acts alike at any world size.
"""

import time
from collections import Counter
from functools import partial

import attrs
import torch
from torch.func import vmap

from esper.core.actions import Op
from esper.core.observation import encode_observation, obs_binary, stack_inputs
from esper.core.pytree import tree_index
from esper.core.rewards import RewardComponents, reward, reward_bound
from esper.core.rewards import stack_inputs as stack_rewards
from esper.core.rl_config import RLConfig
from esper.core.running_stats import RunningStats, normalize
from esper.core.sampling import Noise, draw_noise, mask_tensors, relevance, stack_masks, to_actions
from esper.shell.nets.policy import PolicyNet
from esper.shell.rl.envs import VecEnv
from esper.shell.rl.rollout import COMPONENTS, RolloutBuffer


class RewardBoundError(AssertionError):
    """A raw reward outside its docs/rl.md §7.4 bound: a bug, never a data condition."""


@attrs.frozen
class RolloutStats:
    wall_s: float
    op_counts: dict[str, int]
    blueprint_counts: dict[str, int]
    truncations: tuple[tuple[int, int, str], ...]  # (env index in the batch, step, reason)


def collect_rollout(vec: VecEnv, policy: PolicyNet, obs_norm: RunningStats, cfg: RLConfig,
                    acting: torch.Generator, *, deterministic: bool = False) -> tuple[RolloutBuffer, RolloutStats]:
    started = time.perf_counter()
    first = vec.envs[0].trainer
    n, e = len(vec), vec.epochs
    s, k = len(first.state.slots), len(first.rules.catalogue.germinable)
    n_tempo = len(first.lifecycle_cfg.tempo_choices)
    binary = obs_binary(s, k)
    bound = reward_bound(cfg.reward_mode, s, cfg)
    min_fossil = first.lifecycle_cfg.min_fossilize_contribution
    reward_fn = vmap(partial(reward, cfg=cfg, min_fossilize_contribution=min_fossil))
    buffer = RolloutBuffer.empty(n, e, len(binary), s, k, n_tempo)
    hc = policy.initial_state(n)
    ops: Counter[str] = Counter()
    blueprints: Counter[str] = Counter()
    cuts: list[tuple[int, int, str]] = []
    for t in range(e):
        steps = vec.begin()
        for i, (env, step) in enumerate(zip(vec, steps, strict=True)):
            if step is None and env.cut_reason is not None and buffer.cut[i] is None:
                buffer.cut_env(i, t, env.cut_reason)
                cuts.append((env.index, t, env.cut_reason))
        live = [i for i, step in enumerate(steps) if step is not None]
        if not live:
            break
        # A cut env still fills its row of the batched act (its output is discarded): a live env's step.
        filled = [step if step is not None else steps[live[0]] for step in steps]
        raw = encode_observation(stack_inputs([step.obs for step in filled]), k)
        obs = normalize(obs_norm, raw, binary, cfg.obs_std_floor, cfg.obs_clip)
        masks = stack_masks([mask_tensors(step.pending.masks) for step in filled])
        noise = _local_noise(draw_noise(acting, vec.n_envs, s, k, n_tempo), vec)
        actions, logp, value, hc = policy.act(obs, masks, hc, noise, deterministic=deterministic)
        decided = [to_actions(actions[i]) for i in range(n)]
        vec.finish(steps, decided, t)
        rewards = reward_fn(stack_rewards([steps[i].reward for i in live]))
        for j, i in enumerate(live):
            step = steps[i]
            _check_bound(rewards, j, bound)
            buffer.store_decision(i, t, obs=obs[i], obs_raw=raw[i], action=actions[i], logp=logp[i],
                                  relevance=relevance(actions[i, 0]), masks=tree_index(masks, i), value=value[i])
            buffer.store_outcome(i, t, components=tree_index(rewards, j), inputs=step.reward, terminal=t == e - 1,
                                 acc=step.result.val_acc)
            ops[Op(decided[i].op).name] += 1
            if decided[i].op == Op.GERMINATE:
                blueprints[first.rules.catalogue.germinable[decided[i].blueprint].name] += 1
    return buffer, RolloutStats(time.perf_counter() - started, dict(ops), dict(blueprints), tuple(cuts))


def _local_noise(noise: Noise, vec: VecEnv) -> Noise:
    """The rows of this process's envs: the noise of env i is row i of all N envs' whatever the world size."""
    if len(vec) == vec.n_envs:
        return noise
    return tree_index(noise, torch.tensor(vec.indices))


def _check_bound(components: RewardComponents, j: int, bound: float) -> None:
    total = float(components.total[j])
    if not abs(total) <= bound:
        parts = {c: float(getattr(components, c)[j]) for c in COMPONENTS}
        raise RewardBoundError(f"raw reward {total} outside its bound ±{bound}: {parts}")
