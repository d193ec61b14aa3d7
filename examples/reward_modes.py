r"""Which reward mode's return tracks the goal? Every mode's return recomputed from one PPO run's record.

    esper-run train --controller ppo --out runs/ppo ...
    python examples/reward_modes.py runs/ppo [--json]

A policy is worth training only if its return tracks the episode's final held-out accuracy per unit of
cost. A PPO run records the `RewardInputs` of every step (`rollouts/update-NNNNN.npz`, esper/shell/rl/record.py), so the
return every mode would have paid is recomputed without retraining, and `episodes.csv` holds each
episode's outcome. For update U and env i of a record (N envs × E steps), with the pure core reward:

    r^m_t   = reward(inputs_t, cfg | reward_mode = m)                 m ∈ esper.core.rewards.MODES
    G^m_i   = Σ_t valid_t · r^m_t.total                                the raw return (unscaled, undiscounted)
    C^k_i   = Σ_t valid_t · r^shaped_t.k                               k a shaped component (RewardComponents)
    (ρ, n)  = pearson_of_finite(X, Y) over every episode (U, i)        X ∈ {G^m, C^k}, Y ∈ {final_acc, train_flops}

The join is on (update, env): record update-U holds the batch that episodes.csv labels U (both 1-based,
as in ppo.csv). The return under the run's own mode must equal episodes.csv's `return` to float32
rounding, |Δ| ≤ 1e-5 + 1e-5 · Σ_t valid_t · |r_t| (r_t as logged), or the join is wrong and nothing is
printed but the mismatch. ρ is "n/a" (null in --json) under 3 episodes or for a constant series, such as a
component the run never paid.

Exit 0 with the table, 1 on a join mismatch, 2 on a bad RUN_DIR (no directory, no records, no episodes.csv).
"""

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch.func import vmap

from esper.core import rewards
from esper.core.rewards import RewardComponents
from esper.core.stats import pearson_of_finite
from esper.shell.report_data import ReportError, read_episodes
from esper.shell.rl.episodes import EPISODES_CSV
from esper.shell.rl.record import load_rollout_record, record_inputs, record_paths

ATOL, RTOL = 1e-5, 1e-5  # float32 rounding of a return summed in float32 by the run, in float64 here
COMPONENTS = tuple(f.name for f in attrs.fields(RewardComponents) if f.name != "total")
OUTCOMES = ("final_acc", "train_flops")


class UserError(Exception):
    """A bad RUN_DIR: exit 2 with the one-line message."""


class JoinMismatch(Exception):
    """A record's episode has no episodes.csv row, or its return disagrees with the row's: exit 1."""


def mode_rewards(rec: dict[str, Any], mode: str) -> RewardComponents:
    """The reward components [N, E] of every step of one record, had the run used reward mode `mode`."""
    cfg = attrs.evolve(rec["rl_config"], reward_mode=mode)
    reward_fn = partial(rewards.reward, cfg=cfg, min_fossilize_contribution=rec["min_fossilize_contribution"])
    return vmap(vmap(reward_fn))(record_inputs(rec))  # over envs, then over steps


def _kept_sum(per_step: torch.Tensor, valid: np.ndarray) -> np.ndarray:
    return (per_step.double() * torch.from_numpy(valid > 0)).sum(-1).numpy()


def episode_sums(rec: dict[str, Any]) -> dict[str, np.ndarray]:
    """{mode: G^m, then "shaped.<k>": C^k}, each [N] (float64), of one record."""
    out = {mode: _kept_sum(mode_rewards(rec, mode).total, rec["valid"]) for mode in rewards.MODES}
    shaped = mode_rewards(rec, "shaped")
    return out | {f"shaped.{k}": _kept_sum(getattr(shaped, k), rec["valid"]) for k in COMPONENTS}


def read_outcomes(run_dir: Path) -> dict[tuple[int, int], dict[str, float]]:
    """episodes.csv's rows keyed by (update, env): {"return", "final_acc", "train_flops"}."""
    path = run_dir / EPISODES_CSV
    if not path.is_file():
        raise UserError(f"{run_dir} holds no {EPISODES_CSV} (a PPO run written before runs logged episodes)")
    try:
        columns = read_episodes(path)
    except ReportError as exc:
        raise UserError(str(exc)) from None
    out: dict[tuple[int, int], dict[str, float]] = {}
    for j, (update, env) in enumerate(zip(columns["update"], columns["env"], strict=True)):
        key = (int(update), int(env))
        if key in out:
            raise JoinMismatch(f"{path} holds update {key[0]} env {key[1]} twice")
        out[key] = {c: float(columns[c][j]) for c in ("return", *OUTCOMES)}
    return out


def check_join(update: int, rec: dict[str, Any], returns: np.ndarray,
               outcomes: dict[tuple[int, int], dict[str, float]]) -> list[dict[str, float]]:
    """The episodes.csv rows of record `update`'s envs, after checking each logged return equals `returns`
    (the recomputation under the run's own mode)."""
    magnitude = (np.abs(rec["reward"].astype(np.float64)) * (rec["valid"] > 0)).sum(-1)
    rows = []
    for env, mine in enumerate(returns):
        row = outcomes.get((update, env))
        if row is None:
            raise JoinMismatch(f"update {update} env {env} has a record but no {EPISODES_CSV} row")
        if not abs(mine - row["return"]) <= ATOL + RTOL * magnitude[env]:  # NaN counts as a mismatch
            raise JoinMismatch(f"update {update} env {env}: {EPISODES_CSV} return {row['return']:.7g}, "
                               f"recomputed {rec['rl_config'].reward_mode} return {mine:.7g}")
        rows.append(row)
    return rows


@attrs.define
class Joined:
    """Every recorded episode: its recomputed sums and its outcomes, in (update, env) order."""

    mode: str = ""  # the run's own reward mode
    updates: int = 0
    sums: dict[str, list[float]] = attrs.field(factory=dict)
    outcomes: dict[str, list[float]] = attrs.field(factory=lambda: {k: [] for k in OUTCOMES})


def join(run_dir: Path) -> Joined:
    """Recompute every record's episode sums and join them with episodes.csv (module docstring)."""
    try:
        paths = record_paths(run_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    outcomes, joined = read_outcomes(run_dir), Joined()
    for path in paths:
        rec = load_rollout_record(path)
        update, joined.mode = int(path.stem.split("-")[1]), rec["rl_config"].reward_mode
        sums = episode_sums(rec)
        for row in check_join(update, rec, sums[joined.mode], outcomes):
            for k in OUTCOMES:
                joined.outcomes[k].append(row[k])
        for name, values in sums.items():
            joined.sums.setdefault(name, []).extend(values.tolist())
        joined.updates += 1
    return joined


def correlations(joined: Joined) -> list[dict[str, Any]]:
    """One row per return (mode, then shaped component): ρ and n against each outcome; ρ None where undefined."""
    rows = []
    for name, values in joined.sums.items():
        row: dict[str, Any] = {"return": name}
        for k in OUTCOMES:
            r, n = pearson_of_finite(values, joined.outcomes[k])
            row[k] = {"r": None if math.isnan(r) else r, "n": n}
        rows.append(row)
    return rows


def render(run_dir: Path, joined: Joined, rows: list[dict[str, Any]]) -> str:
    """The table: one line per return, ρ and n against final accuracy and against training FLOPs."""
    def shown(cell: dict[str, Any]) -> str:
        return f"{'n/a' if cell['r'] is None else format(cell['r'], '+.3f'):>8} {cell['n']:>5}"

    episodes = len(joined.outcomes["final_acc"])
    lines = [f"{run_dir}: {episodes} episodes over {joined.updates} updates, trained with reward mode {joined.mode}",
             f"{'return':<22}{'r(final_acc)':>14}{'r(train_flops)':>16}",
             f"{'':<22}{'r':>8} {'n':>5}{'r':>10} {'n':>5}"]
    for row in rows:
        own = " *" if row["return"] == joined.mode else ""
        lines.append(f"{row['return'] + own:<22}{shown(row['final_acc'])}  {shown(row['train_flops'])}")
    lines.append("* the run's own mode (its return is episodes.csv's); a shaped.<k> row is that component's sum")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a PPO run directory")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    try:
        joined = join(args.run_dir)
    except UserError as exc:
        print(f"reward_modes: error: {exc}", file=sys.stderr)
        return 2
    except JoinMismatch as exc:
        print(f"reward_modes: MISMATCH {exc}", file=sys.stderr)
        return 1
    rows = correlations(joined)
    if args.json:
        print(json.dumps({"run": str(args.run_dir), "reward_mode": joined.mode, "updates": joined.updates,
                          "episodes": len(joined.outcomes["final_acc"]), "rows": rows}, indent=2))
    else:
        print(render(args.run_dir, joined, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
