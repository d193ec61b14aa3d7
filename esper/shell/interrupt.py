"""SIGTERM closes a run exactly as Ctrl-C does (docs/runtime.md §7).

A scheduler pre-empts a job with SIGTERM (then SIGKILL after a grace period). Python's default for
SIGTERM is to die at once: no checkpoint, no status, no `run.end`. While a run is driven, SIGTERM
raises `Terminated`, a KeyboardInterrupt, so every path that closes an interrupted run serves both;
the CLI exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells report them.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM received: the run closes as interrupted."""

    signum = int(signal.SIGTERM)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + int(getattr(interrupt, "signum", signal.SIGINT))


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM raises `Terminated` inside the block; the previous handler comes back after it (a
    library caller's own). Python delivers signals to the main thread only, so elsewhere (a worker
    thread) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
