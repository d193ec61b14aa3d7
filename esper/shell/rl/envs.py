"""Vectorised environments (docs/rl.md §1, §8): N episodes of the one epoch protocol, stepped together.

Each env is a full `Trainer` (fresh host, optimizers and slots per episode) on the shared read-only
task data; its governor, tracker and rollback are its own, so a rollback touches only its env.
One step t of every env: `begin_epoch` (train, validate, governor, tracker, record → view) on each
env's stream, one batched policy decision on CPU, then `finish_epoch` (lifecycle step, `sync_to`).

Seeds: env i of batch b draws its run seed from SeedSequence([run_seed, b, i]); the acting and
shuffle generators of batch b from [run_seed, b, 1_000_001] and [run_seed, b, 1_000_002]. Every
generator of a batch is a function of (run_seed, batch), so a resume at a batch boundary needs no
saved generator state.
"""

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch

from esper.core import lifecycle
from esper.core.actions import FactoredAction, Op
from esper.core.config import LifecycleConfig
from esper.core.observation import ObsContext, ObsInputs, pack_observation
from esper.core.rewards import RewardInputs, reward_inputs
from esper.core.seed import LifecycleState
from esper.core.stages import HAS_MODULE
from esper.shell.data.taskdata import TaskData
from esper.shell.epoch_numbers import LaunchedEpoch
from esper.shell.run_config import RunConfig
from esper.shell.trainer import EpochResult, PendingEpoch, Trainer, TrainingDiverged

ACTING_STREAM, SHUFFLE_STREAM = 1_000_001, 1_000_002


def batch_seed(run_seed: int, batch: int, stream: int) -> int:
    return int(np.random.SeedSequence([run_seed, batch, stream]).generate_state(1, np.uint64)[0] >> 1)


def batch_generator(run_seed: int, batch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(batch_seed(run_seed, batch, stream))


@attrs.define
class EnvStep:
    """One env's step t: what the policy saw and what the step did."""

    pending: PendingEpoch
    obs: ObsInputs
    before: LifecycleState  # x_{t-1}
    seed_params_before: tuple[int, ...]  # the structure that trained this epoch
    result: EpochResult | None = None
    reward: RewardInputs | None = None


class Env:
    """One episode: a Trainer plus the per-step bookkeeping the observation and reward need."""

    def __init__(self, cfg: RunConfig, data: TaskData, device: torch.device, index: int,
                 lifecycle_cfg: LifecycleConfig, user: Mapping[str, Any] | None = None) -> None:
        self.index, self.device = index, device
        self.trainer = Trainer(cfg, data, device, lifecycle_config=lifecycle_cfg, measure_fossils=True,
                               diagnostics=False,  # the profile's diagnostics are for Trainer runs
                               **(user or {}))  # a script's host factory and catalogue (UserParts)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.cut_reason: str | None = None
        self.prev: tuple[float, float] | None = None  # (val_loss, val_acc) of the previous step
        self.before: LifecycleState = self.trainer.state  # x_{t-1} of the step in flight
        self.seed_params: tuple[int, ...] = ()  # its structure's seed params

    @property
    def alive(self) -> bool:
        return self.cut_reason is None

    def on_stream(self) -> contextlib.AbstractContextManager[object]:
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def launch(self) -> LaunchedEpoch:
        """Queue this step's train and validation on the env's stream (no host sync)."""
        self.before, self.seed_params = self.trainer.state, slot_params(self.trainer)
        with self.on_stream():
            return self.trainer.launch_epoch()

    def collect(self, launched: LaunchedEpoch, epochs: int, random_guess_loss: float) -> EnvStep | None:
        """Fetch, governor, tracker, record → the view; None (and the env is cut) if the step fails."""
        trainer = self.trainer
        try:
            with self.on_stream():
                pending = trainer.collect_epoch(launched)
        except TrainingDiverged:
            self.cut_reason = "governor_exhausted"
            return None
        numbers = pending.numbers
        if not all(np.isfinite([numbers.train_loss, numbers.val_loss])) and not pending.rolled_back:
            self.cut_reason = "nonfinite"
            return None
        obs = observe(trainer, pending, self.prev, epochs, random_guess_loss)
        return EnvStep(pending=pending, obs=obs, before=self.before, seed_params_before=self.seed_params)

    def finish(self, step: EnvStep, action: FactoredAction, terminal: bool) -> None:
        """Apply the policy's action (the masks made it legal) and pack the reward inputs."""
        trainer, view = self.trainer, step.pending.view
        culled_age = 0
        if action.op == Op.CULL:
            seed = view.slots[action.slot].seed
            culled_age = seed.age if seed is not None else 0
        with self.on_stream():
            step.result = trainer.finish_epoch(step.pending, action, "ppo")
        self.prev = (step.result.val_loss, step.result.val_acc)
        step.reward = reward_inputs(
            step.before, trainer.state, acc=step.result.val_acc, op=int(action.op), slot=action.slot,
            terminal=terminal, rolled_back=step.pending.rolled_back, host_params=trainer.model.host_params,
            seed_params_before=step.seed_params_before, culled_age=culled_age)


def observe(trainer: Trainer, pending: PendingEpoch, prev: tuple[float, float] | None, epochs: int,
            random_guess_loss: float) -> ObsInputs:
    """The raw observation inputs of a pending epoch (docs/rl.md §2); `prev` = last step's (val loss, acc)."""
    numbers = pending.numbers
    ctx = ObsContext(
        epochs=epochs, random_guess_loss=random_guess_loss,
        train_loss=numbers.train_loss, train_acc=numbers.train_acc, val_loss=numbers.val_loss,
        prev_val_loss=prev[0] if prev else None, prev_val_acc=prev[1] if prev else None,
        rolled_back_now=pending.rolled_back, rollbacks=trainer.governor.rollbacks,
        max_rollbacks=trainer.governor_cfg.max_rollbacks, host_params=trainer.model.host_params)
    return pack_observation(pending.view, trainer.tracker, ctx, trainer.rules)


def slot_params(trainer: Trainer, state: LifecycleState | None = None) -> tuple[int, ...]:
    """Parameters of each slot's seed module or fossil (0 where the slot holds none), host slot order."""
    state = state or trainer.state
    out = []
    for slot in state.slots:
        has = slot.seed is not None and slot.stage in HAS_MODULE
        out.append(trainer.model.slot(slot.slot_id).n_params() if has else 0)
    return tuple(out)


class VecEnv:
    """The envs of one rollout batch of N (all N, or a rank's `indices`: docs/rl.md §12), all starting
    together and running exactly E steps. Env i is the same episode whichever process runs it."""

    def __init__(self, cfg: RunConfig, data: Sequence[TaskData], devices: Sequence[torch.device], *,
                 n_envs: int, batch: int, epochs: int, indices: Sequence[int] | None = None,
                 user: Mapping[str, Any] | None = None) -> None:
        self.epochs, self.n_envs = epochs, n_envs
        lifecycle_cfg = data[0].preset.lifecycle_config(epochs, max_seeds=cfg.max_seeds)
        self.envs = []
        for i in range(n_envs) if indices is None else indices:
            env_cfg = attrs.evolve(cfg, seed=batch_seed(cfg.seed, batch, i), epochs=epochs)
            where = i % len(devices)
            self.envs.append(Env(env_cfg, data[where], devices[where], i, lifecycle_cfg, user))
        self.random_guess_loss = data[0].random_guess_loss

    def __iter__(self) -> Iterator[Env]:
        return iter(self.envs)

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def indices(self) -> list[int]:
        """The batch's env indices these envs are (all of range(n_envs) on one rank)."""
        return [env.index for env in self.envs]

    def begin(self) -> list[EnvStep | None]:
        """Launch every live env's epoch (streams overlap on a GPU), then collect each: one host
        fetch per env, after all of them were queued."""
        launched = {i: env.launch() for i, env in enumerate(self.envs) if env.alive}
        return [self.envs[i].collect(launched[i], self.epochs, self.random_guess_loss) if i in launched else None
                for i in range(len(self.envs))]

    def finish(self, steps: Sequence[EnvStep | None], actions: Sequence[FactoredAction], t: int) -> None:
        for env, step, action in zip(self.envs, steps, actions, strict=True):
            if step is not None:
                env.finish(step, action, terminal=t == self.epochs - 1)


def blank_state(trainer: Trainer) -> LifecycleState:
    """x_{-1}: every slot DORMANT (for tests that recompute potentials from stored snapshots)."""
    return lifecycle.initial_state(trainer.model.topology, trainer.model.host.slot_specs)
