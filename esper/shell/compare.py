"""`esper-run compare`: every controller over K seeds, beside static baselines built for fairness.

    for each controller, for each seed:   esper-run train → <out>/<controller>-s<seed>/
    grown runs' mean params P̄ and training FLOPs F̄ (counted, summary.json's train_flops)
    static-param: the static host whose width brings its params within 5 % of P̄ (else the nearest)
    static-flop:  the static host whose training FLOPs come within 5 % of F̄ (else the nearest)
    → Welch's t of each group's final accuracy against `static`; compare.md, compare.json, report/

    F(w) = f(S_w) · samples_per_epoch(n_train, B, max_batches) · epochs     the static run at width w,
           predicted by building that run's Trainer on the data the runs load (n_train = the loaded
           split's size, never the preset's), so F(w) equals the train_flops that run then counts

Runs go one after another in this process (`--jobs 1`), or `--jobs N` at once in N spawned worker
processes (`esper.shell.compare_jobs`), each run in a fresh process, with its own run directory and
max(1, T // N) torch threads (T: this process's threads). Results come back in submission order, so
the table and compare.json equal `--jobs 1`'s except wall times. Every run is an ordinary run directory.
"""

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console

from esper.core import codec
from esper.core.errors import ConfigError, HostConfigError
from esper.core.stats import RunRecord, compare_groups
from esper.core.tasks import task_preset
from esper.shell.compare_jobs import RunJob, run_jobs
from esper.shell.compare_table import compare_json, console_table, controller_notes, markdown_table, match_note
from esper.shell.data.taskdata import TaskData
from esper.shell.driver import draw_report, load_data, resolve_device
from esper.shell.nets.hosts import HostConfig, host_config
from esper.shell.run_config import RunConfig
from esper.shell.telemetry import require_extras
from esper.shell.trainer import WIDTH_KEY, Trainer, host_overrides

MATCH_TOLERANCE = 0.05
WIDTHS = range(1, 129)  # candidate host widths (CNN base channels / transformer d_model)


@attrs.frozen
class WidthMatch:
    width: int
    value: float  # the matched quantity of the static host at this width
    target: float
    within: bool  # |value − target| ≤ 5 % of target


def match_width(measure: Callable[[int], float], target: float, widths: Sequence[int]) -> WidthMatch:
    """The width whose measure is nearest the target (the smaller width on ties). `measure` grows
    with the width (params and FLOPs both do), so a bisection finds the crossing in log₂(n) calls."""
    lo, hi = 0, len(widths) - 1
    while lo < hi:  # the first width whose measure reaches the target (or the last one)
        mid = (lo + hi) // 2
        if measure(widths[mid]) >= target:
            hi = mid
        else:
            lo = mid + 1
    candidates = [widths[i] for i in (lo - 1, lo) if 0 <= i < len(widths)]
    best = min(candidates, key=lambda w: (abs(measure(w) - target), w))
    value = measure(best)
    return WidthMatch(best, value, target, abs(value - target) <= MATCH_TOLERANCE * target)


def _host_config_at(cfg: RunConfig, width: int, data: TaskData | None = None) -> HostConfig:
    """The run's host config at another width (raises HostConfigError for an invalid one); a task
    derived from its data (`--task images`) needs that data's preset (its input shape, classes, blocks)."""
    preset = task_preset(cfg.task) if data is None else data.preset
    derived = {} if preset.host_blocks is None or data is None else host_overrides(
        data, None, host_given=cfg.host is not None)
    return host_config(cfg.host or preset.host, **derived, **{WIDTH_KEY[preset.topology]: width})


def _valid_widths(cfg: RunConfig, data: TaskData | None = None) -> list[int]:
    out = []
    for w in WIDTHS:
        try:
            _host_config_at(cfg, w, data)
        except HostConfigError:  # an invalid width (e.g. heads must divide d_model) is skipped
            continue
        out.append(w)
    return out


def static_params(cfg: RunConfig, width: int, data: TaskData | None = None) -> int:
    return _host_config_at(cfg, width, data).param_count()


class StaticFlops:
    """Training FLOPs of a whole static run at a given host width, F(w): that run's own Trainer (its
    host, static seeds, batch size, batch cap, epochs and precision) on the data the runs load, one
    real counting step per width (a static run trains the same structure every epoch)."""

    def __init__(self, cfg: RunConfig, data: TaskData, device: torch.device) -> None:
        self.cfg, self.data, self.device = as_controller(cfg, "static"), data, device
        self._cache: dict[int, float] = {}

    def __call__(self, width: int) -> float:
        if width not in self._cache:
            trainer = Trainer(attrs.evolve(self.cfg, host_width=width), self.data, self.device)
            per_sample = trainer.flops.per_sample(trainer.model, self.data, trainer.autocast)
            self._cache[width] = float(per_sample * trainer.samples_per_epoch * trainer.epochs)
        return self._cache[width]


def compare(base: RunConfig, *, controllers: Sequence[str], seeds: int, out: str | None,
            command: str, jobs: int = 1, first_seed: int = 0) -> dict[str, Any]:
    """Every group over the run seeds first_seed .. first_seed + seeds − 1 (a policy is judged on seeds kept
    apart from those its rules were designed on: `--first-seed`)."""
    if not controllers:
        raise ConfigError("compare needs at least one controller (--controllers static,heuristic)")
    if seeds < 2:
        raise ConfigError(f"--seeds must be >= 2 for a significance test, got {seeds}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if first_seed < 0:
        raise ConfigError(f"--first-seed must be >= 0, got {first_seed}")
    if base.nproc != 1:  # its runs are single-process (this one, or --jobs workers); ranks are for train
        raise ConfigError(f"compare runs each run in one process (use --jobs N for several at once), "
                          f"not --nproc {base.nproc}")
    if "ppo" in controllers and base.policy is None:
        raise ConfigError("compare with ppo needs --policy RUN_DIR (a trained policy)")
    require_extras(tensorboard=base.tensorboard, wandb=base.wandb)  # before the compare folder is made
    groups = list(dict.fromkeys(["static", *controllers]))
    folder = Path(out or f"runs/compare-{base.task}-{time.strftime('%Y%m%dT%H%M%S')}")
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty; choose another --out")
    run_seeds = range(first_seed, first_seed + seeds)
    records = run_jobs([job for group in groups for job in group_jobs(base, group, run_seeds, folder, jobs)], jobs)
    matches = _matches(base, records)
    matched = [job for name, m in matches.items()
               for job in group_jobs(attrs.evolve(base, host_width=m.width), name, run_seeds, folder, jobs)]
    records += run_jobs(matched, jobs)
    stats = compare_groups(records, reference="static")
    draw_report(folder)
    meta = {"task": base.task, "epochs": base.epochs or task_preset(base.task).epochs, "seeds": seeds,
            "first_seed": first_seed,
            "device": str(resolve_device(base.device)), "command": command,
            "data_source": _data_source(folder, records), "matches": codec.encode(matches)}
    (folder / "compare.json").write_text(json.dumps(compare_json(stats, records, meta), indent=2), encoding="utf-8")
    md = markdown_table(stats, task=meta["task"], epochs=meta["epochs"], device=meta["device"],
                        data_source=meta["data_source"], command=command)
    md += "".join(f"\n{match_note(name, m.width, m.value, m.target, m.within)}\n" for name, m in matches.items())
    md += controller_notes(records)
    (folder / "compare.md").write_text(md, encoding="utf-8")
    Console().print(console_table(stats))
    print(f"compare: {folder}/compare.md")
    return {"folder": str(folder), "stats": stats, "records": records, "matches": matches}


def _matches(base: RunConfig, records: Sequence[RunRecord]) -> dict[str, WidthMatch]:
    """The widths of the param- and FLOP-matched static hosts (none when no group grows)."""
    grown = [r for r in records if r.group != "static"]
    if not grown:
        return {}
    device = resolve_device(base.device)
    data = load_data(base, device)  # the data every run loaded
    widths = _valid_widths(base, data)  # ascending
    mean_params = sum(r.params for r in grown) / len(grown)
    mean_flops = sum(r.train_flops for r in grown) / len(grown)
    flops = StaticFlops(base, data, device)
    return {"static-param": match_width(lambda w: static_params(base, w, data), mean_params, widths),
            "static-flop": match_width(flops, mean_flops, widths)}


def group_jobs(base: RunConfig, group: str, seeds: Sequence[int], folder: Path, jobs: int) -> list[RunJob]:
    """One run per seed of a group; parallel runs show no live progress (N displays on one terminal)."""
    cfg = as_controller(base, "static" if group.startswith("static") else group)
    progress = base.progress if jobs == 1 else False
    return [RunJob(group, attrs.evolve(cfg, seed=seed, report=False, progress=progress),  # one report
                   str(folder / f"{group}-s{seed}")) for seed in seeds]


def as_controller(base: RunConfig, controller: str) -> RunConfig:
    """The compare's base config as one group's: the trained policy and how it acts stay with ppo only."""
    if controller == "ppo":
        return attrs.evolve(base, controller=controller)
    return attrs.evolve(base, controller=controller, policy=None, policy_act="greedy")


def _data_source(folder: Path, records: Sequence[RunRecord]) -> str:
    config = json.loads((Path(records[0].run_dir) / "config.json").read_text(encoding="utf-8"))
    source = config.get("data_source", {})
    return str(source.get("description") or source.get("kind") or source)
