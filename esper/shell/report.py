"""`esper-run report` (docs/runtime.md §8): the PNGs of a run, a PPO learning run or a compare directory.

Reads only `metrics.csv`, `ppo.csv`, `config.json` and `summary.json`, so it works at telemetry level
`off`. Figures are `matplotlib.figure.Figure`s rendered by the Agg canvas directly: no pyplot, no global
backend or figure registry, so it is safe headless and inside a training process.

Index convention: the metrics.csv row with `epoch` e holds what was measured at the end of epoch e
(1-based); the seed timeline's bar for epoch e spans [e − ½, e + ½) so bars centre on the curves' points.
The ppo.csv row with `update` u holds the statistics of update u. A group of runs is drawn as
mean(x) ± std(x) (population std, over the runs that have a value at that x; the band only when n > 1).

Sizes are fixed (inches; pixels = inches × DPI, DPI = 150):
    accuracy.png, loss.png, params.png   PANEL_SIZE   8 × 4.5   → 1200 × 675 px
    seeds.png                            SEEDS_SIZE  10 × 5.5   → 1500 × 825 px
    ppo.png                              PPO_SIZE    12 × 6.5   → 1800 × 975 px
    report.png   `report_grid(n)` cells of REPORT_CELL 8 × 5: 2×2 (four panels), 2×3 (five: with PPO),
                 1×1 (a PPO learning run: ppo only)
"""

import csv
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, FigureBase
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, PercentFormatter

DPI = 150
PANEL_SIZE = (8.0, 4.5)
SEEDS_SIZE = (10.0, 5.5)
PPO_SIZE = (12.0, 6.5)
REPORT_CELL = (8.0, 5.0)

METRICS_REQUIRED = ("episode", "env", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "params",
                    "seed_params", "rollback")
PPO_COLUMNS = ("update", "episodes", "env_steps", "mean_return", "mean_final_acc", "entropy_op", "entropy_slot",
               "entropy_blueprint", "entropy_tempo", "approx_kl", "clip_frac_op", "explained_variance",
               "value_loss", "policy_loss", "early_stopped")
STAGE_COLOURS = {
    "GERMINATED": "#7f7f7f", "TRAINING": "#1f77b4", "BLENDING": "#ff7f0e", "PROBATIONARY": "#9467bd",
    "FOSSILIZED": "#2ca02c", "CULLED": "#d62728", "EMBARGOED": "#d3d3d3", "RESETTING": "#d3d3d3",
}
LIVE_STAGES = ("GERMINATED", "TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED")
BASELINE_GROUP = "static"  # inside a compare directory this group is the grey baseline
GROUP_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
BASELINE_GREYS = ("0.45", "0.65", "0.3", "0.55")
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
    _, rows = _read_csv(path, PPO_COLUMNS)
    return {c: _column(rows, c, path) for c in PPO_COLUMNS}


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
    return Run(path=path, group=group, title=title or path.name, curves=curves, ppo=ppo)


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
    return f"compare · {target.name}", grouped



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



def _band(ax: Any, series: list[tuple[np.ndarray, np.ndarray]], colour: str, label: str | None,
          style: str = "-") -> None:
    if not series:
        return
    x, mean, std, n = mean_std(series)
    ax.plot(x, mean, color=colour, linestyle=style, label=label, linewidth=1.6)
    if n > 1:
        ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.18, linewidth=0)


def _metric(group: Group, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(c.epoch, c.values[name]) for c in group.curves]


def _split_panel(fig: FigureBase, groups: Sequence[Group], key: str) -> Any:
    """`val_<key>` solid and `train_<key>` dashed per group."""
    ax = fig.subplots()
    for g in groups:
        for split, style in (("val", "-"), ("train", "--")):
            series = _metric(g, f"{split}_{key}")
            if key == "loss":  # a log axis: non-positive values are gaps
                series = [(x, np.where(y > 0, y, np.nan)) for x, y in series]
            _band(ax, series, g.colour, f"{g.label} {split}", style=style)
    fig.suptitle(f"{'accuracy' if key == 'acc' else key} (val solid, train dashed)")
    return ax


def draw_accuracy(fig: FigureBase, groups: Sequence[Group]) -> None:
    ax = _split_panel(fig, groups, "acc")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _finish_axes(ax, "epoch", "accuracy")


def draw_loss(fig: FigureBase, groups: Sequence[Group]) -> None:
    ax = _split_panel(fig, groups, "loss")
    ax.set_yscale("log")
    _plain_log_labels(ax)
    _finish_axes(ax, "epoch", "loss (log)")


def _plain_log_labels(ax: Any) -> None:
    """Plain numbers on a log axis; minor ticks labelled only within a decade, where the decades alone
    would leave the axis with one label or none (losses often span less than one)."""
    def minor(value: float, _pos: int) -> str:
        low, high = ax.get_ylim()
        return f"{value:.3g}" if low > 0 and high < 10 * low else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:.3g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def draw_params(fig: FigureBase, groups: Sequence[Group]) -> None:
    """One run group: host and seed params stacked; several: total (solid) and host (dotted) per group.
    Baselines are horizontal lines at their mean final count."""
    ax = fig.subplots()
    main = [g for g in groups if not g.baseline and g.curves]
    for g in (g for g in groups if g.baseline and g.curves):
        final = np.mean([c.values["params"][-1] for c in g.curves])
        ax.axhline(final, color=g.colour, linestyle="--", label=f"{g.label}: {final:,.0f}")
    if len(main) == 1:
        x, seed, _, _ = mean_std(_metric(main[0], "seed_params"))
        _, total, _, _ = mean_std(_metric(main[0], "params"))
        ax.stackplot(x, total - seed, seed, labels=[f"{main[0].label} host", f"{main[0].label} seeds"],
                     colors=["#9ecae1", "#fd8d3c"], alpha=0.85)
    for g in main if len(main) > 1 else ():
        _band(ax, _metric(g, "params"), g.colour, f"{g.label} total")
        host = [(c.epoch, c.values["params"] - c.values["seed_params"]) for c in g.curves]
        _band(ax, host, g.colour, f"{g.label} host", style=":")
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    _finish_axes(ax, "epoch", "parameters")
    fig.suptitle("parameters")


def _finish_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")


def draw_seeds(fig: FigureBase, groups: Sequence[Group]) -> None:
    """One row per slot of one run per non-baseline group (its first run): stage bars, alpha line,
    rollbacks as red dashed verticals."""
    shown = [g for g in groups if not g.baseline and g.curves] or [g for g in groups if g.curves]
    several = len(shown) > 1
    rows = [(f"{g.runs[0].path.name}\n{t.slot}" if several else t.slot, g.curves[0], t)
            for g in shown for t in g.curves[0].slots]
    if not rows:
        fig.text(0.5, 0.5, "no seed slots", ha="center", va="center")
        return
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, curves, track) in zip(axes, rows, strict=True):
        _draw_track(ax, curves, track)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    axes[-1].set_xlabel("epoch")
    handles = [Patch(color=c, label=s) for s, c in STAGE_COLOURS.items() if s != "RESETTING"]
    handles[-1] = Patch(color=STAGE_COLOURS["EMBARGOED"], label="EMBARGOED/RESETTING")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle("seed timeline (bars: stage, line: alpha, red dashes: rollback)")


def _draw_track(ax: Any, curves: Curves, track: SlotTrack) -> None:
    epoch = curves.epoch
    for span in stage_spans(track.stages, track.blueprints):
        left = epoch[span.start] - 0.5
        width = epoch[span.stop - 1] - epoch[span.start] + 1.0
        ax.broken_barh([(left, width)], (0.0, 1.0), facecolors=STAGE_COLOURS.get(span.stage, "#bbbbbb"))
        if span.label:
            ax.text(left + 0.1, 0.8, span.label, fontsize=7, va="center", clip_on=True)
    if not any(s != "DORMANT" for s in track.stages):
        ax.text(0.5, 0.5, "dormant", transform=ax.transAxes, ha="center", va="center", color="0.5", fontsize=8)
    ax.plot(epoch, np.nan_to_num(track.alpha), color="black", linewidth=1.2)
    for e in curves.rollbacks:
        ax.axvline(e, color="red", linestyle="--", linewidth=1.2)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(epoch.min() - 0.5, epoch.max() + 0.5)
    ax.set_yticks([0.0, 1.0])
    ax.tick_params(labelsize=7)


PPO_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("mean episode reward", ("mean_return",)),
    ("mean final accuracy", ("mean_final_acc",)),
    ("entropy", ("entropy_op", "entropy_slot", "entropy_blueprint", "entropy_tempo")),
    ("approx KL (x: early stop)", ("approx_kl",)),
    ("clip fraction (op head)", ("clip_frac_op",)),
    ("explained variance", ("explained_variance",)),
)
_STYLES = ("-", "--", ":", "-.")


def draw_ppo(fig: FigureBase, groups: Sequence[Group]) -> None:
    ppo_groups = [g for g in groups if any(r.ppo is not None for r in g.runs)]
    axes = fig.subplots(2, 3, sharex=True).ravel()
    for ax, (title, columns) in zip(axes, PPO_PANELS, strict=True):
        for g in ppo_groups:
            tables = [r.ppo for r in g.runs if r.ppo is not None]
            for k, col in enumerate(columns):
                many = len(columns) > 1
                colour = GROUP_COLOURS[k] if many and len(ppo_groups) == 1 else g.colour
                label = col.removeprefix("entropy_") if many else g.label
                _band(ax, [(t["update"], t[col]) for t in tables], colour, label, _STYLES[k] if many else "-")
            if columns == ("approx_kl",):
                for t in tables:
                    stop = t["early_stopped"] > 0
                    ax.plot(t["update"][stop], t["approx_kl"][stop], "x", color="red", markersize=5)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0] and (len(columns) > 1 or len(ppo_groups) > 1):
            ax.legend(fontsize=6)
    for ax in axes[3:]:
        ax.set_xlabel("update", fontsize=8)
    fig.suptitle("PPO")


Drawer = Callable[[FigureBase, Sequence[Group]], None]
PANELS: tuple[tuple[str, Drawer, tuple[float, float]], ...] = (
    ("accuracy", draw_accuracy, PANEL_SIZE),
    ("loss", draw_loss, PANEL_SIZE),
    ("seeds", draw_seeds, SEEDS_SIZE),
    ("params", draw_params, PANEL_SIZE),
    ("ppo", draw_ppo, PPO_SIZE),
)


def report_grid(n_panels: int) -> tuple[int, int]:
    """(rows, cols) of report.png: 1×1 for a lone panel, 2×2 up to four, else 2×3."""
    return (1, 1) if n_panels == 1 else (2, 2) if n_panels <= 4 else (2, 3)


def pixel_size(size: tuple[float, float]) -> tuple[int, int]:
    """(width, height) in pixels of a figure of `size` inches at DPI."""
    return round(size[0] * DPI), round(size[1] * DPI)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    return path


def _groups(runs_by_group: list[list[Run]], baselines: Sequence[Path], in_compare: bool) -> list[Group]:
    groups, colours = [], iter(GROUP_COLOURS * 4)
    for runs in runs_by_group:
        baseline = in_compare and runs[0].group == BASELINE_GROUP
        colour = BASELINE_GREYS[0] if baseline else next(colours)
        groups.append(Group(name=runs[0].group, runs=tuple(runs), colour=colour, baseline=baseline))
    greys = iter(BASELINE_GREYS[1:] * 8)
    for path in baselines:
        for runs in load_groups(Path(path))[1].values():
            groups.append(Group(name=f"baseline {runs[0].path.name if len(runs) == 1 else runs[0].group}",
                                runs=tuple(runs), colour=next(greys), baseline=True))
    return sorted(groups, key=lambda g: not g.baseline)  # baselines first, so the runs are drawn over them


def write_report(target: Path, *, baselines: Sequence[Path] = (), runs: Sequence[Path] = (),
                 out: Path | None = None) -> list[Path]:
    """Draw §8's PNGs of `target` (a run, PPO learning run or compare directory) into `out`
    (default `<target>/report/`) and return their paths, report.png last.

    `runs` are further run directories drawn with `target`, grouped by controller (mean ± std);
    `baselines` are run (or compare) directories drawn in grey. Raises ReportError.
    """
    target = Path(target)
    title, grouped = load_groups(target)
    in_compare = any(r.path != target for members in grouped.values() for r in members)
    for extra in runs:
        run = load_run(Path(extra))
        grouped.setdefault(run.group, []).append(run)
    groups = _groups(list(grouped.values()), baselines, in_compare)
    has_metrics = any(r.curves for members in grouped.values() for r in members)
    has_ppo = any(r.ppo is not None for members in grouped.values() for r in members)
    panels = [p for p in PANELS if (p[0] == "ppo" and has_ppo) or (p[0] != "ppo" and has_metrics)]
    out = Path(out) if out is not None else target / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the report directory ({exc})") from exc
    written = []
    for name, draw, size in panels:
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        draw(fig, groups)
        if fig.get_suptitle():
            fig.suptitle(f"{title} — {fig.get_suptitle()}", fontsize=10)
        written.append(_save(fig, out / f"{name}.png"))
    rows, cols = report_grid(len(panels))
    fig = Figure(figsize=(cols * REPORT_CELL[0], rows * REPORT_CELL[1]), dpi=DPI, layout="constrained")
    cells = fig.subfigures(rows, cols, squeeze=False).ravel()
    for cell, (_, draw, _) in zip(cells, panels, strict=False):
        draw(cell, groups)
    fig.suptitle(title, fontsize=12)
    written.append(_save(fig, out / "report.png"))
    return written


__all__ = ["DPI", "PANEL_SIZE", "PPO_COLUMNS", "PPO_SIZE", "REPORT_CELL", "SEEDS_SIZE", "ReportError",
           "pixel_size", "report_grid", "stage_spans", "write_report"]
