"""The run directory (docs/runtime.md §4.6): layout, atomic results files and `metrics.csv`.

```
runs/<run_id>/  config.json  summary.json  events.jsonl  metrics.csv  checkpoints/  tb/  .lock
```
`.lock` is the writer's lock (`locked`, an OS file lock held for the run's whole life: the OS
drops it when the process dies, so a killed run never leaves a stale one); readers never take it.
`config.json` and `summary.json` are replaced atomically (temp file, fsync, `os.replace`,
fsync of the directory), so a reader sees the old or the new file, never a torn one.
`metrics.csv` is a result, not telemetry: the trainer appends a row per epoch at every
level, `off` included, so it is written directly rather than through the hub's level filter.
"""

import contextlib
import csv
import io
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from esper.core import codec
from esper.core.events import EpochMetrics, SlotStatus
from esper.core.summary import RunSummary
from esper.core.wire import to_wire
from esper.shell.telemetry.jsonl import JsonlBackend, write_line

METRICS_COLUMNS = (
    "episode", "env", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "params",
    "seed_params", "live_seeds", "fossilized", "action", "reason", "rollback", "epoch_s",
)
SLOT_COLUMNS = ("stage", "blueprint", "alpha", "contrib")
LOCK_FILE = ".lock"
# What a run writes into its directory: a start that left only these (and no checkpoint) may start afresh.
RUN_FILES = frozenset({"config.json", "summary.json", "events.jsonl", "events.discarded.jsonl", "metrics.csv",
                       "ppo.csv", "episodes.csv", "error.txt", "checkpoints", "tb", "wandb", "report", "rollouts",
                       LOCK_FILE})
_FAILED_RUN_ATTR = "esper_run_dir"


def tag_failed_run(exc: BaseException, run_dir: Path) -> None:
    """Mark an exception leaving a run with that run's directory, so the CLI writes its traceback
    to `<run>/error.txt` (§4.6) rather than into the user's working directory."""
    with contextlib.suppress(AttributeError):  # a type with __slots__: the CLI uses a temp file
        setattr(exc, _FAILED_RUN_ATTR, run_dir)


def failed_run_dir(exc: BaseException) -> Path | None:
    """The directory `tag_failed_run` put on `exc`, if any."""
    return getattr(exc, _FAILED_RUN_ATTR, None)


class RunDirectoryError(Exception):
    """The run directory cannot be used as asked (exists without resume, or is missing)."""


def make_run_id(task: str, controller: str, seed: int, now: datetime | None = None) -> str:
    """`<task>-<controller>-s<seed>-<UTC yyyymmddThhmmssZ>-<4 hex>` (§4.2)."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{task}-{controller}-s{seed}-{stamp}-{secrets.token_hex(2)}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace `path` with `data` so that a crash leaves the old file or the new, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    # Exact floats: config.json must reproduce the run it came from (§6.3).
    text = json.dumps(to_wire(obj, digits=None), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def metrics_row(event: EpochMetrics, env: int = 0) -> dict[str, Any]:
    """The `metrics.csv` row of one epoch (§4.6), per-slot columns last."""
    row: dict[str, Any] = {name: env if name == "env" else getattr(event, name) for name in METRICS_COLUMNS}
    for slot in event.slots:
        row.update(_slot_cells(slot))
    return row


def _slot_cells(slot: SlotStatus) -> dict[str, Any]:
    return {
        f"{slot.slot}_stage": slot.stage.name, f"{slot.slot}_blueprint": slot.blueprint,
        f"{slot.slot}_alpha": slot.alpha, f"{slot.slot}_contrib": slot.contribution,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return str(to_wire(value))  # 7 significant digits, nan/inf spelled out, as in the JSONL
    return str(value)


class MetricsCsv:
    """Append-only CSV whose header is fixed by the first row (or by the existing file on resume).

    A later row with a column the header lacks raises: a silently dropped column would be a
    wrong result file, and enabled slots never change within a run.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.header: tuple[str, ...] | None = self._existing_header()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _existing_header(self) -> tuple[str, ...] | None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, newline="", encoding="utf-8") as f:
            return tuple(next(csv.reader(f)))

    def append(self, row: Mapping[str, Any]) -> None:
        if self.header is None:
            self.header = tuple(row)
            self._write([*self.header])
        if extra := [k for k in row if k not in self.header]:
            raise ValueError(f"{self.path}: columns {extra} are not in the header")
        self._write([_cell(row.get(name)) for name in self.header])

    def _write(self, cells: list[str]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(cells)
        write_line(self._fd, buf.getvalue().encode("utf-8"))  # one write per row: no torn rows

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.fsync(fd)
            os.close(fd)


def _has_content(path: Path) -> bool:
    """Anything but empty folders and the lock (a run that died before writing a file left only `checkpoints/`)."""
    if not path.exists():
        return False
    return not path.is_dir() or any(not p.is_dir() and p != path / LOCK_FILE for p in path.rglob("*"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold `<path>/.lock` (created with the directory) while a run writes to `path`; a second writer
    is refused at once. flock: the OS releases it when the holder dies, however it dies."""
    path.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path / LOCK_FILE)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise RunDirectoryError(f"{path} is in use by another run (it holds {path / LOCK_FILE}); "
                                "wait for it to end or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def never_checkpointed(path: Path) -> bool:
    """A start that left nothing to continue: its config.json, no checkpoint, no summary but an
    interrupted one, and nothing but what a run writes (docs/runtime.md §4.6). It may start afresh."""
    checkpoints = path / "checkpoints"
    if not (path / "config.json").is_file() or (checkpoints / "latest.json").exists():
        return False
    if any(checkpoints.glob("*.pt")) or not all(_written_by_a_run(p.name) for p in path.iterdir()):
        return False
    summary = path / "summary.json"
    try:
        return not summary.exists() or json.loads(summary.read_text(encoding="utf-8"))["status"] == "interrupted"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _written_by_a_run(name: str) -> bool:
    return name in RUN_FILES or (name.startswith(".") and ".tmp." in name)  # a temp file torn by the kill


def clear_for_a_fresh_start(path: Path) -> None:
    """Delete what a start that never checkpointed left (`never_checkpointed`), all but the held lock."""
    for entry in path.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class RunDirectory:
    """`runs/<run_id>/`: refuses to reuse a non-empty directory unless resuming."""

    def __init__(self, path: str | os.PathLike[str], *, resume: bool = False, create: bool = True) -> None:
        """`create=False` checks and writes nothing: the driver validates the run first, `create()`s later."""
        self.path = Path(path)
        self.resume = resume
        self._metrics: MetricsCsv | None = None
        self.check(resume=resume)
        if create:
            self.create()

    def check(self, *, resume: bool) -> None:
        if resume and not self.path.is_dir():
            raise RunDirectoryError(f"cannot resume: {self.path} is not a run directory")
        if not resume and _has_content(self.path):
            raise RunDirectoryError(
                f"{self.path} exists and is not empty; pass --resume {self.path} to continue it "
                "or choose another --out"
            )

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    @property
    def wandb_dir(self) -> Path:
        return self.path  # wandb.init(dir=...) writes its own `wandb/` folder in it

    def write_config(self, config: Mapping[str, Any]) -> Path:
        return atomic_write_json(self.config_path, dict(config))

    def read_config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def write_summary(self, summary: RunSummary) -> Path:
        return atomic_write_json(self.summary_path, codec.encode(summary))

    def read_summary(self) -> RunSummary:
        return codec.decode(RunSummary, json.loads(self.summary_path.read_text(encoding="utf-8")))

    def events_backend(self) -> JsonlBackend:
        """The JSONL backend on `events.jsonl` (not created at level `off`: call this only above it)."""
        return JsonlBackend(self.events_path, name="events.jsonl")

    def append_metrics(self, event: EpochMetrics, *, env: int = 0) -> None:
        if self._metrics is None:
            self._metrics = MetricsCsv(self.metrics_path)
        self._metrics.append(metrics_row(event, env))

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None


def cut_back(run_dir: Path, steps: int, seq: int, result_csvs: Sequence[tuple[str, str]]) -> None:
    """Each result CSV (file, step column) to the checkpoint's step, events.jsonl to its seq (cut lines
    kept aside in events.discarded.jsonl): the resumed run appends what the uninterrupted one would have."""
    for name, column in result_csvs:
        cut_csv(run_dir / name, column, steps)
    events = run_dir / "events.jsonl"
    if events.exists():
        keep, cut = [], []
        for line in events.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                (keep if json.loads(line)["seq"] < seq else cut).append(line)
            except (json.JSONDecodeError, KeyError):
                cut.append(line)  # a torn last line from the kill
        events.write_text("".join(keep), encoding="utf-8")
        if cut:
            with (run_dir / "events.discarded.jsonl").open("a", encoding="utf-8") as f:
                f.writelines(cut)


def cut_csv(path: Path, column: str, last: int) -> None:
    """Keep the header and the rows whose `column` is at most `last` (a torn row from a kill goes
    too), in the file's own line ending, so a resumed file equals the uninterrupted run's."""
    if not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as f:
        ending = "\r\n" if f.readline().endswith("\r\n") else "\n"
        f.seek(0)
        rows = list(csv.reader(f))
    if not rows:
        return
    where = rows[0].index(column)

    def step(row: list[str]) -> float:
        try:
            return int(row[where])
        except (IndexError, ValueError):
            return math.inf

    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator=ending).writerows([rows[0], *(r for r in rows[1:] if step(r) <= last)])
