"""JSONL backend (docs/runtime.md §4.2, §4.6): one schema-v1 record per line.

Each line goes to the kernel in one `os.write` on an `O_APPEND` descriptor, so there is no
user-space buffer to lose: a SIGKILL loses no line already written, and can tear at most the line
being written (Linux may cut a write short at a page boundary when a fatal signal is pending), always
the last one. Resume moves such a torn tail aside (`rundir.cut_back`); `read_records` names it.
`--events PATH` copies from several runs can share a file and `run_id` tells them apart. `flush` fsyncs.
"""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esper.shell.telemetry.hub import Record


def encode_record(record: Record) -> bytes:
    """One complete line: compact JSON of the v1 record, newline-terminated."""
    text = json.dumps(record.to_json(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def write_line(fd: int, line: bytes) -> None:
    """Write a complete line; a regular file takes it in one call (the loop is for pipes)."""
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view):]


class JsonlBackend:
    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.name = name or f"jsonl:{self.path.name}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def handle(self, record: Record) -> None:
        write_line(self._fd, encode_record(record))

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Parse every line of a JSONL file (a reader for tests, resume and reports)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                raise ValueError(f"{path}:{n}: torn last line {line[:60]!r}")
            yield json.loads(line)
