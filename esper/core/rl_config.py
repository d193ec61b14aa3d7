"""Every constant of the learned controller (docs/rl.md): one frozen `RLConfig`, no other RL knobs.

Accuracies, contributions and gains are fractions in [0, 1] (docs/rl.md's conventions). Lifecycle and
governor constants (`min_cull_age`, `max_seeds`, G5's threshold, `max_rollbacks`) live in their own
configs; the reward reads G5's threshold from `LifecycleConfig.min_fossilize_contribution`.
"""

import math
from typing import Literal

import attrs

from esper.core.errors import ConfigError
from esper.core.stages import Stage

RewardMode = Literal["shaped", "sparse", "minimal"]
REWARD_MODES: tuple[str, ...] = ("shaped", "sparse", "minimal")
POLICY_TRUNKS: tuple[str, ...] = ("lstm", "mlp")  # docs/rl.md §4: recurrent or feed-forward actor-critic

# φ(stage) of docs/rl.md §7.3, indexed by Stage code: the post-cull stages (CULLED, EMBARGOED, RESETTING) are 0.
DEFAULT_POTENTIALS: tuple[float, ...] = (0.0, 0.10, 0.20, 0.35, 0.55, 0.60, 0.0, 0.0, 0.0)


@attrs.frozen(kw_only=True)
class RLConfig:
    # -- returns (docs/rl.md §5)
    gamma: float = 0.995
    gae_lambda: float = 0.97
    # -- rollouts and updates (docs/rl.md §6)
    n_envs: int = 8
    episodes: int = 400
    ppo_epochs: int = 4
    minibatch_envs: int = 4
    clip_eps: float = 0.2
    value_clip_eps: float = 0.2
    value_coef: float = 0.5
    entropy_coef_start: float = 0.05
    entropy_coef_end: float = 0.01
    entropy_anneal_frac: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float = 0.015
    kl_stop_factor: float = 1.5
    lr: float = 3e-4
    adam_eps: float = 1e-5
    weight_decay: float = 0.0  # AdamW's decoupled decay: p ← p − lr·weight_decay·p each step (0: plain Adam)
    # -- policy network (docs/rl.md §4)
    policy: str = attrs.field(default="lstm", metadata={"choices": POLICY_TRUNKS})  # --rl.policy choices
    hidden: int = 128
    head_hidden: int = 64
    masked_logit: float = -1e4
    # Initial bias of the op head's logits (WAIT, GERMINATE, CULL, FOSSILIZE): the untrained policy's prior
    # over ops. Zeros: uniform over the legal ops. A negative CULL entry makes the irreversible cull rare at
    # first, so that random exploration carries seeds to fossilization often enough to be credited.
    op_prior: tuple[float, ...] = attrs.field(default=(0.0, 0.0, 0.0, 0.0), converter=tuple)
    # -- observation normaliser (docs/rl.md §2)
    obs_std_floor: float = 0.1
    obs_clip: float = 5.0
    # -- rewards (docs/rl.md §7)
    reward_mode: str = attrs.field(default="shaped", metadata={"choices": REWARD_MODES})  # --rl.* choices
    contribution_weight: float = 10.0
    contribution_cap: float = 0.05
    contribution_total_cap: float = 1.0
    potentials: tuple[float, ...] = attrs.field(default=DEFAULT_POTENTIALS, converter=tuple)
    rent_weight: float = 0.05
    rent_cap: float = 0.5
    terminal_acc_weight: float = 1.0
    terminal_fossil_weight: float = 0.1
    governor_penalty: float = 1.0
    sparse_param_weight: float = 0.1
    sparse_param_scale: float = 500_000.0
    early_cull_penalty: float = 0.1
    early_cull_age: int = 5
    reward_clip: float = 10.0
    reward_std_floor: float = 1e-4
    # -- checkpoints (docs/rl.md §8)
    checkpoint_every: int = 10
    keep_checkpoints: int = 3
    best_window: int = 5
    # -- anomaly checks (docs/rl.md §9)
    ratio_explosion: float = 5.0
    ratio_collapse: float = 0.1
    kl_spike_factor: float = 4.0
    clip_saturation: float = 0.3
    value_flat_std: float = 1e-3
    value_flat_return_std: float = 0.1
    entropy_collapse_op: float = 0.10
    entropy_collapse_any: float = 0.02
    nonfinite_abort: int = 3

    def __attrs_post_init__(self) -> None:
        for message in _violations(self):
            raise ConfigError(f"rl config: {message}")

    @property
    def updates(self) -> int:
        """U = episodes / N: one update per rollout batch of N episodes."""
        return max(1, self.episodes // self.n_envs)

    def potential(self, stage: Stage) -> float:
        return self.potentials[int(stage)]


def _violations(cfg: RLConfig) -> list[str]:
    out = []
    if not 0.0 < cfg.gamma <= 1.0:
        out.append(f"gamma must be in (0, 1], got {cfg.gamma}")
    if not 0.0 <= cfg.gae_lambda <= 1.0:
        out.append(f"gae_lambda must be in [0, 1], got {cfg.gae_lambda}")
    for name in ("n_envs", "episodes", "ppo_epochs", "minibatch_envs", "hidden", "head_hidden",
                 "checkpoint_every", "keep_checkpoints", "best_window", "nonfinite_abort"):
        if getattr(cfg, name) < 1:
            out.append(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.n_envs % min(cfg.minibatch_envs, cfg.n_envs):
        out.append(f"n_envs ({cfg.n_envs}) must be a multiple of the minibatch size "
                   f"({min(cfg.minibatch_envs, cfg.n_envs)} envs)")
    if cfg.reward_mode not in REWARD_MODES:
        out.append(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {cfg.reward_mode!r}")
    if cfg.policy not in POLICY_TRUNKS:
        out.append(f"policy must be one of {', '.join(POLICY_TRUNKS)}, got {cfg.policy!r}")
    if len(cfg.op_prior) != 4 or not all(math.isfinite(v) for v in cfg.op_prior):
        out.append(f"op_prior needs 4 finite logits (WAIT, GERMINATE, CULL, FOSSILIZE), got {cfg.op_prior}")
    if len(cfg.potentials) != len(Stage):
        out.append(f"potentials needs one value per stage ({len(Stage)}), got {len(cfg.potentials)}")
    for name in ("clip_eps", "value_clip_eps", "max_grad_norm", "target_kl", "lr", "adam_eps", "obs_std_floor",
                 "obs_clip", "reward_clip", "reward_std_floor", "contribution_cap", "contribution_total_cap"):
        if not getattr(cfg, name) > 0:
            out.append(f"{name} must be > 0, got {getattr(cfg, name)}")
    if not cfg.weight_decay >= 0.0:
        out.append(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if not 0.0 <= cfg.entropy_coef_end <= cfg.entropy_coef_start:
        out.append("entropy coefficients need 0 <= end <= start")
    if not 0.0 < cfg.entropy_anneal_frac <= 1.0:
        out.append(f"entropy_anneal_frac must be in (0, 1], got {cfg.entropy_anneal_frac}")
    return out
