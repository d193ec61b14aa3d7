"""DD-PPO (docs/rl.md §12): a PPO batch collected by W ranks, one update that every rank computes alike.

    collect  rank r owns envs `Ranks.shard(range(N))` (contiguous); env i keeps its seed (run seed, batch, i)
             and row i of the batch's acting noise (drawn for all N envs on every rank), so a trajectory
             does not depend on the world size
    gather   every rank's CPU rollout buffer, stats and per-env facts → the whole batch, in env order, on
             every rank; GAE, advantage normalisation, the reward scale and the normaliser merges run on it
             (every rank's statistics merged by `running_stats.merge`: the same numbers as one rank's)
    update   each minibatch (same shuffle on every rank) is split by `Ranks.shard`; rank r's loss is its
             share of the minibatch's loss (`ppo_loss(..., counts)` with the whole minibatch's n, n_h), so
             Σ_r ∇L_r = ∇L. One all-reduce (Σ) of a flat bucket [every gradient, joint KL share, loss
             share], one (max) of max|ρ − 1|; clip and step after them: every rank's policy and AdamW
             state stay bitwise equal, and the KL early stop sees the same all-reduced KL everywhere.
             The telemetry diagnostics of the last minibatch are recomputed from the gathered outputs.

One rank: every function here is the identity (no collective, no copy), so a run is today's.
"""

from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.utils._pytree as pytree
from torch import Tensor

from esper.core.errors import ConfigError
from esper.core.events import RolloutDone
from esper.shell.data_parallel import all_reduce_sums
from esper.shell.dist import Ranks
from esper.shell.rl.collect import RolloutStats
from esper.shell.rl.envs import VecEnv
from esper.shell.rl.rollout import COMPONENTS, RolloutBuffer


@attrs.frozen
class EnvFacts:
    """What `rl.rollout_done` reports of one env's episode, read from its Trainer (which stays on its rank)."""

    germinations: int
    fossilizations: int
    culls: int
    rollbacks: int
    seed_param_share: float  # fossilized params / host params
    train_flops: int  # the episode's training FLOPs: its Trainer's FlopMeter total (a fresh Trainer per episode)


def check_world(n_envs: int, minibatch_envs: int, ranks: Ranks) -> None:
    """Every rank needs at least one env of every batch and one env row of every minibatch."""
    size = min(minibatch_envs, n_envs)
    if ranks.world > size:
        raise ConfigError(f"{ranks.world} ranks need at least {ranks.world} envs per batch and per minibatch "
                          f"(--n-envs {n_envs}, --rl.minibatch_envs {minibatch_envs})")


def env_rank(ranks: Ranks, n_envs: int, env: int) -> int:
    """The rank that collects env `env` of a batch of `n_envs`."""
    return next(r for r in range(ranks.world) if env in attrs.evolve(ranks, rank=r).shard(range(n_envs)))


def env_facts(vec: VecEnv) -> list[EnvFacts]:
    out = []
    for env in vec:
        trainer = env.trainer
        fates = Counter(r.fate for r in trainer.records)
        share = float(trainer.model.param_counts().fossilized) / max(trainer.model.host_params, 1)
        out.append(EnvFacts(len(trainer.records), fates["fossilized"], fates["culled"], trainer.governor.rollbacks,
                            share, trainer.flops.total))
    return out


def gather_rollout(ranks: Ranks, buffer: RolloutBuffer, stats: RolloutStats,
                   facts: list[EnvFacts]) -> tuple[RolloutBuffer, RolloutStats, list[EnvFacts]]:
    """Every rank's rollout, concatenated in env (= rank) order, on every rank (one all-gather)."""
    if not ranks.distributed:
        return buffer, stats, facts
    parts = ranks.gather((buffer, stats, facts))
    buffers, all_stats, all_facts = zip(*parts, strict=True)
    return concat_buffers(list(buffers)), merge_stats(list(all_stats)), [f for fs in all_facts for f in fs]


def concat_buffers(buffers: list[RolloutBuffer]) -> RolloutBuffer:
    """The rows of `buffers` one after the other (reward inputs of a buffer that stored none: zeros)."""
    fields: dict[str, Any] = {}
    for field in attrs.fields(RolloutBuffer):
        if field.name not in ("cut", "inputs"):
            fields[field.name] = torch.cat([getattr(b, field.name) for b in buffers])
    template = next((b.inputs for b in buffers if b.inputs is not None), None)
    inputs = None
    if template is not None:
        filled = [b.inputs if b.inputs is not None else _zeros_like_rows(template, len(b.cut)) for b in buffers]
        inputs = pytree.tree_map(lambda *xs: torch.cat(xs), *filled)
    return RolloutBuffer(**fields, cut=[c for b in buffers for c in b.cut], inputs=inputs)


def _zeros_like_rows(tree: Any, n: int) -> Any:
    return pytree.tree_map(lambda x: x.new_zeros(n, *x.shape[1:]), tree)


def merge_stats(stats: list[RolloutStats]) -> RolloutStats:
    """Op and blueprint counts summed, truncations in env order, the slowest rank's wall time."""
    ops: Counter[str] = Counter()
    blueprints: Counter[str] = Counter()
    for s in stats:
        ops.update(s.op_counts)
        blueprints.update(s.blueprint_counts)
    return RolloutStats(max(s.wall_s for s in stats), dict(ops), dict(blueprints),
                        tuple(cut for s in stats for cut in s.truncations))


def rollout_event(batch: int, facts: Sequence[EnvFacts], buffer: RolloutBuffer, stats: RolloutStats) -> RolloutDone:
    """`rl.rollout_done` of the whole batch (every rank's envs)."""
    valid = buffer.valid > 0
    comps = buffer.components[valid]
    return RolloutDone(
        batch=batch, final_acc=tuple(buffer.final_acc.tolist()),
        raw_return=tuple((buffer.reward * valid).sum(1).tolist()), kept_steps=tuple(buffer.kept_steps().tolist()),
        truncated=tuple(buffer.cut), rollbacks=tuple(f.rollbacks for f in facts),
        germinations=tuple(f.germinations for f in facts), fossilizations=tuple(f.fossilizations for f in facts),
        culls=tuple(f.culls for f in facts), op_counts=stats.op_counts, blueprint_counts=stats.blueprint_counts,
        reward_components={c: float(comps[:, j].mean()) if len(comps) else 0.0 for j, c in enumerate(COMPONENTS)},
        seed_param_share=sum(f.seed_param_share for f in facts) / len(facts), wall_s=stats.wall_s,
        train_flops=tuple(f.train_flops for f in facts))


# -- the update ----------------------------------------------------------------------------------------


def local_rows(ranks: Ranks, index: Tensor) -> Tensor:
    """This rank's rows of a minibatch's env index (contiguous, rank order)."""
    mine = ranks.shard(range(len(index)))
    return index[mine[0]:mine[-1] + 1]


def sum_gradients(ranks: Ranks, params: Sequence[torch.nn.Parameter], kl: Tensor, loss: Tensor,
                  dev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Σ over ranks of every gradient, of the joint KL and of the loss shares (one flat bucket, one
    all-reduce), max over ranks of max|ρ − 1|. Returns (KL, loss, dev) of the whole minibatch."""
    if not ranks.distributed:
        return kl, loss, dev
    grads = [p.grad for p in params if p.grad is not None]  # None on one rank is None on every rank
    scalars = torch.stack([kl.detach(), loss.detach()]).to(grads[0].dtype)
    *summed, whole = all_reduce_sums([*grads, scalars], ranks)
    for g, total in zip(grads, summed, strict=True):
        g.copy_(total)
    return whole[0], whole[1], ranks.all_reduce_max(dev.detach().clone())


@attrs.frozen
class ShardOutputs:
    """One rank's policy outputs on its rows of a minibatch (detached), for the whole-minibatch diagnostics."""

    index: Tensor  # the whole minibatch's env rows
    logp: Tensor
    ent: Tensor
    value: Tensor


def gather_outputs(ranks: Ranks, shard: ShardOutputs, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(logp, ent, value) of the whole minibatch, rows in its index order, on `device`."""
    parts = ranks.gather(tuple(t.cpu() for t in (shard.logp, shard.ent, shard.value)))
    return tuple(torch.cat(list(ts)).to(device) for ts in zip(*parts, strict=True))  # type: ignore[return-value]
