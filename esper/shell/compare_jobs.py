"""The runs of `esper-run compare`, one after another or `--jobs N` at once (docs/runtime.md §9).

    jobs = 1:  run_job(j) for each job, in this process
    jobs = N:  a spawn-context ProcessPoolExecutor of min(N, #jobs) workers, each with
               max(1, T // N) torch threads (T = this process's torch threads); record i = job i's
               record whatever order the runs finish in, so the table equals `--jobs 1`'s

Each worker is a fresh interpreter (spawn, not fork: no copied torch thread pools or CUDA state),
and every run makes its own process-wide settings on entry (`esper.shell.process`), so a run in a
worker computes what it computes in the parent. The first failed run ends the compare: runs not yet
started are cancelled, the ones in flight finish (their directories stay whole), and its exception
is raised (a user error stays one, exit 2); a worker that dies raises `CompareWorkerError`.
"""

import json
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import attrs
import torch

from esper.core.stats import RunRecord
from esper.shell.driver import train
from esper.shell.run_config import RunConfig


class CompareWorkerError(RuntimeError):
    """A compare worker process died (killed, out of memory) before its run returned."""


@attrs.frozen
class RunJob:
    group: str  # the compare group the run belongs to (static, heuristic, static-flop, ...)
    cfg: RunConfig
    run_dir: str


def run_job(job: RunJob) -> RunRecord:
    """One run through the run driver, read back as the compare's record of it."""
    train(job.cfg, out=job.run_dir)
    summary = json.loads((Path(job.run_dir) / "summary.json").read_text(encoding="utf-8"))
    return RunRecord.from_summary(job.group, summary, run_dir=job.run_dir)


def threads_per_job(jobs: int) -> int:
    return max(1, torch.get_num_threads() // jobs)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_jobs(jobs: Sequence[RunJob], workers: int) -> list[RunRecord]:
    """Every job's record, in the order of `jobs`."""
    if workers == 1 or len(jobs) <= 1:
        return [run_job(job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                             initializer=_init_worker, initargs=(threads_per_job(workers),)) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()  # not started yet; the runs in flight finish as the pool shuts down
            _raise(failed, jobs[futures.index(failed)])
        return [f.result() for f in futures]


def _raise(failed: "Future[RunRecord]", job: RunJob) -> None:
    error = failed.exception()
    if isinstance(error, BrokenProcessPool):
        raise CompareWorkerError(f"a compare worker died while running {job.run_dir} ({error})") from error
    assert error is not None
    raise error
