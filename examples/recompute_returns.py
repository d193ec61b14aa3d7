r"""Recompute a PPO run's rewards, returns and advantages from its record, in torch and in JAX.

    esper-run train --controller ppo --out runs/ppo ...
    python examples/recompute_returns.py runs/ppo

A PPO run writes `rollouts/update-NNNNN.npz` per update (esper/shell/rl/record.py): the RewardInputs
of every step and what the update fed to and got from GAE. This script runs the core's pure
functions on the stored inputs, once with torch tensors and once with jax arrays, and compares every
valid step with what the run logged (they must agree to float32 rounding). Per update, for N envs
of E steps (vmap over envs, and over steps for the reward):

    r_t       = reward(inputs_t)                                   esper.core.rewards.reward
    r̃_t       = clamp(r_t · scale, ±reward_clip)                    the frozen reward normaliser
    r, d, λ_t, v, b = episode_arrays(r̃, value, valid, terminal)    esper.core.gae.episode_arrays
    A, G      = gae(r, d, v, b, λ_t);   Â = normalize_advantages(A, valid)

Exit 0 when everything matches, 1 on a mismatch (each one is printed), 2 on a bad RUN_DIR.
"""

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch.func import vmap

from esper.core import gae, rewards
from esper.core.rewards import RewardInputs
from esper.shell.rl.record import INPUTS_PREFIX, load_rollout_record, record_inputs, record_paths

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # the optional `jax` extra is not installed: the torch path only
    jax = None

ATOL, RTOL = 1e-5, 1e-5  # float32 rounding of a recomputation in another framework or loop form
Arrays = dict[str, np.ndarray]


def recompute_torch(rec: dict[str, Any]) -> Arrays:
    """Rewards (and components), A, Â and G of one record with the core's torch functions."""
    cfg = rec["rl_config"]
    reward_fn = partial(rewards.reward, cfg=cfg, min_fossilize_contribution=rec["min_fossilize_contribution"])
    comps = vmap(vmap(reward_fn))(record_inputs(rec))  # over envs, then over steps
    value, valid, terminal = (torch.from_numpy(rec[k]) for k in ("value", "valid", "terminal"))
    scaled = (comps.total * torch.from_numpy(rec["reward_scale"])).clamp(-cfg.reward_clip, cfg.reward_clip)
    layout = vmap(partial(gae.episode_arrays, gamma=cfg.gamma, lam=cfg.gae_lambda))
    r, d, lam_t, v, boot = layout(scaled, value, valid, terminal)
    adv, ret = vmap(gae.gae)(r, d, v, boot, lam_t)
    out = {"advantages": adv, "advantages_normalized": gae.normalize_advantages(adv, valid),
           "returns": torch.where(valid > 0, ret, torch.zeros_like(ret))}
    out |= {f"reward.{name}": getattr(comps, name) for name in _component_names(rec)}
    return {k: t.numpy() for k, t in out.items()}


def recompute_jax(rec: dict[str, Any]) -> Arrays:
    """The same recomputation, by the same core functions, on jax arrays under `jax.vmap`."""
    cfg = rec["rl_config"]
    inputs = RewardInputs(**{name: _jax_array(rec[INPUTS_PREFIX + name]) for name in _input_names()})
    reward_fn = partial(rewards.reward, cfg=cfg, min_fossilize_contribution=rec["min_fossilize_contribution"])
    comps = jax.vmap(jax.vmap(reward_fn))(inputs)
    value, valid, terminal = (_jax_array(rec[k]) for k in ("value", "valid", "terminal"))
    scaled = jnp.clip(comps.total * _jax_array(rec["reward_scale"]), -cfg.reward_clip, cfg.reward_clip)
    layout = jax.vmap(partial(gae.episode_arrays, gamma=cfg.gamma, lam=cfg.gae_lambda))
    r, d, lam_t, v, boot = layout(scaled, value, valid, terminal)
    adv, ret = jax.vmap(gae.gae)(r, d, v, boot, lam_t)
    out = {"advantages": adv, "advantages_normalized": gae.normalize_advantages(adv, valid),
           "returns": jnp.where(valid > 0, ret, 0.0)}
    out |= {f"reward.{name}": getattr(comps, name) for name in _component_names(rec)}
    return {k: np.asarray(a) for k, a in out.items()}


def _input_names() -> list[str]:
    return [f.name for f in attrs.fields(RewardInputs)]


def _component_names(rec: dict[str, Any]) -> list[str]:
    return ["total", *(str(c) for c in rec["component_names"])]


def _jax_array(a: np.ndarray) -> Any:
    # int64 stage and op codes: JAX is 32-bit unless x64 is enabled, so say so rather than let it truncate.
    return jnp.asarray(a.astype(np.int32) if a.dtype == np.int64 else a)


def logged(rec: dict[str, Any]) -> Arrays:
    """What the run logged, keyed like the recomputations."""
    out = {k: rec[k] for k in ("advantages", "advantages_normalized", "returns")}
    out["reward.total"] = rec["reward"]
    for j, name in enumerate(_component_names(rec)[1:]):
        out[f"reward.{name}"] = rec["components"][..., j]
    return out


@attrs.define
class Comparison:
    """Largest |Δ| per quantity group and the out-of-tolerance places, over every update."""

    worst: dict[str, float] = attrs.field(factory=lambda: {"rewards": 0.0, "returns": 0.0, "advantages": 0.0})
    mismatches: list[str] = attrs.field(factory=list)

    def add(self, update: int, framework: str, mine: Arrays, theirs: Arrays, valid: np.ndarray) -> None:
        for key, want in theirs.items():
            got, keep = mine[key], valid > 0
            delta = np.where(keep, np.abs(got.astype(np.float64) - want), 0.0)
            group = "rewards" if key.startswith("reward.") else "returns" if key == "returns" else "advantages"
            self.worst[group] = max(self.worst[group], float(delta.max(initial=0.0)))
            bad = keep & ~(delta <= ATOL + RTOL * np.abs(want))  # NaN counts as bad
            for env, step in zip(*np.nonzero(bad), strict=True):
                self.mismatches.append(f"update {update} env {env} step {step}: {key} logged {want[env, step]:.7g}, "
                                       f"{framework} {got[env, step]:.7g}")

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.2g}" for k, v in self.worst.items())


def records(run_dir: Path) -> list[Path]:
    try:
        return record_paths(run_dir)
    except FileNotFoundError as exc:
        raise SystemExit(_user_error(str(exc))) from None


def _user_error(message: str) -> int:
    print(f"recompute_returns: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a PPO run directory")
    args = parser.parse_args(argv)
    frameworks: dict[str, Callable[[dict[str, Any]], Arrays]] = {"torch": recompute_torch}
    if jax is not None:
        frameworks["jax"] = recompute_jax
    compared = {name: Comparison() for name in frameworks}
    shape = (0, 0)
    for path in records(args.run_dir):
        rec = load_rollout_record(path)
        update, shape = int(path.stem.split("-")[1]), rec["valid"].shape
        for name, recompute in frameworks.items():
            compared[name].add(update, name, recompute(rec), logged(rec), rec["valid"])
        print(f"update {update}: {shape[0]} envs × {shape[1]} steps, {int(rec['valid'].sum())} valid")
    for comparison in compared.values():
        for line in comparison.mismatches:
            print(f"MISMATCH {line}")
    ok = not any(c.mismatches for c in compared.values())
    parts = [f"{c.summary()} ({name})" for name, c in compared.items()]
    if jax is None:
        parts.append("jax not installed")
    print(f"envs {shape[0]}, steps {shape[1]}: max |Δ| {'; '.join(parts)}: {'match' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
