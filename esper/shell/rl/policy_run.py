"""`esper-run train --controller ppo --policy RUN_DIR`: a trained policy grows one network, no learning.

The policy acts on observations normalised with the statistics it was trained with: by default
deterministically (argmax of every masked head), or with `--policy-act sample` as in training (Gumbel-max
with noise from the run seed and the epoch, so a run is reproducible and ranks agree). A policy that has
not grown confident can have WAIT as its argmax at every step, and greedy play then never grows;
sampling is the behaviour it was trained and measured with. The run is an ordinary run directory (config,
events, metrics, checkpoint, summary), so `esper-run evaluate` and `compare` read it like any other.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch

from esper.core import codec
from esper.core.errors import ConfigError
from esper.core.events import Event
from esper.core.observation import encode_observation, obs_binary
from esper.core.rl_config import RLConfig
from esper.core.running_stats import RunningStats, normalize
from esper.core.sampling import draw_noise, mask_tensors, stack_masks, to_actions
from esper.shell.checkpoint import CheckpointError, read_checkpoint
from esper.shell.nets.policy import PolicyNet
from esper.shell.rl.envs import observe
from esper.shell.trainer import PendingEpoch, Trainer

POLICY_FILE = "policy.pt"
NOISE_STREAM = 2_000_003  # the sampling noise's stream, apart from the trainer's (runtime.md §2.5)


def load_policy(target: str | Path) -> dict[str, Any]:
    """The saved policy of a PPO run directory (or its policy.pt), checked, loaded weights-only."""
    path = Path(target)
    path = path / POLICY_FILE if path.is_dir() else path
    if not path.exists():
        raise CheckpointError(f"no trained policy at {path} (train one with --controller ppo)")
    data = read_checkpoint(path)
    if data.get("format") != "esper.policy":
        raise CheckpointError(f"{path} is not an esper policy file")
    return data


class PolicyDecider:
    """A `Trainer` decider: the trained policy's argmax action from the pending epoch."""

    def __init__(self, saved: dict[str, Any], trainer: Trainer) -> None:
        dims = saved["dims"]
        s, k = len(trainer.state.slots), len(trainer.rules.catalogue.germinable)
        if (dims["n_slots"], dims["n_blueprints"]) != (s, k):
            raise ConfigError(f"the policy was trained for {dims['n_slots']} slots and {dims['n_blueprints']} "
                              f"blueprints; this task's host has {s} and {k}")
        rl = codec.decode(RLConfig, saved["rl"])
        self.rl, self.n_blueprints = rl, k
        self.policy = PolicyNet(dims["obs_dim"], s, k, hidden=rl.hidden, head_hidden=rl.head_hidden,
                                masked_logit=rl.masked_logit, trunk=rl.policy, op_prior=rl.op_prior)
        self.policy.load_state_dict(saved["policy"])
        self.policy.eval()
        self.obs_norm = codec.decode(RunningStats, saved["obs_norm"])
        self.binary = obs_binary(s, k)
        self.hc = self.policy.initial_state(1)
        self.prev: tuple[float, float] | None = None
        self.noise_gen = torch.Generator().manual_seed(0)  # unused by argmax; act takes noise anyway
        self.sample_seed = trainer.cfg.seed if trainer.cfg.policy_act == "sample" else None

    def __call__(self, trainer: Trainer, pending: PendingEpoch) -> tuple[Any, str, list[Event]]:
        inputs = observe(trainer, pending, self.prev, trainer.epochs, trainer.data.random_guess_loss)
        raw = encode_observation(inputs, self.n_blueprints)[None]
        obs = normalize(self.obs_norm, raw, self.binary, self.rl.obs_std_floor, self.rl.obs_clip)
        masks = stack_masks([mask_tensors(pending.masks)])
        s, k = masks.blueprint.shape[-2:]
        noise = draw_noise(self._noise_generator(pending.epoch), 1, s, k, masks.tempo.shape[-1])
        greedy = self.sample_seed is None
        actions, _, _, self.hc = self.policy.act(obs, masks, self.hc, noise, deterministic=greedy)
        self.prev = (pending.numbers.val_loss, pending.numbers.val_acc)
        return to_actions(actions[0]), "policy", []

    def _noise_generator(self, epoch: int) -> torch.Generator:
        """Sampling: one generator per (run seed, epoch), so a resumed run draws what an unbroken one would."""
        if self.sample_seed is None:
            return self.noise_gen
        state = np.random.SeedSequence([self.sample_seed, epoch, NOISE_STREAM]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))
