"""`esper-run compare`: every controller over K seeds, beside static baselines built for fairness.

    for each controller, for each seed:   esper-run train → <out>/<controller>-s<seed>/
    grown runs' mean params P̄ and training FLOPs F̄ (counted, summary.json's train_flops)
    static-param: the static host whose width brings its params within 5 % of P̄ (else the nearest)
    static-flop:  the static host whose training FLOPs come within 5 % of F̄ (else the nearest)
    → Welch's t of each group's final accuracy against `static`; compare.md, compare.json, report/

Runs go one after another in this process (CPU, or one GPU: a small host leaves nothing to gain
from running two at once); every run is an ordinary run directory.
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
from esper.shell.compare_table import compare_json, console_table, markdown_table
from esper.shell.driver import draw_report, load_data, resolve_device, train
from esper.shell.flops import train_flops_per_sample
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.hosts import HostConfig, host_config, host_for
from esper.shell.run_config import RunConfig
from esper.shell.trainer import WIDTH_KEY, host_overrides, samples_per_epoch

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


def _host_config_at(cfg: RunConfig, width: int) -> HostConfig:
    """The run's host config at another width (raises HostConfigError for an invalid one)."""
    preset = task_preset(cfg.task)
    return host_config(cfg.host or preset.host, **{WIDTH_KEY[preset.topology]: width})


def _valid_widths(cfg: RunConfig) -> list[int]:
    out = []
    for w in WIDTHS:
        try:
            _host_config_at(cfg, w)
        except HostConfigError:  # an invalid width (e.g. heads must divide d_model) is skipped
            continue
        out.append(w)
    return out


def static_params(cfg: RunConfig, width: int) -> int:
    return _host_config_at(cfg, width).param_count()


class StaticFlops:
    """Training FLOPs of a whole static run at a given host width: counted per sample on one real
    train step, × samples per epoch × epochs (a static run trains the same structure every epoch)."""

    def __init__(self, cfg: RunConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.data = load_data(attrs.evolve(cfg, train_size=min(cfg.train_size or 64, 64)), device)
        full = task_preset(cfg.task)
        per_epoch = samples_per_epoch(cfg.train_size or full.train_size, cfg.batch_size or full.batch_size,
                                      cfg.train_batches or full.train_batches_per_epoch)
        self.samples = per_epoch * (cfg.epochs or full.epochs)
        self._cache: dict[int, float] = {}

    def __call__(self, width: int) -> float:
        if width not in self._cache:
            host = host_for(self.cfg.host or self.data.preset.host, torch.Generator().manual_seed(0),
                            **host_overrides(self.data, width))
            model = MorphogeneticModel(host, run_seed=0).to(self.device)
            self._cache[width] = float(train_flops_per_sample(model, self.data)) * self.samples
        return self._cache[width]


def compare(base: RunConfig, *, controllers: Sequence[str], seeds: int, out: str | None,
            command: str) -> dict[str, Any]:
    if not controllers:
        raise ConfigError("compare needs at least one controller (--controllers static,heuristic)")
    if seeds < 2:
        raise ConfigError(f"--seeds must be >= 2 for a significance test, got {seeds}")
    if "ppo" in controllers and base.policy is None:
        raise ConfigError("compare with ppo needs --policy RUN_DIR (a trained policy)")
    groups = list(dict.fromkeys(["static", *controllers]))
    folder = Path(out or f"runs/compare-{base.task}-{time.strftime('%Y%m%dT%H%M%S')}")
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not empty; choose another --out")
    records: list[RunRecord] = []
    for group in groups:
        records += _run_group(base, group, seeds, folder)
    matches: dict[str, WidthMatch] = {}
    grown = [r for r in records if r.group not in ("static",)]
    if grown:
        widths = _valid_widths(base)  # ascending
        mean_params = sum(r.params for r in grown) / len(grown)
        mean_flops = sum(r.train_flops for r in grown) / len(grown)
        matches["static-param"] = match_width(lambda w: static_params(base, w), mean_params, widths)
        matches["static-flop"] = match_width(StaticFlops(base, resolve_device(base.device)), mean_flops, widths)
        for name, match in matches.items():
            records += _run_group(attrs.evolve(base, host_width=match.width), name, seeds, folder)
    stats = compare_groups(records, reference="static")
    draw_report(folder)
    meta = {"task": base.task, "epochs": base.epochs or task_preset(base.task).epochs, "seeds": seeds,
            "device": str(resolve_device(base.device)), "command": command,
            "data_source": _data_source(folder, records), "matches": codec.encode(matches)}
    (folder / "compare.json").write_text(json.dumps(compare_json(stats, records, meta), indent=2), encoding="utf-8")
    md = markdown_table(stats, task=meta["task"], epochs=meta["epochs"], device=meta["device"],
                        data_source=meta["data_source"], command=command)
    md += "".join(f"\n{name}: host width {m.width} ({m.value:.4g} vs grown mean {m.target:.4g}, "
                  f"{'within' if m.within else 'outside'} 5 %)\n" for name, m in matches.items())
    (folder / "compare.md").write_text(md, encoding="utf-8")
    Console().print(console_table(stats))
    print(f"compare: {folder}/compare.md")
    return {"folder": str(folder), "stats": stats, "records": records, "matches": matches}


def _run_group(base: RunConfig, group: str, seeds: int, folder: Path) -> list[RunRecord]:
    controller = "static" if group.startswith("static") else group
    records = []
    for seed in range(seeds):
        run_dir = folder / f"{group}-s{seed}"
        cfg = attrs.evolve(base, controller=controller, seed=seed, report=False,  # one report, of the compare
                           policy=base.policy if controller == "ppo" else None)
        train(cfg, out=str(run_dir))
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        records.append(RunRecord.from_summary(group, summary, run_dir=str(run_dir)))
    return records


def _data_source(folder: Path, records: Sequence[RunRecord]) -> str:
    config = json.loads((Path(records[0].run_dir) / "config.json").read_text(encoding="utf-8"))
    source = config.get("data_source", {})
    return str(source.get("description") or source.get("kind") or source)
