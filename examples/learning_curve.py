r"""Did the policy learn? A PPO run's first updates against its last, and the signal PPO gave each op.

    esper-run train --controller ppo --out runs/ppo ...
    python examples/learning_curve.py runs/ppo [--window K] [--json]

**Outcomes** (`episodes.csv`, one row per episode: update u ∈ 1..U, env, return, final_acc, train_flops,
germinations, fossilizations, culls):

    A = the episodes of updates 1..K          B = the episodes of updates U−K+1..U          (2K ≤ U)
    per column c:  mean_A(c), mean_B(c)
    Δ, p = Welch(B.final_acc, A.final_acc)                   did the last updates end better than the first?
    acc(f) = mean final_acc over the episodes with f fossilizations, f = 0, 1, 2, …   (every update)
    spread = mean over updates of the std (n − 1) of final_acc among that update's episodes
    slope  = least-squares d final_acc / d fossilizations over every episode, with its r
    r(return, final_acc), r(return, train_flops)             over every episode (pearson_of_finite)

**Per-op signal** (`rollouts/update-UUUUU.npz`, each update's N envs × E steps: the op taken
`inputs.op`, `valid`, and Â = `advantages_normalized`, the GAE advantage normalised over the update's batch):

    n_o = Σ_t valid_t·[op_t = o]     mean_o = Σ_t valid_t·[op_t = o]·Â_t / n_o     se_o = std_o / √n_o

PPO moves the op head by Σ_t Â_t ∇ log π(op_t | s_t) (clipped): an op whose mean Â lies within a
standard error or two of zero gets no consistent push over the run, and the entropy bonus, which pulls
every head toward uniform over its legal choices, is then the one steady force on it.

Exit 0 with the tables, 2 on a bad RUN_DIR (no directory, no episodes.csv, no records, too few updates).
"""

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from esper.core.actions import Op
from esper.core.stats import pearson_of_finite, welch
from esper.shell.report_data import ReportError, read_episodes
from esper.shell.rl.episodes import EPISODES_CSV
from esper.shell.rl.record import load_rollout_record, record_paths

COUNTS = ("germinations", "fossilizations", "culls")
COLUMNS = ("return", "final_acc", "train_flops", *COUNTS)


class UserError(Exception):
    """A bad RUN_DIR or window: exit 2 with the one-line message."""


def read_run_episodes(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / EPISODES_CSV
    if not path.is_file():
        raise UserError(f"{run_dir} holds no {EPISODES_CSV} (not a PPO learning run, or one written before "
                        "runs logged episodes)")
    try:
        return read_episodes(path)
    except ReportError as exc:
        raise UserError(str(exc)) from None


def _finite(values: np.ndarray) -> list[float]:
    return [float(v) for v in values if math.isfinite(v)]


def first_vs_last(episodes: dict[str, np.ndarray], window: int) -> dict[str, Any]:
    """Means of every column over the first and the last `window` updates, and Welch on final accuracy."""
    update = episodes["update"].astype(int)
    last = int(update.max())
    if window < 1 or 2 * window > last:
        raise UserError(f"--window {window} needs 1 <= K <= U/2; the run has U = {last} updates")
    first_rows, last_rows = update <= window, update > last - window
    means = {c: {"first": float(np.nanmean(episodes[c][first_rows])),
                 "last": float(np.nanmean(episodes[c][last_rows]))} for c in COLUMNS}
    test = welch(_finite(episodes["final_acc"][last_rows]), _finite(episodes["final_acc"][first_rows]))
    return {"updates": last, "episodes": int(update.size), "window": window, "means": means,
            "final_acc_change": {"diff": test.diff, "p": test.p, "verdict": test.verdict}}


def accuracy_by_fossils(episodes: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """Mean final accuracy of the episodes that fossilized f seeds, for each f that occurred."""
    fossils = episodes["fossilizations"].astype(int)
    return [{"fossils": int(f), "episodes": int((fossils == f).sum()),
             "final_acc": float(np.nanmean(episodes["final_acc"][fossils == f]))} for f in np.unique(fossils)]


def outcome_noise(episodes: dict[str, np.ndarray]) -> dict[str, float]:
    """How far one update's episodes spread in final accuracy, against what one more fossil is worth."""
    update, acc, fossils = episodes["update"].astype(int), episodes["final_acc"], episodes["fossilizations"]
    kept = np.isfinite(acc)
    spreads = [float(np.std(acc[kept & (update == u)], ddof=1)) for u in np.unique(update)
               if (kept & (update == u)).sum() > 1]
    out = {"spread": float(np.mean(spreads)) if spreads else math.nan, "slope": math.nan, "r": math.nan}
    if np.ptp(fossils[kept]) > 0:  # a least-squares slope needs fossil counts that vary
        out["slope"] = float(np.polyfit(fossils[kept], acc[kept], 1)[0])
        out["r"], _ = pearson_of_finite(fossils[kept].tolist(), acc[kept].tolist())
    return out


def return_tracking(episodes: dict[str, np.ndarray]) -> dict[str, float]:
    """Pearson's r of the return against final accuracy and training FLOPs (NaN when undefined)."""
    return {outcome: pearson_of_finite(episodes["return"].tolist(), episodes[outcome].tolist())[0]
            for outcome in ("final_acc", "train_flops")}


def op_advantages(run_dir: Path) -> list[dict[str, float]]:
    """Per op: the number of valid steps that took it, their mean normalised advantage and its s.e."""
    try:
        paths = record_paths(run_dir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    taken: dict[Op, list[np.ndarray]] = {op: [] for op in Op}
    for path in paths:
        rec = load_rollout_record(path)
        op, valid = rec["inputs.op"], rec["valid"] > 0
        for o in Op:
            taken[o].append(rec["advantages_normalized"][(op == int(o)) & valid].astype(np.float64))
    rows = []
    for o in Op:
        adv = np.concatenate(taken[o])
        se = float(adv.std(ddof=1) / math.sqrt(adv.size)) if adv.size > 1 else math.nan
        rows.append({"op": o.name, "steps": int(adv.size), "mean": float(adv.mean()) if adv.size else math.nan,
                     "se": se})
    return rows


def analyse(run_dir: Path, window: int) -> dict[str, Any]:
    episodes = read_run_episodes(run_dir)
    return {"run": str(run_dir), **first_vs_last(episodes, window), "by_fossils": accuracy_by_fossils(episodes),
            "noise": outcome_noise(episodes), "return_r": return_tracking(episodes),
            "op_advantage": op_advantages(run_dir)}


def _r(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def print_result(result: dict[str, Any]) -> None:
    k, change = result["window"], result["final_acc_change"]
    print(f"{result['run']}: {result['updates']} updates, {result['episodes']} episodes")
    print(f"{'per episode':<16}{f'updates 1-{k}':>16}{f'last {k} updates':>18}")
    for column, m in result["means"].items():
        scale = 100.0 if column == "final_acc" else 1.0
        print(f"{column:<16}{m['first'] * scale:>16.4g}{m['last'] * scale:>18.4g}")
    print(f"final accuracy, last - first: {100 * change['diff']:+.2f} points, Welch p = {change['p']:.3f} "
          f"({change['verdict']})")
    print("final accuracy by fossils per episode: " + ", ".join(
        f"{row['fossils']}: {100 * row['final_acc']:.2f} % ({row['episodes']})" for row in result["by_fossils"]))
    noise = result["noise"]
    print(f"within an update final accuracy spreads {100 * noise['spread']:.2f} points (std); one more fossil: "
          f"{100 * noise['slope']:+.2f} points (least squares, r = {_r(noise['r'])})")
    r = result["return_r"]
    print(f"return vs final accuracy r = {_r(r['final_acc'])}; vs training FLOPs r = {_r(r['train_flops'])}")
    print(f"{'op':<11}{'steps':>7}  mean normalised advantage ± s.e.")
    for row in result["op_advantage"]:
        print(f"{row['op']:<11}{row['steps']:>7}  {row['mean']:+.3f} ± {row['se']:.3f}")


def without_nan(value: Any) -> Any:
    """The result with every NaN as None (JSON's null): an op never taken has no mean, a constant series no r."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a PPO learning run's directory")
    parser.add_argument("--window", type=int, default=10, metavar="K", help="updates at each end (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    try:
        result = analyse(args.run_dir, args.window)
    except UserError as exc:
        print(f"learning_curve: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(without_nan(result), allow_nan=False))
    else:
        print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
