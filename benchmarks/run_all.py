"""`make bench-gpu` in one command: the gpu tests and every benchmark, each a subprocess with its own
timeout, under one wall-clock budget; ONE JSON summary on stdout and in the results folder.

    python benchmarks/run_all.py [--device cuda] [--budget-s 470] [--only NAME ...] [--out benchmarks/results]

Steps run in the order of `default_steps` (bench_epoch first: issue 17's targets come from it). A step
gets min(its own timeout, what is left of the budget), and is skipped once less than MIN_STEP_S is
left, so the whole run ends within the budget plus the start of python (470 s + a few: under 8 minutes).
A step past its timeout is killed with its whole process group (the spawned ranks and compare workers
too). A step that fails or times out is recorded with its rc and the tail of its stderr (and stdout:
pytest reports there) and the runner goes on; the exit status is 1 when any step failed or was
skipped, else 0.

Each benchmark writes its record (benchmarks/_record.py) into a folder of its own (`--out`), from where
the runner moves it to the results folder and quotes its `summary`; the gpu tests report their counts
through `--junitxml`. The summary (device, versions, per step: rc, seconds, its key numbers) also states
issue 17's GPU targets, from bench_epoch's record, with their measured values and met / not met:

    esper static epoch / plain eager loop              ≥ 0.8   (every task measured)
    reduce-overhead / eager, cifar10 host, preset batch ≥ 2.0   (the plain loop, compiled vs eager)
    3-slot counterfactual validation / one plain pass  ≤ 1.5   (the compiled pass when measured: a run's)

It goes to <out>/bench-<gpu|cpu>-<YYYYmmddTHHMMSSZ>.json. Step timeouts are estimates for one H100.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _record import RESULTS, ROOT, environment

MIN_STEP_S = 10.0  # below this a step is skipped rather than started to be killed
TAIL_CHARS = 2000


@dataclass(frozen=True)
class Step:
    """One subprocess: `python ARGV...`; "{out}" in ARGV is its record folder, "{device}" the device."""

    name: str
    argv: tuple[str, ...]
    timeout_s: float


def bench(name: str, timeout_s: float, *flags: str) -> Step:
    return Step(name, (f"benchmarks/{name}.py", "--device", "{device}", *flags, "--out", "{out}"), timeout_s)


def default_steps(device: str) -> list[Step]:
    """Every benchmark at small sizes (and the gpu tests on CUDA), most wanted first."""
    tests = [Step("gpu tests", ("-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                "--junitxml", "{out}/junit.xml"), 150)] if device == "cuda" else []
    return [
        bench("bench_epoch", 180, "--tasks", "cifar10", "--rows", "static", "--rounds", "3", "--train-size", "5120",
              "--val-size", "1000"),
        *tests,
        bench("bench_rl_envs", 45, "--n-envs", "4", "--epochs", "2", "--train-size", "2048"),
        bench("bench_profiles", 40, "--epochs", "3", "--train-size", "1024"),
        bench("bench_distributed", 60, "--ranks", "2", "--rounds", "1", "--batches", "1", "--epochs", "2"),
        bench("bench_compare_jobs", 45, "--jobs", "2", "--seeds", "1", "--epochs", "2", "--train-size", "512"),
        bench("bench_shared_numerics", 80, "--rounds", "3", "--calls", "10", "--updates", "2"),
        bench("bench_data_paths", 60, "--rounds", "2", "--train-size", "2048", "--val-size", "512"),
    ]


# --- one step ------------------------------------------------------------------------------------


def tail(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-TAIL_CHARS:] if path.exists() else ""


def run_process(command: list[str], folder: Path, timeout_s: float) -> tuple[int, bool]:
    """Run `command` in its own session (stdout, stderr to files in `folder`): (rc, timed out)."""
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and every process it started
            return proc.wait(), True


def test_counts(junit: Path) -> dict[str, int]:
    """passed / failed / errors / skipped from pytest's --junitxml report."""
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    return {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"], "errors": counts["errors"], "skipped": counts["skipped"]}


def collect(folder: Path, results: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The step's key numbers and its records, each record moved from `folder` into `results`."""
    numbers: dict[str, Any] = {}
    records = []
    if (folder / "junit.xml").exists():
        numbers |= test_counts(folder / "junit.xml")
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:  # a half-written file of a killed step
            continue
        results.mkdir(parents=True, exist_ok=True)
        record["path"] = str(shutil.move(path, results / path.name))
        records.append(record)
        numbers |= record.get("summary", {})
    return numbers, records


def run_step(step: Step, device: str, results: Path, timeout_s: float) -> tuple[dict[str, Any], list[dict]]:
    """Run one step; its entry of the summary (rc, seconds, numbers, tails on failure) and its records."""
    with tempfile.TemporaryDirectory(prefix="bench-step-") as scratch:
        folder = Path(scratch)
        argv = [arg.replace("{out}", scratch).replace("{device}", device) for arg in step.argv]
        started = time.perf_counter()
        rc, timed_out = run_process([sys.executable, *argv], folder, timeout_s)
        seconds = time.perf_counter() - started
        numbers, records = collect(folder, results)
        entry: dict[str, Any] = {"name": step.name, "command": " ".join(["python", *argv]).replace(scratch, "OUT"),
                                 "rc": rc, "seconds": round(seconds, 2), "timeout_s": round(timeout_s, 1),
                                 "timed_out": timed_out, "numbers": numbers,
                                 "records": [r["path"] for r in records]}
        if rc != 0:
            entry["stderr_tail"], entry["stdout_tail"] = tail(folder / "stderr.txt"), tail(folder / "stdout.txt")
    return entry, records


# --- issue 17's GPU targets ----------------------------------------------------------------------


def target(name: str, values: dict[str, float | None], bound: str, threshold: float, source: str) -> dict[str, Any]:
    """One target over the tasks measured: met when every measured value is on the right side."""
    measured = {task: v for task, v in values.items() if v is not None}
    met = None if not measured else all(v >= threshold if bound == ">=" else v <= threshold for v in measured.values())
    return {"target": name, "bound": f"{bound} {threshold}", "measured": measured, "met": met, "source": source}


def gpu_targets(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 17's three GPU targets from the (last) bench_epoch record; met None when not measured."""
    epoch = next((r for r in reversed(records) if r.get("benchmark") == "bench_epoch"), None)
    summary = (epoch or {}).get("summary", {})
    tasks: dict[str, dict] = summary.get("tasks", {})
    reduce_overhead = summary.get("compile_mode") == "reduce-overhead"
    compiled_cf = any("counterfactual_compiled_vs_plain" in t for t in tasks.values())
    cf_key = "counterfactual_compiled_vs_plain" if compiled_cf else "counterfactual_vs_plain"
    cf = {task: t.get(cf_key) for task, t in tasks.items()}
    return [
        target("esper static epoch / plain eager loop (both eager)",
               {task: t.get("esper_static_vs_plain_eager") for task, t in tasks.items()}, ">=", 0.8,
               "bench_epoch rows 'esper static' / 'plain eager' (images/s, median)"),
        target("reduce-overhead / eager, cifar10 host at the preset batch",
               {task: t.get("plain_compiled_vs_plain_eager") for task, t in tasks.items()
                if task == "cifar10" and reduce_overhead}, ">=", 2.0,
               f"bench_epoch rows 'plain compiled' / 'plain eager', compile mode {summary.get('compile_mode')}"),
        target("3-slot counterfactual validation / one plain validation pass", cf, "<=", 1.5,
               "bench_epoch " + ("counterfactual_compiled" if compiled_cf else "counterfactual") + " shared / plain"),
    ]


# --- the run -------------------------------------------------------------------------------------


def run_steps(steps: Sequence[Step], device: str, budget_s: float, results: Path) -> tuple[list, list]:
    """Each step in turn, within what is left of the budget; the summary's entries and every record."""
    deadline = time.perf_counter() + budget_s
    entries: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for step in steps:
        left = deadline - time.perf_counter()
        if left < MIN_STEP_S:
            entries.append({"name": step.name, "rc": None, "skipped": f"budget: {max(left, 0):.0f} s left"})
            print(f"[run_all] {step.name}: skipped, budget spent", file=sys.stderr, flush=True)
            continue
        print(f"[run_all] {step.name} (timeout {min(step.timeout_s, left):.0f} s)", file=sys.stderr, flush=True)
        entry, step_records = run_step(step, device, results, min(step.timeout_s, left))
        print(f"[run_all] {step.name}: rc {entry['rc']}{' (timed out)' if entry['timed_out'] else ''} in "
              f"{entry['seconds']:.1f} s", file=sys.stderr, flush=True)
        entries.append(entry)
        records += step_records
    return entries, records


def parse_args(argv: Sequence[str] | None, names: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--budget-s", type=float, default=470.0, help="wall seconds for all steps together")
    parser.add_argument("--only", nargs="+", metavar="STEP", help=f"run only these steps of: {', '.join(names)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (benchmarks/results)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, steps: Sequence[Step] | None = None) -> int:
    """Run the steps (default: `default_steps`), print the one JSON summary; 1 when any step failed or
    was skipped for want of budget."""
    every = default_steps("cuda") + default_steps("cpu")
    args = parse_args(argv, sorted({s.name for s in every}))
    steps = list(steps) if steps is not None else default_steps(args.device)
    if args.only:
        unknown = sorted(set(args.only) - {s.name for s in steps})
        if unknown:
            print(f"run_all: unknown step(s) {', '.join(unknown)}", file=sys.stderr)
            return 2
        steps = [s for s in steps if s.name in args.only]
    started = time.perf_counter()
    entries, records = run_steps(steps, args.device, args.budget_s, args.out)
    skipped = [e["name"] for e in entries if "skipped" in e]
    failed = [e["name"] for e in entries if e["rc"] != 0 and "skipped" not in e]
    summary = {"benchmark": "run_all", **environment(args.device), "budget_s": args.budget_s,
               "wall_s": round(time.perf_counter() - started, 2), "ok": not failed and not skipped,
               "failed": failed, "skipped": skipped, "steps": entries, "targets": gpu_targets(records)}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu" if args.device == "cuda" else "cpu"
    path = args.out / f"bench-{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    summary["path"] = str(path)
    text = json.dumps(summary, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
