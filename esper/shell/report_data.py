"""The results `esper-run report` draws (docs/runtime.md §8): run and compare directories read into curves.

Reads only `metrics.csv`, `ppo.csv`, `episodes.csv`, `config.json`, `summary.json` and a compare directory's
`compare.json`, so it works at telemetry level `off`; every malformed input is a `ReportError`.

Index convention: the metrics.csv row with `epoch` e holds what was measured at the end of epoch e
(1-based). The ppo.csv row with `update` u holds the statistics of update u; episodes.csv holds one row
per episode, `update` u being the update its batch fed. A group of runs is drawn as mean(x) ± std(x)
(`mean_std`: population std, over the runs that have a value at that x).

Older PPO runs lack what later versions added: ppo.csv's `PPO_OPTIONAL` columns and episodes.csv. What
is absent is read as absent (not drawn), never as an error.
"""

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from esper.core.stats import pearson_of_finite

METRICS_REQUIRED = ("episode", "env", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "params",
                    "seed_params", "rollback")
PPO_COLUMNS = ("update", "episodes", "env_steps", "mean_return", "mean_final_acc", "entropy_op", "entropy_slot",
               "entropy_blueprint", "entropy_tempo", "approx_kl", "clip_frac_op", "explained_variance",
               "value_loss", "policy_loss", "early_stopped")
PPO_OPTIONAL = ("mean_germinations", "mean_culls", "mean_train_flops")  # added later: absent from older runs
EPISODE_COLUMNS = ("update", "env", "return", "final_acc", "train_flops", "germinations", "fossilizations", "culls")
LIVE_STAGES = ("GERMINATED", "TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED")
_SPECIAL_CELLS = {"": float("nan"), "true": 1.0, "false": 0.0}
_RUN_NAME = re.compile(r"^(?P<group>.+)-s\d+$")


class ReportError(Exception):
    """The report cannot be drawn: missing or unreadable run directory, file or column."""


@attrs.frozen(eq=False)
class SlotTrack:
    """One slot's per-epoch stage, blueprint and alpha."""

    slot: str
    stages: tuple[str, ...]
    blueprints: tuple[str, ...]
    alpha: np.ndarray


@attrs.frozen(eq=False)
class Curves:
    """One (episode, env) series of metrics.csv."""

    epoch: np.ndarray
    values: dict[str, np.ndarray]  # the numeric METRICS_REQUIRED columns
    slots: tuple[SlotTrack, ...]
    rollbacks: tuple[float, ...]


@attrs.frozen(eq=False)
class Run:
    path: Path
    group: str
    title: str
    curves: tuple[Curves, ...]  # the last episode's envs; empty for a PPO learning run
    ppo: dict[str, np.ndarray] | None
    task: str | None = None
    episodes: dict[str, np.ndarray] | None = None  # episodes.csv's columns; None where the run has none


@attrs.frozen(eq=False)
class Group:
    name: str
    runs: tuple[Run, ...]
    colour: str
    baseline: bool = False

    @property
    def curves(self) -> list[Curves]:
        return [c for r in self.runs for c in r.curves]

    @property
    def label(self) -> str:
        n = len(self.runs)
        return self.name if n == 1 else f"{self.name} (n={n})"


@attrs.frozen(kw_only=True)
class Span:
    """Rows [start, stop) of one slot in one stage; `label` is the blueprint on a seed's first span."""

    start: int
    stop: int
    stage: str
    label: str | None



def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read ({exc})") from exc
    if missing := [c for c in required if c not in header]:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    if not rows:
        raise ReportError(f"{path}: no rows yet")
    return header, rows


def _number(text: str | None, path: Path, line: int, column: str) -> float:
    """A CSV cell as a float: empty → NaN (None in the run), booleans as 0/1, nan/inf spelled out."""
    text = (text or "").strip().lower()
    try:
        return _SPECIAL_CELLS[text] if text in _SPECIAL_CELLS else float(text)
    except ValueError as exc:
        raise ReportError(f"{path}: line {line}: {column} is not a number: {text!r}") from exc


def _column(rows: list[dict[str, str]], column: str, path: Path) -> np.ndarray:
    return np.array([_number(r[column], path, i + 2, column) for i, r in enumerate(rows)], dtype=float)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read ({exc})") from exc


def read_metrics(path: Path) -> tuple[Curves, ...]:
    """metrics.csv → one `Curves` per env of the last episode (heuristic and static runs: exactly one)."""
    header, rows = _read_csv(path, METRICS_REQUIRED)
    episode, env = _column(rows, "episode", path), _column(rows, "env", path)
    last = np.nanmax(episode)
    out = []
    for e in sorted(set(env[episode == last].tolist())):
        picked = [r for r, keep in zip(rows, (episode == last) & (env == e), strict=True) if keep]
        out.append(_curves(header, picked, path))
    return tuple(out)


def _curves(header: list[str], rows: list[dict[str, str]], path: Path) -> Curves:
    values = {c: _column(rows, c, path) for c in METRICS_REQUIRED if c not in ("episode", "env")}
    epoch = values.pop("epoch")
    slots = tuple(
        SlotTrack(slot=name, stages=tuple(r[f"{name}_stage"] or "DORMANT" for r in rows),
                  blueprints=tuple(r.get(f"{name}_blueprint") or "" for r in rows),
                  alpha=_column(rows, f"{name}_alpha", path) if f"{name}_alpha" in header else np.zeros(len(rows)))
        for name in (c.removesuffix("_stage") for c in header if c.endswith("_stage"))
    )
    rollbacks = tuple(float(x) for x, flag in zip(epoch, values.pop("rollback"), strict=True) if flag > 0)
    return Curves(epoch=epoch, values=values, slots=slots, rollbacks=rollbacks)


def read_ppo(path: Path) -> dict[str, np.ndarray]:
    """ppo.csv's columns: every PPO_COLUMNS one, and those of PPO_OPTIONAL the file has."""
    header, rows = _read_csv(path, PPO_COLUMNS)
    return {c: _column(rows, c, path) for c in (*PPO_COLUMNS, *(c for c in PPO_OPTIONAL if c in header))}


def read_episodes(path: Path) -> dict[str, np.ndarray]:
    _, rows = _read_csv(path, EPISODE_COLUMNS)
    return {c: _column(rows, c, path) for c in EPISODE_COLUMNS}


def return_accuracy_r(episodes: Sequence[dict[str, np.ndarray]]) -> tuple[float, int]:
    """(Pearson's r of episode return against final accuracy, n) over the episodes of `episodes` whose
    both values are finite, pooled; r is NaN under 3 episodes or for a constant series."""
    g = np.concatenate([e["return"] for e in episodes]) if episodes else np.zeros(0)
    acc = np.concatenate([e["final_acc"] for e in episodes]) if episodes else np.zeros(0)
    return pearson_of_finite(g.tolist(), acc.tolist())


def _is_run_dir(path: Path) -> bool:
    return (path / "metrics.csv").is_file() or (path / "ppo.csv").is_file()


def load_run(path: Path) -> Run:
    """A run directory: an ordinary run (metrics.csv), a PPO learning run (ppo.csv), or both."""
    if not path.is_dir():
        raise ReportError(f"{path}: no such run directory")
    config = _read_json(path / "config.json") or {}
    summary = _read_json(path / "summary.json") or {}
    train = config.get("config", {}).get("train", {})
    info = {k: summary.get(k, train.get(k)) for k in ("task", "controller", "seed")}
    if not _is_run_dir(path):
        wanted = "ppo.csv" if (path / "rl_summary.json").exists() or info["controller"] == "ppo" else "metrics.csv"
        raise ReportError(f"{path}: not a run directory with results ({wanted} is missing)")
    match = _RUN_NAME.match(path.name)
    group = (match["group"] if match else None) or info["controller"] or path.name
    title = " · ".join(str(v) if k != "seed" else f"seed {v}" for k, v in info.items() if v is not None)
    curves = read_metrics(path / "metrics.csv") if (path / "metrics.csv").is_file() else ()
    ppo = read_ppo(path / "ppo.csv") if (path / "ppo.csv").is_file() else None
    episodes = read_episodes(path / "episodes.csv") if (path / "episodes.csv").is_file() else None
    return Run(path=path, group=group, title=title or path.name, curves=curves, ppo=ppo, task=info["task"],
               episodes=episodes)


def load_groups(target: Path) -> tuple[str, dict[str, list[Run]]]:
    """(title, runs grouped by name) of a run directory or a compare directory of `<group>-s<seed>` runs."""
    if not target.is_dir():
        raise ReportError(f"{target}: no such run directory")
    if _is_run_dir(target) or not any(_is_run_dir(p) for p in target.iterdir() if p.is_dir()):
        run = load_run(target)  # raises the run directory's own error
        return run.title, {run.group: [run]}
    grouped: dict[str, list[Run]] = {}
    for sub in sorted(p for p in target.iterdir() if p.is_dir() and _is_run_dir(p)):
        run = load_run(sub)
        grouped.setdefault(run.group, []).append(run)
    return compare_title(target, grouped), grouped


def compare_title(target: Path, grouped: dict[str, list[Run]]) -> str:
    """`<task> · compare`, then the folder's name where it says more than "compare". The task is
    compare.json's (`meta.task`), else that of the runs inside."""
    meta = (_read_json(target / "compare.json") or {}).get("meta", {})
    tasks = [meta["task"]] if meta.get("task") else sorted({r.task for rs in grouped.values() for r in rs if r.task})
    parts = [" + ".join(tasks) or "?", "compare", *([target.name] if target.name != "compare" else [])]
    return " · ".join(parts)


def mean_std(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Align (x, y) series on the union of their x; mean and population std over the non-NaN values."""
    xs = np.unique(np.concatenate([x for x, _ in series]))
    table = np.full((len(series), len(xs)), np.nan)
    for i, (x, y) in enumerate(series):
        table[i, np.searchsorted(xs, x)] = np.where(np.isfinite(y), y, np.nan)
    count = np.sum(~np.isnan(table), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(table, axis=0) / count
        std = np.sqrt(np.nansum((table - mean) ** 2, axis=0) / count)
    return xs, mean, std, len(series)


def stage_spans(stages: Sequence[str], blueprints: Sequence[str]) -> list[Span]:
    """Contiguous runs of one stage (DORMANT omitted); a seed starts where a live stage follows a
    non-live one (or the blueprint changes), and its first span carries the blueprint label."""
    spans: list[Span] = []
    for i, stage in enumerate(stages):
        prev = stages[i - 1] if i else "DORMANT"
        new_seed = stage in LIVE_STAGES and (prev not in LIVE_STAGES or blueprints[i] != blueprints[i - 1])
        if spans and spans[-1].stop == i and spans[-1].stage == stage and not new_seed:
            spans[-1] = attrs.evolve(spans[-1], stop=i + 1)
        elif stage != "DORMANT":
            spans.append(Span(start=i, stop=i + 1, stage=stage, label=(blueprints[i] or "?") if new_seed else None))
    return spans
