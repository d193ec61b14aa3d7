"""The per-update rollout record of a PPO run: `<run>/rollouts/update-00001.npz` (docs/rl.md §5, §7, §8).

One compressed NumPy archive per update U (1-based, as in `ppo.csv` and `ppo.update`), holding what
GAE consumed and produced for that update's batch of N envs × E steps, plus the `RewardInputs` each
reward was computed from, so an analyst can recompute r_t → Â_t, G_t without torch or the run's code
(`examples/recompute_returns.py`), or any reward mode's return (`examples/reward_modes.py`):

    reward[N, E]          raw r_t (the components' sum; 0 beyond the kept prefix)
    components[N, E, 6]   signed components, in the order of `component_names`
    value[N, E]           v_t = V(o_t); a cut episode's v_{T_v} is its bootstrap V(o_{T_v})
    valid, terminal[N, E] kept prefix (0/1), last step of an uncut episode (0/1)
    reward_scale[]        the frozen normaliser's 1/σ; GAE sees clamp(r_t · scale, ±reward_clip)
    advantages[N, E]      A_t before normalisation; advantages_normalized: Â_t; returns: G_t (0 where invalid)
    inputs.<field>        RewardInputs, stacked [N, E, ·]
    rl_config             the RLConfig as JSON; min_fossilize_contribution: G5's θ of the reward

At most about 115 bytes per env-step compressed (measured on incompressible data: 8 envs × 25 epochs is
under 25 KB per update, about 1 MB for the default 50 updates, less than one checkpoint), so it is always on.
A, Â and G come from `update.advantages`, the very function `ppo_update` runs on the same buffer and
scale, so they are the numbers the update used.
"""

import io
import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from esper.core.rewards import RewardInputs
from esper.core.rl_config import RLConfig
from esper.shell.rl.envs import VecEnv
from esper.shell.rl.rollout import COMPONENTS, RolloutBuffer
from esper.shell.rl.update import UpdateResult, advantages
from esper.shell.telemetry.rundir import atomic_write_bytes

ROLLOUTS = "rollouts"
INPUTS_PREFIX = "inputs."


def record_path(run_dir: Path, update: int) -> Path:
    return run_dir / ROLLOUTS / f"update-{update:05d}.npz"


def rollout_record(buffer: RolloutBuffer, reward_scale: float, cfg: RLConfig,
                   min_fossilize_contribution: float) -> dict[str, np.ndarray]:
    """The record's arrays (see the module docstring)."""
    if buffer.inputs is None:
        raise ValueError("the rollout buffer holds no reward inputs (no step was stored)")
    scale = torch.tensor(reward_scale, dtype=buffer.reward.dtype)
    scaled = (buffer.reward * scale).clamp(-cfg.reward_clip, cfg.reward_clip)  # as ppo_update scales
    adv, adv_hat, returns = advantages(buffer, scaled, cfg)
    arrays = {"reward": buffer.reward, "components": buffer.components, "value": buffer.value,
              "valid": buffer.valid, "terminal": buffer.terminal, "reward_scale": scale,
              "advantages": adv, "advantages_normalized": adv_hat, "returns": returns}
    out = {name: t.detach().cpu().numpy() for name, t in arrays.items()}
    for field in attrs.fields(type(buffer.inputs)):
        out[INPUTS_PREFIX + field.name] = getattr(buffer.inputs, field.name).detach().cpu().numpy()
    out["component_names"] = np.array(COMPONENTS)
    out["rl_config"] = np.array(json.dumps(attrs.asdict(cfg)))
    out["min_fossilize_contribution"] = np.array(min_fossilize_contribution)
    return out


def save_rollout_record(run_dir: Path, update: int, vec: VecEnv, buffer: RolloutBuffer, result: UpdateResult,
                        cfg: RLConfig) -> Path:
    """Write update `update`'s record atomically (a re-run update after a resume replaces it)."""
    theta = vec.envs[0].trainer.lifecycle_cfg.min_fossilize_contribution
    payload = io.BytesIO()
    np.savez_compressed(payload, **rollout_record(buffer, result.reward_scale, cfg, theta))
    path = record_path(run_dir, update)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, payload.getvalue())


def load_rollout_record(path: str | Path) -> dict[str, Any]:
    """The arrays of one record (no pickle); `rl_config` back as an `RLConfig`."""
    with np.load(path, allow_pickle=False) as archive:
        out: dict[str, Any] = {name: archive[name] for name in archive.files}
    out["rl_config"] = RLConfig(**json.loads(str(out["rl_config"])))
    out["min_fossilize_contribution"] = float(out["min_fossilize_contribution"])
    return out


def record_paths(run_dir: Path) -> list[Path]:
    """A run's records in update order; FileNotFoundError (a one-line message) when `run_dir` is not a
    directory or holds none (not a PPO run, or one written before runs recorded their rollouts)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a run directory")
    found = sorted((run_dir / ROLLOUTS).glob("update-*.npz"))
    if not found:
        raise FileNotFoundError(f"{run_dir} holds no {ROLLOUTS}/update-*.npz (not a PPO run, or one "
                                "written before runs recorded their rollouts)")
    return found


def record_inputs(rec: dict[str, Any]) -> RewardInputs:
    """The loaded record's `RewardInputs` [N, E, ·] as torch tensors (sharing the arrays' memory)."""
    return RewardInputs(**{f.name: torch.from_numpy(rec[INPUTS_PREFIX + f.name]) for f in attrs.fields(RewardInputs)})
