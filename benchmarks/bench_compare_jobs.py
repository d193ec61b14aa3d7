"""docs/runtime.md §9 `compare --jobs N`: the wall time of one small compare run one after another
(`--jobs 1`) against the same compare with N runs at once in worker processes, and whether the two
tables agree (compare.json without wall times, run paths and the command line).

    python benchmarks/bench_compare_jobs.py [--jobs 2] [--seeds 2] [--epochs 3] [--train-size 1024] [--device cpu]
                                            [--out benchmarks/results]

Both compares run the same seeds in fresh temporary directories, `--jobs 1` first. Each compare
trains 4 groups × seeds runs (static, heuristic, param- and FLOP-matched static); a worker process
pays an interpreter and torch import (a few seconds), so small compares gain less than large ones.
The record (benchmarks/_record.py) goes to benchmarks/results/bench_compare_jobs-<device>-<time>.json.
"""

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import add_out_argument, write_record

from esper.shell.cli import main as esper_run


def timed_compare(out: Path, jobs: int, args: argparse.Namespace) -> float:
    argv = ["compare", "--controllers", "heuristic", "--seeds", str(args.seeds), "--jobs", str(jobs),
            "--out", str(out), "--task", "synth-images", "--epochs", str(args.epochs), "--train-size",
            str(args.train_size), "--val-size", "256", "--device", args.device, "--telemetry-level", "off",
            "--no-progress"]
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the runs' summaries; the workers' own go to the terminal
        code = esper_run(argv)
    wall = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"compare --jobs {jobs} exited {code}")
    return wall


def table(out: Path) -> dict[str, Any]:
    data = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    for record in data["records"]:
        del record["wall_s"], record["run_dir"]
    for group in data["groups"]:
        del group["wall"]
    del data["meta"]["command"]
    return data


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--jobs", type=int, default=2)
    args.add_argument("--seeds", type=int, default=2)
    args.add_argument("--epochs", type=int, default=3)
    args.add_argument("--train-size", type=int, default=1024)
    args.add_argument("--device", default="cpu")
    add_out_argument(args)
    a = args.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compare-jobs-") as tmp:
        one = timed_compare(Path(tmp) / "jobs1", 1, a)
        many = timed_compare(Path(tmp) / f"jobs{a.jobs}", a.jobs, a)
        same = table(Path(tmp) / "jobs1") == table(Path(tmp) / f"jobs{a.jobs}")
    runs = 4 * a.seeds
    print(f"compare of {runs} runs ({a.epochs} epochs, {a.train_size} images each), {a.device}:")
    print(f"--jobs 1: {one:.1f} s wall")
    print(f"--jobs {a.jobs}: {many:.1f} s wall")
    print(f"ratio jobs 1 / jobs {a.jobs}: {one / many:.2f}x faster; tables identical: {same}")
    write_record("bench_compare_jobs", a.device,
                 {"runs": runs, "jobs": a.jobs, "jobs_1_s": one, "jobs_n_s": many, "speedup": one / many,
                  "tables_identical": same}, {"args": vars(a)}, a.out)


if __name__ == "__main__":
    main()
