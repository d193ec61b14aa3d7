"""What a PPO learning run records of each episode, and how well its return tracks the outcome (docs/rl.md §9).

    episodes.csv   one row per episode (rank 0 writes every rank's, in env order after the gather):
                   update (1-based, as in ppo.csv), env, return = Σ_t r_t over the kept prefix (raw, before
                   the reward scale), final_acc (the episode's final held-out accuracy), train_flops (its
                   Trainer's counted training FLOPs), germinations, fossilizations, culls
    correlation    over every episode so far: Pearson's r of return against final_acc and against
                   train_flops (`esper.core.stats.pearson`; null where undefined: under 3 episodes or a
                   constant series). An episode whose return or final accuracy is not finite is left out
                   and the count says how many were used.

A PPO return that rises while r(return, final_acc) stays near 0 is learning the reward, not the goal
(issue 21): the report draws the scatter, rl_summary.json holds the r.
"""

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from esper.core.stats import pearson
from esper.shell.report_data import EPISODE_COLUMNS as EPISODE_COLUMNS  # written here, read by the report
from esper.shell.rl.ddppo import EnvFacts

EPISODES_CSV = "episodes.csv"
LOGGED = ("return", "final_acc", "train_flops")  # what the learner keeps of each episode for the correlation


def episode_returns(reward: Tensor, valid: Tensor) -> list[float]:
    """Each env's raw return: Σ_t r_t over its kept prefix (`valid` > 0)."""
    return (reward * (valid > 0)).sum(1).tolist()


def episode_rows(update: int, facts: Sequence[EnvFacts], returns: Sequence[float],
                 final_acc: Sequence[float]) -> list[dict[str, Any]]:
    """The episodes.csv rows of one batch, env by env."""
    if not len(facts) == len(returns) == len(final_acc):
        raise ValueError(f"{len(facts)} envs' facts, {len(returns)} returns, {len(final_acc)} final accuracies")
    return [{"update": update, "env": i, "return": g, "final_acc": acc, "train_flops": f.train_flops,
             "germinations": f.germinations, "fossilizations": f.fossilizations, "culls": f.culls}
            for i, (f, g, acc) in enumerate(zip(facts, returns, final_acc, strict=True))]


def batch_means(facts: Sequence[EnvFacts]) -> dict[str, float]:
    """ppo.csv's per-update means over the batch's episodes: germinations, culls, training FLOPs."""
    n = max(len(facts), 1)
    return {"mean_germinations": sum(f.germinations for f in facts) / n,
            "mean_culls": sum(f.culls for f in facts) / n,
            "mean_train_flops": sum(f.train_flops for f in facts) / n}


def return_correlation(log: Iterable[Mapping[str, float]]) -> dict[str, float | int | None]:
    """{"final_acc": r, "train_flops": r, "episodes": n} over the logged episodes whose return and final
    accuracy are finite; r is None where Pearson's r is undefined (fewer than 3 episodes, a constant series)."""
    kept = [e for e in log if math.isfinite(e["return"]) and math.isfinite(e["final_acc"])]
    returns = [e["return"] for e in kept]

    def r(key: str) -> float | None:
        value = pearson(returns, [float(e[key]) for e in kept])
        return None if math.isnan(value) else value

    return {"final_acc": r("final_acc"), "train_flops": r("train_flops"), "episodes": len(kept)}


def describe_correlation(corr: Mapping[str, Any]) -> str:
    """One console line: "return vs final accuracy r = +0.42, vs train FLOPs r = -0.10 (over 120 episodes)"."""
    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    return (f"return vs final accuracy r = {shown(corr['final_acc'])}, vs train FLOPs r = "
            f"{shown(corr['train_flops'])} (over {corr['episodes']} episodes)")


def append_rows(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append `rows` to a CSV under its own header, or start it headed by `columns`. A file begun before
    a column was added keeps its header (the new column is left out of it), so a run resumed by a later
    esper stays one well-formed table."""
    header = list(columns)
    exists = path.exists() and path.stat().st_size > 0
    if exists:
        with path.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), header)
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerows(rows)
