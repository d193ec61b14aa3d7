"""`esper-run report` (docs/runtime.md §8): the PNGs of a run, a PPO learning run or a compare directory.

What is drawn comes from `report_data` (the run files, read into curves). Figures are
`matplotlib.figure.Figure`s rendered by the Agg canvas directly: no pyplot, no global backend or figure
registry, so it is safe headless and inside a training process.

The seed timeline's bar for epoch e spans [e − ½, e + ½) so bars centre on the curves' points. A group of
runs is drawn as mean ± std, the band only when n > 1.

ppo.png: seven per-update panels (PPO_PANELS, x = update) and one scatter of each episode's return
against its final accuracy (episodes.csv) with Pearson's r in its title (one group) or legend (several).
An older run's missing ppo.csv columns or episodes.csv leave their panel empty with a note.

Sizes are fixed (inches; pixels = inches × DPI, DPI = 150):
    accuracy.png, loss.png, params.png   PANEL_SIZE   8 × 4.5   → 1200 × 675 px
    seeds.png                            SEEDS_SIZE  10 × 5.5   → 1500 × 825 px
    ppo.png                              PPO_SIZE    16 × 6.5   → 2400 × 975 px   (2 × 4 panels of 4 × 3.25)
    report.png   `report_grid(n)` cells of REPORT_CELL 8 × 5: 2×2 (four panels), 2×3 (five: with PPO),
                 1×1 (a PPO learning run: ppo only)
"""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, FigureBase
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

from esper.shell.report_data import (
    Curves,
    Group,
    ReportError,
    Run,
    SlotTrack,
    load_groups,
    load_run,
    mean_std,
    return_accuracy_r,
    stage_spans,
)

DPI = 150
PANEL_SIZE = (8.0, 4.5)
SEEDS_SIZE = (10.0, 5.5)
PPO_SIZE = (16.0, 6.5)
REPORT_CELL = (8.0, 5.0)

STAGE_COLOURS = {
    "GERMINATED": "#7f7f7f", "TRAINING": "#1f77b4", "BLENDING": "#ff7f0e", "PROBATIONARY": "#9467bd",
    "FOSSILIZED": "#2ca02c", "CULLED": "#d62728", "EMBARGOED": "#d3d3d3", "RESETTING": "#d3d3d3",
}
BASELINE_GROUP = "static"  # inside a compare directory this group is the grey baseline
GROUP_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
BASELINE_GREYS = ("0.45", "0.65", "0.3", "0.55")


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


def germinated(curves: Curves) -> bool:
    """Did a seed germinate in this run? Not where every slot stays DORMANT, or holds a fossil planted
    before epoch 1 (a static baseline's fixed seed) throughout."""
    return any(len(set(t.stages)) > 1 or t.stages[0] not in ("DORMANT", "FOSSILIZED") for t in curves.slots)


def timeline_runs(groups: Sequence[Group]) -> list[tuple[str, Curves]]:
    """(run name, curves) the seed timeline shows: per non-baseline group, its first run that germinated a
    seed; groups that never germinate are left out. A lone run is shown whatever it did."""
    drawn = [g for g in groups if g.curves]
    shown = [next((r.path.name, c) for r in g.runs for c in r.curves if germinated(c))
             for g in drawn if not g.baseline and any(germinated(c) for c in g.curves)]
    if not shown and len(drawn) == 1:
        shown = [(drawn[0].runs[0].path.name, drawn[0].curves[0])]
    return shown


def draw_seeds(fig: FigureBase, groups: Sequence[Group]) -> None:
    """One row per slot of each run `timeline_runs` picks: stage bars, alpha line, rollbacks as red
    dashed verticals."""
    shown = timeline_runs(groups)
    several = sum(len(g.runs) for g in groups) > 1  # name the run where there are others it could be
    rows = [(f"{name}\n{t.slot}" if several else t.slot, curves, t) for name, curves in shown for t in curves.slots]
    if not rows:
        fig.text(0.5, 0.5, "no seed slots" if shown else "no seed germinated", ha="center", va="center")
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
    ("germinations, culls / episode", ("mean_germinations", "mean_culls")),
    ("entropy", ("entropy_op", "entropy_slot", "entropy_blueprint", "entropy_tempo")),
    ("approx KL (x: early stop)", ("approx_kl",)),
    ("clip fraction (op head)", ("clip_frac_op",)),
    ("explained variance", ("explained_variance",)),
)
PPO_GRID = (2, 4)  # PPO_PANELS in reading order, the episode scatter in cell SCATTER_CELL
SCATTER_CELL = 3  # the top row's last: the outcome panels (reward, accuracy, growth, scatter) read as one row
_STYLES = ("-", "--", ":", "-.")


def draw_ppo(fig: FigureBase, groups: Sequence[Group]) -> None:
    ppo_groups = [g for g in groups if any(r.ppo is not None for r in g.runs)]
    cells = list(fig.subplots(*PPO_GRID).ravel())
    scatter = cells.pop(SCATTER_CELL)
    for ax, (title, columns) in zip(cells, PPO_PANELS, strict=True):
        if ax is not cells[0]:
            ax.sharex(cells[0])
        _ppo_panel(ax, ppo_groups, columns)
        ax.set_title(title, fontsize=9)
    for ax in cells[-PPO_GRID[1]:]:
        ax.set_xlabel("update", fontsize=8)
    _draw_episode_scatter(scatter, ppo_groups)
    fig.suptitle("PPO")


def _ppo_panel(ax: Any, ppo_groups: Sequence[Group], columns: tuple[str, ...]) -> None:
    """One per-update panel: each column of each group (mean ± std over its runs); a column a run's
    ppo.csv lacks (an older run) is not drawn for that run."""
    many = len(columns) > 1
    for g in ppo_groups:
        tables = [r.ppo for r in g.runs if r.ppo is not None]
        for k, col in enumerate(columns):
            colour = GROUP_COLOURS[k] if many and len(ppo_groups) == 1 else g.colour
            label = col.removeprefix("entropy_").removeprefix("mean_") if many else g.label
            _band(ax, [(t["update"], t[col]) for t in tables if col in t], colour, label, _STYLES[k] if many else "-")
        if columns == ("approx_kl",):
            for t in tables:
                stop = t["early_stopped"] > 0
                ax.plot(t["update"][stop], t["approx_kl"][stop], "x", color="red", markersize=5)
    if not ax.lines:
        _note(ax, "not in this ppo.csv")
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0] and (many or len(ppo_groups) > 1):
        ax.legend(fontsize=6)


def _draw_episode_scatter(ax: Any, ppo_groups: Sequence[Group]) -> None:
    """Each episode's return (y) against its final accuracy (x), one colour per group; Pearson's r of the
    group's pooled episodes in the title (one group) or the legend (several)."""
    title = "return vs final accuracy"
    for g in ppo_groups:
        tables = [r.episodes for r in g.runs if r.episodes is not None]
        if not tables:
            continue
        r, n = return_accuracy_r(tables)
        shown = f"r = {r:+.2f}, n = {n}" if np.isfinite(r) else f"r undefined, n = {n}"
        for t in tables:
            ax.scatter(t["final_acc"], t["return"], s=10, color=g.colour, alpha=0.6, linewidths=0,
                       label=f"{g.label}: {shown}" if t is tables[0] else None)
        if len(ppo_groups) == 1:
            title += f"\n({shown})"
    if not ax.collections:
        _note(ax, "no episodes.csv")
    ax.set_title(title, fontsize=9)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.set_xlabel("episode final accuracy", fontsize=8)
    ax.set_ylabel("episode return", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)
    if len(ppo_groups) > 1 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5", fontsize=8)


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


__all__ = ["DPI", "PANEL_SIZE", "PPO_SIZE", "REPORT_CELL", "SEEDS_SIZE", "ReportError", "pixel_size", "report_grid",
           "write_report"]
