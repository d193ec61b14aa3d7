"""Console backend (docs/runtime.md §6.5): rich progress on a TTY, plain one-line-per-event logs elsewhere.

On a terminal a transient display shows a run bar with ETA, an epoch bar the trainer feeds
through `set_batch_progress` (CPU-side counters, no device sync) and a compact table of the
slots; the event lines scroll above it. Without a terminal (a log file, CI) the same lines are
printed plainly, one per event, so the log reads the same. What appears is decided by the
hub's level: `epoch.metrics` is a normal-level event, lifecycle and governor lines minimal.
"""

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from esper.core import diag_events as dg
from esper.core import events as ev
from esper.core.stages import Stage
from esper.core.summary import RunSummary
from esper.core.wire import event_fields
from esper.shell.telemetry.hub import Record


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def pp(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.1f}pp"


def slot_text(s: ev.SlotStatus) -> str:
    text = f"{s.slot}:{s.stage.name}"
    if s.stage in (Stage.BLENDING, Stage.PROBATIONARY):
        text += f" α{s.alpha:.2f}"
    return f"{text} {pp(s.contribution)}".rstrip()


def epoch_line(m: ev.EpochMetrics, total: int | None) -> str:
    """`epoch 12/30  train 1.234 56.1%  val 1.301 54.0%  params 6,418+9,280  late:BLENDING α0.60 …`."""
    host = m.params - m.seed_params
    slots = "  ".join(slot_text(s) for s in m.slots if s.stage != Stage.DORMANT)
    action = f"{m.action}({m.reason})" if m.reason else m.action
    parts = [
        f"epoch {m.epoch}/{total}" if total else f"epoch {m.epoch}",
        f"train {m.train_loss:.3f} {pct(m.train_acc)}",
        f"val {m.val_loss:.3f} {pct(m.val_acc)}",
        f"params {host:,}+{m.seed_params:,}",
        slots,
        action,
        "rollback" if m.rollback else "",
        f"{m.epoch_s:.1f}s",
    ]
    return "  ".join(p for p in parts if p)


def _germinated(e: ev.SeedGerminated) -> str:
    return f"{e.slot}: germinated {e.seed_id} {e.blueprint} ({e.n_params:,} params, tempo {e.tempo})"


def _stage(e: ev.StageChanged) -> str:
    return f"{e.slot}: {e.seed_id} {e.from_stage.name} → {e.to_stage.name} ({e.reason})"


def _fossilized(e: ev.SeedFossilized) -> str:
    return f"{e.slot}: {e.seed_id} fossilized, contribution {pp(e.contribution) or '—'}, age {e.age}"


def _culled(e: ev.SeedCulled) -> str:
    contribution = pp(e.contribution) or "—"
    return f"{e.slot}: {e.seed_id} culled in {e.stage.name} ({e.reason}), contribution {contribution}"


def _rollback(e: ev.GovernorRollback) -> str:
    culled = ", ".join(e.culled) or "none"
    return (f"governor: rollback {e.rollbacks}/{e.max_rollbacks} ({e.reason}, loss {e.loss:.4g}) to epoch "
            f"{e.snapshot_epoch}; culled {culled}; lr ×{e.lr_factor:g}")


def _run_start(e: ev.RunStarted) -> str:
    return (f"run: {e.task}, controller {e.controller}, seed {e.seed}, {e.epochs} epochs on {e.device} "
            f"({e.precision}), host {e.host_params:,} params")


def _checkpoint(e: ev.CheckpointSaved) -> str:
    return f"checkpoint: {e.path} ({e.bytes / 1e6:.1f} MB, {e.seconds:.2f}s)"


def _gate(e: ev.GateEvaluated) -> str:
    verdict = "passed" if e.passed else f"failed ({e.reason})"
    return f"{e.slot}: {e.seed_id or '-'} {e.gate} {verdict}"


def _rejected(e: ev.ActionRejected) -> str:
    return f"controller: {e.action} rejected ({e.reason})"


def _rollout(e: ev.RolloutDone) -> str:
    n = max(len(e.final_acc), 1)
    cut = sum(1 for t in e.truncated if t)
    return (f"rollout {e.batch}: final acc {sum(e.final_acc) / n:.2%}, return {sum(e.raw_return) / n:+.3f}, "
            f"germinated {sum(e.germinations)}, fossilized {sum(e.fossilizations)}, culled {sum(e.culls)}"
            + (f", {cut} cut" if cut else "") + f" ({e.wall_s:.1f}s)")


def _update(e: ev.PPOUpdate) -> str:
    stop = " early-stopped" if e.early_stopped else ""
    return (f"ppo update {e.update}: loss {e.loss:+.3f} (value {e.value_loss:.3f}), op entropy {e.entropy:.2f}, "
            f"kl {e.approx_kl:.4f}, ev {e.explained_variance:+.2f}{stop}")


def _anomaly(e: ev.RLAnomaly) -> str:
    return f"ppo anomaly: {e.check}{f' ({e.head})' if e.head else ''} {e.value:.4g} vs {e.threshold:.4g}"


def _generic(e: ev.Event) -> str:
    # `epoch` is already the line's prefix; nested values as compact JSON.
    fields = " ".join(f"{k}={json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v}"
                      for k, v in event_fields(e).items() if k != "epoch")
    return f"{e.kind} {fields}".strip()


_LINES: dict[type, Callable[[Any], str]] = {
    ev.SeedGerminated: _germinated, ev.StageChanged: _stage, ev.SeedFossilized: _fossilized,
    ev.SeedCulled: _culled, ev.GovernorRollback: _rollback, ev.RunStarted: _run_start,
    ev.CheckpointSaved: _checkpoint, ev.GateEvaluated: _gate, ev.ActionRejected: _rejected,
    ev.RolloutDone: _rollout, ev.PPOUpdate: _update, ev.RLAnomaly: _anomaly,
}
# Shown elsewhere: warnings by the hub on stderr, the run's end by `print_summary`. Diagnostics
# are for events.jsonl and TensorBoard (the console keeps one line per epoch), except an isolation
# violation: a defect of the model, shown when it happens.
_SILENT = (ev.TelemetryWarning, ev.RunEnded, dg.DiagGradients, dg.DiagWeights, dg.DiagSharpness,
           dg.DiagPerClass, dg.DiagConfusion, dg.DiagActivations)


def event_line(record: Record, total: int | None = None) -> str | None:
    e = record.event
    if isinstance(e, _SILENT) or (isinstance(e, dg.DiagIsolation) and not any(e.violations.values())):
        return None
    if isinstance(e, ev.EpochMetrics):
        return epoch_line(e, total)
    line = _LINES.get(type(e), _generic)(e)
    return line if record.epoch is None else f"epoch {record.epoch}  {line}"


def slot_table(slots: tuple[ev.SlotStatus, ...]) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("slot", "stage", "blueprint", "α", "contrib"):
        table.add_column(col)
    for s in slots:
        table.add_row(s.slot, s.stage.name, s.blueprint or "", f"{s.alpha:.2f}", pp(s.contribution))
    return table


class ConsoleBackend:
    name = "console"

    def __init__(self, *, file: TextIO | None = None, progress: bool | None = None,
                 total_epochs: int | None = None, console: Console | None = None) -> None:
        self.console = console or Console(file=file, highlight=False)
        self.total = total_epochs
        self._progress_wanted = self.console.is_terminal if progress is None else progress
        self._lock = threading.Lock()  # the trainer thread feeds the epoch bar
        self._progress: Progress | None = None
        self._live: Live | None = None
        self._run_task: Any = None
        self._epoch_task: Any = None
        self._slots: tuple[ev.SlotStatus, ...] = ()

    def handle(self, record: Record) -> None:
        e = record.event
        if isinstance(e, ev.RunStarted):
            self.total = e.epochs
            self._start_live()
        if isinstance(e, ev.EpochMetrics):
            self._epoch_done(e)
        line = event_line(record, self.total)
        if line is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        if isinstance(e, ev.RunEnded):
            self._stop_live()

    def set_batch_progress(self, done: int, total: int) -> None:
        """Epoch bar: `done` of `total` batches (call every ~10 steps; cheap, never syncs)."""
        with self._lock:
            if self._progress is not None:
                self._progress.update(self._epoch_task, completed=done, total=total)

    def flush(self) -> None:
        self.console.file.flush()

    def close(self) -> None:
        self._stop_live()
        self.flush()

    def _start_live(self) -> None:
        if not self._progress_wanted or self._live is not None:
            return
        with self._lock:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), console=self.console,
            )
            self._run_task = self._progress.add_task("run", total=self.total)
            self._epoch_task = self._progress.add_task("epoch", total=None)
            self._live = Live(self._renderable(), console=self.console, transient=True,
                              refresh_per_second=4)
            self._live.start()

    def _epoch_done(self, m: ev.EpochMetrics) -> None:
        self._slots = m.slots
        with self._lock:
            if self._progress is None or self._live is None:
                return
            self._progress.update(self._run_task, completed=m.epoch, total=self.total)
            self._progress.reset(self._epoch_task, total=None)
            self._live.update(self._renderable())

    def _renderable(self) -> Group:
        assert self._progress is not None
        return Group(self._progress, slot_table(self._slots)) if self._slots else Group(self._progress)

    def _stop_live(self) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
            self._live = self._progress = None


def done_line(summary: RunSummary, run_dir: str | Path | None = None) -> str:
    """`done: val 61.3% (best 62.0% @44)  params 15,698  fossilized 1 culled 1  212s → runs/<id>`."""
    best = f" (best {pct(summary.best_val_acc)} @{summary.best_epoch})" if summary.best_epoch else ""
    parts = [
        f"done: val {pct(summary.final_val_acc)}{best}",
        f"params {summary.total_params:,}",
        f"fossilized {summary.count('fossilized')} culled {summary.count('culled')}",
        f"{summary.wall_s:.0f}s" + (f" → {run_dir}" if run_dir else ""),
    ]
    if summary.status != "ok":
        parts.insert(0, f"[{summary.status}]")
    if dropped := {k: v for k, v in summary.dropped.items() if v}:
        parts.append("telemetry dropped " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    return "  ".join(parts)


def summary_table(summary: RunSummary) -> Table:
    table = Table(title=f"{summary.task} · {summary.controller} · seed {summary.seed}")
    for col in ("seed", "slot", "blueprint", "germinated", "end", "fate", "contribution"):
        table.add_column(col)
    for s in summary.seeds:
        end = "" if s.end_epoch is None else str(s.end_epoch)
        fate = s.fate if s.cull_reason is None else f"{s.fate} ({s.cull_reason})"
        table.add_row(s.seed_id, s.slot, s.blueprint, str(s.germinated_epoch), end, fate, pp(s.contribution))
    table.caption = (f"final {pct(summary.final_val_acc)}, best {pct(summary.best_val_acc)}; params "
                     f"{summary.host_params:,} host + {summary.seed_params:,} seeds")
    return table


def print_summary(summary: RunSummary, run_dir: str | Path | None = None, *,
                  console: Console | None = None, table: bool = True) -> None:
    """The end of a run on the console, at every level (`off` prints only the `done:` line)."""
    console = console or Console(highlight=False)
    if table:
        console.print(summary_table(summary))
    console.print(done_line(summary, run_dir), markup=False, highlight=False, soft_wrap=True)
