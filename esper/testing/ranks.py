"""Run a function as W gloo ranks on this machine, for tests of distributed code: every rank gets the
launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT) as
torchrun would set it, and the whole group is bounded by a timeout, so a test may fail but never hangs.

    results = run_ranks(my_module_level_function, world=2, timeout_s=120, args=(tmp_path,))

`fn` must be importable by name (a module-level function): each rank is a fresh spawned process.
A rank's exception comes back as a `RankFailed` naming the rank, with its traceback text.
"""

import multiprocessing as mp
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any


class RankFailed(AssertionError):
    """A rank raised, exited without a result, or the group ran past its timeout."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launcher_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def _rank_main(fn: Callable[..., Any], args: Sequence[Any], env: dict[str, str], out: Any) -> None:
    os.environ.update(env)
    rank = int(env["RANK"])
    try:
        out.put((rank, True, fn(*args)))
    except BaseException:  # reported to the parent, which raises RankFailed
        out.put((rank, False, traceback.format_exc()))


def run_ranks(fn: Callable[..., Any], *, world: int, timeout_s: float, args: Sequence[Any] = ()) -> list[Any]:
    """`fn(*args)` on `world` ranks; their return values (picklable) in rank order."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, args, launcher_env(r, world, port), out), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < world:
            try:
                rank, ok, value = out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty as exc:
                raise RankFailed(f"ranks {sorted(set(range(world)) - set(results))} gave no result "
                                 f"within {timeout_s}s") from exc
            if not ok:
                raise RankFailed(f"rank {rank} raised:\n{value}")
            results[rank] = value
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return [results[r] for r in range(world)]
