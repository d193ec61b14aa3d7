"""The rollout buffer (docs/rl.md §8): fixed-shape [N, E, ·] CPU tensors, one row per episode.

Row i holds env i's episode from step 0; `valid[i, t]` marks kept steps (a prefix). When env i's
step t fails, steps [0, t−1) stay valid and step t−1's transition is dropped: its stored value is
the bootstrap V(o_{T_v}), T_v = max(t − 1, 0) (docs/rl.md §1.6).
"""

import attrs
import torch
import torch.utils._pytree as pytree
from torch import Tensor

from esper.core.rewards import RewardComponents, RewardInputs
from esper.core.sampling import MaskTensors

COMPONENTS = ("contribution", "pbrs", "rent", "terminal", "governor", "early_cull")


@attrs.define
class RolloutBuffer:
    obs: Tensor  # [N, E, D] normalised, as the policy saw it
    obs_raw: Tensor  # [N, E, D] encoded, before the normaliser (merged after the update)
    actions: Tensor  # [N, E, 4] int64
    logp: Tensor  # [N, E, 4]
    relevance: Tensor  # [N, E, 4]
    op_mask: Tensor  # [N, E, 4]
    slot_mask: Tensor  # [N, E, 4, S]
    bp_mask: Tensor  # [N, E, S, K]
    tempo_mask: Tensor  # [N, E, T3]
    value: Tensor  # [N, E]
    reward: Tensor  # [N, E] raw
    components: Tensor  # [N, E, 6]
    valid: Tensor  # [N, E]
    terminal: Tensor  # [N, E]
    stage_before: Tensor  # [N, E, S]
    stage_after: Tensor  # [N, E, S]
    final_acc: Tensor  # [N] last kept step's val acc
    cut: list[str | None] = attrs.field(factory=list)
    inputs: RewardInputs | None = None  # [N, E, ·] what each reward was computed from (set by the first store)

    @classmethod
    def empty(cls, n: int, e: int, d: int, s: int, k: int, n_tempo: int) -> "RolloutBuffer":
        def z(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.zeros(*shape, dtype=dtype)

        return cls(obs=z(n, e, d), obs_raw=z(n, e, d), actions=z(n, e, 4, dtype=torch.int64), logp=z(n, e, 4),
                   relevance=z(n, e, 4), op_mask=z(n, e, 4, dtype=torch.bool),
                   slot_mask=z(n, e, 4, s, dtype=torch.bool), bp_mask=z(n, e, s, k, dtype=torch.bool),
                   tempo_mask=z(n, e, n_tempo, dtype=torch.bool), value=z(n, e), reward=z(n, e),
                   components=z(n, e, len(COMPONENTS)), valid=z(n, e), terminal=z(n, e),
                   stage_before=z(n, e, s, dtype=torch.int64), stage_after=z(n, e, s, dtype=torch.int64),
                   final_acc=z(n), cut=[None] * n)

    @property
    def masks(self) -> MaskTensors:
        return MaskTensors(op=self.op_mask, slot=self.slot_mask, blueprint=self.bp_mask, tempo=self.tempo_mask)

    def store_decision(self, i: int, t: int, *, obs: Tensor, obs_raw: Tensor, action: Tensor, logp: Tensor,
                       relevance: Tensor, masks: MaskTensors, value: Tensor) -> None:
        self.obs[i, t], self.obs_raw[i, t] = obs, obs_raw
        self.actions[i, t], self.logp[i, t], self.relevance[i, t], self.value[i, t] = action, logp, relevance, value
        self.op_mask[i, t], self.slot_mask[i, t] = masks.op, masks.slot
        self.bp_mask[i, t], self.tempo_mask[i, t] = masks.blueprint, masks.tempo

    def store_outcome(self, i: int, t: int, *, components: RewardComponents, inputs: RewardInputs,
                      terminal: bool, acc: float) -> None:
        self.reward[i, t] = components.total
        self.components[i, t] = torch.stack([getattr(components, c) for c in COMPONENTS])
        self.stage_before[i, t], self.stage_after[i, t] = inputs.stage_before, inputs.stage_after
        if self.inputs is None:
            n, e = self.valid.shape
            self.inputs = pytree.tree_map(lambda x: x.new_zeros(n, e, *x.shape), inputs)
        for stored, value in zip(pytree.tree_leaves(self.inputs), pytree.tree_leaves(inputs), strict=True):
            stored[i, t] = value
        self.valid[i, t], self.terminal[i, t] = 1.0, float(terminal)
        self.final_acc[i] = acc

    def cut_env(self, i: int, t: int, reason: str) -> None:
        """Env i failed at step t: keep [0, t−1), drop t−1's transition, bootstrap from its value."""
        kept = max(t - 1, 0)
        self.valid[i, kept:] = 0.0
        self.reward[i, kept:] = 0.0
        self.components[i, kept:] = 0.0
        self.terminal[i, kept:] = 0.0
        self.value[i, kept + 1:] = 0.0
        self.cut[i] = reason

    def kept_steps(self) -> Tensor:
        return self.valid.sum(dim=1).long()
