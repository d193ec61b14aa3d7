r"""The core numerics of one PPO update, eager or compiled (docs/rl.md §6 "Update procedure", steps 3 and 4).

    advantages   vmap(episode_arrays) → vmap(gae) → (A, Â, G) of the whole [N, E] batch (esper.core.gae)
    loss         ppo_loss(logp, ent, value, batch, coefs, counts) → (L, PPODiagnostics) (esper.core.ppo)

`UpdateNumerics(mode)` runs both as written (mode "off": today's eager numbers, bitwise) or under
`torch.compile(fullgraph=True, dynamic=False, mode=...)`. Each compiled function is built once per process and
mode (`_compiled` is cached) and dynamo keeps one graph per input shape and per value of the constants it
specialises on: γ, λ, ε, ε_v, value_coef, which are fixed for a run. The entropy coefficient c(u) changes
every update, so under compile it enters as a 0-dim tensor on the loss's device (`coefs`): an anneal step
is new data, never a recompile. A run therefore compiles the advantages once and the loss once per minibatch
shape (one shape when `minibatch_envs` divides N; DD-PPO adds its counts= path and, on W > 1 ranks, the
gathered diagnostics' no-grad call).

"reduce-overhead" (CUDA graphs) applies only where the inputs are on CUDA: GAE runs on the CPU rollout
buffer, so there it compiles with inductor's default mode.
"""

import functools
from collections.abc import Callable

import attrs
import torch
from torch import Tensor
from torch.func import vmap

from esper.core.gae import episode_arrays, gae, normalize_advantages
from esper.core.ppo import PPOBatch, PPOCoefs, PPODiagnostics, ppo_loss
from esper.core.rl_config import RLConfig
from esper.shell.compiled import resolve_compile
from esper.shell.run_config import COMPILE_MODES

UPDATE_MODES = tuple(m for m in COMPILE_MODES if m != "auto")  # --compile, resolved


def update_compile_mode(flag: str, device: torch.device) -> str:
    """`--compile` → the update's mode, as the epoch's (`esper.shell.compiled.resolve_compile`): auto is
    reduce-overhead on CUDA and off elsewhere (compiling the update's tiny CPU tensors gains nothing and
    costs seconds of warm-up)."""
    return resolve_compile(flag, device) or "off"


def batch_advantages(rewards: Tensor, value: Tensor, valid: Tensor, terminal: Tensor, gamma: float,
                     lam: float) -> tuple[Tensor, Tensor, Tensor]:
    """(raw A[N, E], normalised Â[N, E], returns G[N, E], 0 off the valid steps) of the whole batch."""
    layout = vmap(episode_arrays, in_dims=(0, 0, 0, 0, None, None))
    r, d, lam_t, v, boot = layout(rewards, value, valid, terminal, gamma, lam)
    adv, ret = vmap(gae)(r, d, v, boot, lam_t)
    return adv, normalize_advantages(adv, valid), torch.where(valid > 0, ret, torch.zeros_like(ret))


@functools.cache
def _compiled(fn: Callable, mode: str) -> Callable:
    return torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)


@attrs.frozen
class UpdateNumerics:
    """The update's advantages and loss under one compile mode ("off", "default" or "reduce-overhead")."""

    mode: str = attrs.field(default="off", validator=attrs.validators.in_(UPDATE_MODES))

    def _fn(self, fn: Callable, device: torch.device) -> Callable:
        if self.mode == "off":
            return fn
        return _compiled(fn, self.mode if device.type == "cuda" else "default")

    def advantages(self, rewards: Tensor, value: Tensor, valid: Tensor, terminal: Tensor,
                   cfg: RLConfig) -> tuple[Tensor, Tensor, Tensor]:
        fn = self._fn(batch_advantages, rewards.device)
        return fn(rewards, value, valid, terminal, cfg.gamma, cfg.gae_lambda)

    def coefs(self, cfg: RLConfig, entropy_coef: float, device: torch.device) -> PPOCoefs:
        """The loss's coefficients; compiled, c(u) is a 0-dim tensor on `device` (data, not a constant)."""
        if self.mode == "off":
            return PPOCoefs.from_config(cfg, entropy_coef)
        return PPOCoefs.from_config(cfg, torch.tensor(entropy_coef, device=device))

    def loss(self, logp: Tensor, ent: Tensor, value: Tensor, batch: PPOBatch, coefs: PPOCoefs,
             counts: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, PPODiagnostics]:
        return self._fn(ppo_loss, value.device)(logp, ent, value, batch, coefs, counts)


EAGER = UpdateNumerics()
