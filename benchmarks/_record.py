"""The one JSON record every benchmark writes: what ran, where, with which versions, and its numbers.

    record = {"benchmark", "time_utc", "command", "device", "device_name", "threads", "python", "torch",
              "esper", "git_commit", "git_dirty", "summary": {key numbers}, "results": {everything}}

`summary` holds the few numbers a reader (and `run_all.py`'s one summary of `make bench-gpu`) quotes;
`results` holds the benchmark's whole table. The file is `<out>/<benchmark>-<device>-<YYYYmmddTHHMMSSZ>.json`,
`out` being `--out DIR` (default benchmarks/results/). Imported as `_record` by each benchmark: run as
`python benchmarks/bench_x.py`, the script's folder is first on sys.path.
"""

import argparse
import importlib.metadata
import json
import platform
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON record (benchmarks/results)")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name ("model name" in /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return cpu_model()


def esper_version() -> str:
    try:
        return importlib.metadata.version("esper")
    except importlib.metadata.PackageNotFoundError:  # a checkout run without `pip install -e .`
        return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def _git(*argv: str) -> str | None:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(device: torch.device | str) -> dict[str, Any]:
    """Where and with what a benchmark ran: device, versions, commit, command line, time."""
    device = torch.device(device)
    status = _git("status", "--porcelain")
    return {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "device": device.type, "device_name": device_name(device), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "esper": esper_version(),
            "git_commit": _git("rev-parse", "HEAD") or "unknown", "git_dirty": None if status is None else bool(status)}


def jsonable(value: Any) -> Any:
    """Paths and other odd leaves as strings, so any argparse namespace or result table serialises."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_record(benchmark: str, device: torch.device | str, summary: dict[str, Any], results: dict[str, Any],
                 out: Path = RESULTS) -> Path:
    """Write the benchmark's record under `out`; print and return its path."""
    record = {"benchmark": benchmark, **environment(device), "summary": jsonable(summary),
              "results": jsonable(results)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{benchmark}-{record['device']}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}", flush=True)
    return path
