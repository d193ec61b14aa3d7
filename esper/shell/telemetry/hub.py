"""The per-run telemetry hub (docs/runtime.md §4.1).

`emit` filters by level and profile, stamps `seq` and `time`, and hands the record to every
backend's own bounded mailbox without ever blocking; one worker thread per backend drains its
mailbox, so a slow backend delays nobody but itself and a full mailbox drops (and counts) only
droppable events. A backend that raises is detached with one warning and training continues.

(§4.1 sketches one writer thread fanning out in order; a thread per backend is what keeps a
slow TensorBoard writer from starving the JSONL file, at the cost of per-backend drop counts.)
"""

import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

import attrs

from esper.core.events import Event, TelemetryDropped, TelemetryWarning
from esper.core.wire import (
    SCHEMA_VERSION,
    Level,
    Profile,
    admits,
    droppable,
    event_fields,
    severity_of,
    wants,
)

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_FLUSH_TIMEOUT_S = 10.0


@attrs.frozen
class Record:
    """One emitted event with the hub's stamps; what every backend receives."""

    run_id: str
    seq: int
    time: float  # Unix seconds, stamped by the hub at emit
    epoch: int | None
    env: int
    event: Event

    @property
    def kind(self) -> str:
        return self.event.kind

    def to_json(self) -> dict[str, Any]:
        """The JSONL record of schema v1 (§4.2)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "seq": self.seq,
            "time": iso_time(self.time),
            "event": self.kind,
            "severity": severity_of(self.event).value,
            "epoch": self.epoch,
            "env": self.env,
            "fields": event_fields(self.event),
        }


def iso_time(t: float) -> str:
    """UTC ISO-8601 with milliseconds and a `Z`, e.g. `2026-11-25T18:15:31.204Z`."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Backend(Protocol):
    """What the hub drives; all three methods run on the backend's own worker thread."""

    name: str

    def handle(self, record: Record) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@attrs.define
class _Flush:
    done: threading.Event = attrs.field(factory=threading.Event)


_STOP = object()


class _Worker:
    """A backend, its bounded mailbox and the thread that drains it."""

    def __init__(self, backend: Backend, name: str, bound: int,
                 on_failure: Callable[["_Worker", BaseException], None]) -> None:
        self.backend, self.name, self._bound = backend, name, bound
        self._on_failure = on_failure
        self._items: deque[tuple[Any, bool]] = deque()
        self._cond = threading.Condition()
        self._bounded = 0  # droppable items waiting: only these count against the bound
        self.dropped = 0
        self.failed: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"esper-telemetry-{name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return not self._closed

    def put(self, item: Any, may_drop: bool) -> bool:
        """Queue `item`; False if it was dropped (mailbox full) or the worker is closed."""
        with self._cond:
            if self._closed:
                return False
            if may_drop:
                if self._bounded >= self._bound:
                    self.dropped += 1
                    return False
                self._bounded += 1
            self._items.append((item, may_drop))
            self._cond.notify()
            return True

    def stop(self, deadline: float) -> None:
        """Ask the worker to close its backend; wait until `deadline`; abandon what is left."""
        self.put(_STOP, False)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._closed = True
            if self._thread.is_alive():  # still stuck in the backend: what waits is lost
                self.dropped += sum(1 for item, _ in self._items if isinstance(item, Record))
                self._items = deque([(_STOP, False)])  # if it ever returns, it closes and ends
                self._bounded = 0

    def _take(self) -> Any:
        with self._cond:
            while not self._items:
                self._cond.wait()
            item, may_drop = self._items.popleft()
            self._bounded -= may_drop
            return item

    def _run(self) -> None:
        while self.failed is None:
            item = self._take()
            if isinstance(item, _Flush):
                self._call(self.backend.flush)
                item.done.set()
            elif item is _STOP:
                self._call(self.backend.close)
                return
            else:
                self._call(self.backend.handle, item)

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # any backend failure detaches the backend, never the run
            self._detach(exc)

    def _detach(self, exc: BaseException) -> None:
        self.failed = exc
        with self._cond:
            self._closed = True
            waiting = [item for item, _ in self._items if isinstance(item, _Flush)]
            self._items.clear()
            self._bounded = 0
        with contextlib.suppress(Exception):  # it failed once already: that is the warning
            self.backend.close()
        self._on_failure(self, exc)  # before answering flush(): close() flushes, then seals the hub
        for marker in waiting:  # the thread ends after this
            marker.done.set()

    def flush_marker(self) -> _Flush | None:
        if not self.alive:
            return None
        marker = _Flush()
        return marker if self.put(marker, False) else None


class TelemetryHub:
    """One per run, passed explicitly and closed in `finally` (usable as a context manager)."""

    def __init__(
        self,
        run_id: str,
        *,
        level: Level | str = Level.NORMAL,
        profile: Profile | str = Profile.STANDARD,
        env: int = 0,
        backends: Iterable[Backend] = (),
        queue_size: int = DEFAULT_QUEUE_SIZE,
        start_seq: int = 0,
        clock: Callable[[], float] = time.time,
        stderr: TextIO | None = None,
    ) -> None:
        self.run_id = run_id
        self.level = Level.parse(level)
        self.profile = Profile.parse(profile)
        self.env = env
        self._queue_size = queue_size
        self._clock = clock
        self._stderr = stderr
        self._lock = threading.Lock()
        self._seq = start_seq
        self._epoch: int | None = None
        self._workers: list[_Worker] = []
        self._reported_drops = 0
        self._closed = False
        self._final_drops: dict[str, int] | None = None
        for backend in backends:
            self.attach(backend)

    # --- wiring ---------------------------------------------------------------------------

    def attach(self, backend: Backend) -> str:
        """Subscribe a backend to every later event; returns its (unique) name."""
        base = getattr(backend, "name", type(backend).__name__)
        taken = {w.name for w in self._workers}
        name = base if base not in taken else next(f"{base}#{i}" for i in range(2, 10**6)
                                                   if f"{base}#{i}" not in taken)
        with self._lock:
            self._workers.append(_Worker(backend, name, self._queue_size, self._backend_failed))
        return name

    @property
    def backends(self) -> dict[str, Backend]:
        return {w.name: w.backend for w in self._workers if w.alive}

    @property
    def detached(self) -> dict[str, BaseException]:
        return {w.name: w.failed for w in self._workers if w.failed is not None}

    @property
    def next_seq(self) -> int:
        """The `seq` the next event will get (checkpoints save it; resume starts from it)."""
        return self._seq

    # --- emission -------------------------------------------------------------------------

    def admits(self, event: Event) -> bool:
        return not self._closed and admits(self.level, self.profile, event)

    def wants(self, kind: str) -> bool:
        """Should the shell compute the diagnostic whose event is `kind`? (§4.4: not if dropped.)"""
        return wants(self.level, self.profile, kind)

    def emit(self, event: Event, *, epoch: int | None = None, env: int | None = None) -> int | None:
        """Stamp and queue `event`; returns its `seq`, or None if the level/profile filtered it.

        Never blocks on a backend. The record's epoch is `epoch`, else the event's own
        `epoch` field, else the last `set_epoch`.
        """
        if not self.admits(event):
            return None
        may_drop = droppable(event.kind)
        if epoch is None:
            own = getattr(event, "epoch", None)
            epoch = own if isinstance(own, int) else self._epoch
        with self._lock:  # seq order == mailbox order, also when a worker emits a warning
            seq, self._seq = self._seq, self._seq + 1
            record = Record(self.run_id, seq, self._clock(), epoch, self.env if env is None else env, event)
            for worker in self._workers:
                worker.put(record, may_drop)
        return seq

    def emit_all(self, events: Iterable[Event], *, epoch: int | None = None, env: int | None = None) -> None:
        for event in events:
            self.emit(event, epoch=epoch, env=env)

    def set_epoch(self, epoch: int) -> None:
        """Epoch stamp for events without one; also reports drops since the last epoch (≤ 1 event)."""
        self._epoch = epoch
        self.report_drops()

    def report_drops(self) -> None:
        total = self.dropped_total
        if total > self._reported_drops:
            since, self._reported_drops = total - self._reported_drops, total
            self.emit(TelemetryDropped(total=total, since_last=since, per_backend=self.dropped))

    def warn(self, source: str, message: str) -> None:
        """The hub's warning path: one stderr line, and a `telemetry.warning` to the backends."""
        stream = self._stderr if self._stderr is not None else sys.stderr
        with contextlib.suppress(OSError, ValueError):  # stderr gone: the event still reaches files
            print(f"esper: warning: {message}", file=stream, flush=True)
        self.emit(TelemetryWarning(source=source, message=message))

    def _backend_failed(self, worker: _Worker, exc: BaseException) -> None:
        self.warn("telemetry", f"telemetry backend {worker.name!r} failed "
                               f"({type(exc).__name__}: {exc}); detached, training continues")

    # --- counters, flush, close -----------------------------------------------------------

    @property
    def dropped(self) -> dict[str, int]:
        if self._final_drops is not None:
            return dict(self._final_drops)
        return {w.name: w.dropped for w in self._workers}

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> bool:
        """Drain every mailbox and flush (fsync) every backend; False if `timeout` ran out."""
        deadline = time.monotonic() + timeout
        markers = [m for w in list(self._workers) if (m := w.flush_marker()) is not None]
        return all(m.done.wait(max(0.0, deadline - time.monotonic())) for m in markers)

    def close(self, timeout: float = DEFAULT_FLUSH_TIMEOUT_S) -> dict[str, int]:
        """Drain and close every backend; returns the final drop count per backend.

        Events still waiting for a backend that is stuck past `timeout` count as dropped.
        Idempotent; later `emit` calls are ignored.
        """
        if self._final_drops is not None:
            return dict(self._final_drops)
        deadline = time.monotonic() + timeout
        # Drain first while the hub still accepts events, so a backend failing on its last
        # records still gets its warning to the others; only then refuse new events.
        self.flush(timeout)
        self._closed = True
        for worker in list(self._workers):
            worker.stop(deadline)
        self._final_drops = {w.name: w.dropped for w in self._workers}
        return dict(self._final_drops)

    def __enter__(self) -> "TelemetryHub":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
