"""The ranks of a run (docs/runtime.md §9): one process, or W processes under torch.distributed.

A launcher (`esper-run train --nproc N`, or `torchrun` on one or several machines) starts W copies of
the same command and tells each its place in the environment: RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR/PORT. Without that environment a process is the one rank of a world of
one: today's run, no process group, every collective the identity.

    backend   NCCL on CUDA (rank r on cuda:LOCAL_RANK), gloo on CPU (cores / local ranks threads each)
    timeout   the process group's: a collective waits at most this long for a peer that is alive
              but elsewhere (`--dist-timeout`, default 1800 s: longer than any epoch's skew between
              ranks). A peer that dies closes its connections: gloo fails the waiting collective at
              once, and the launcher stops the other ranks within its monitor interval.
    agreement every boundary, each rank's digest of what must be equal everywhere (the lifecycle state
              and the action; the learner of a PPO run) is gathered; a mismatch stops every rank with
              `RanksDiverged`, one line naming the step and the ranks that differ from rank 0.

What a rank does differently is written once, where it happens: rank 0 alone writes the run directory
(esper.shell.driver), a program shards its work by `Ranks.shard`.
"""

import atexit
import contextlib
import ctypes
import datetime
import hashlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import attrs
import torch
import torch.distributed as dist

from esper.core.errors import ConfigError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800.0
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class RanksDiverged(RuntimeError):
    """Two ranks disagree on what must be equal: continuing would train different models (or hang)."""


class PeerFailed(RuntimeError):
    """A rank stops because a rank failed while the run was opening (rank 0 says which)."""


# What gloo and NCCL say when the rank at the other end of a collective is gone (torch raises them as
# RuntimeError or DistBackendError): a consequence of another rank's failure, never a root cause.
_LOST_PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe",
                    "remote process exited", "NCCL communicator was aborted")


def lost_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because another rank died (its own failure is reported by
    the launcher, which then names that rank; this rank only says it lost contact)."""
    if isinstance(exc, torch.distributed.DistNetworkError):
        return True
    return isinstance(exc, RuntimeError) and any(sign in str(exc) for sign in _LOST_PEER_SIGNS)


@attrs.frozen
class Ranks:
    """This process's place among the run's processes, and the few collectives a run needs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run directory, the console and the summary."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items`: contiguous, sizes differ by at most one, rank order."""
        n, w, r = len(items), self.world, self.rank
        start, stop = r * n // w, (r + 1) * n // w
        return list(items[start:stop])

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Σ over ranks, in place (the identity for one rank); every rank gets the same bits."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather(self, value: T) -> list[T]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` (picklable) on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_agreement(self, digest: Callable[[], str], what: str) -> None:
        """Raise `RanksDiverged` on every rank unless every rank's `digest()` equals rank 0's (one rank:
        nothing to compare, nothing computed)."""
        if not self.distributed:
            return
        digests = self.gather(digest())
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            ranks = ", ".join(str(r) for r in differ)
            raise RanksDiverged(f"ranks diverged at {what}: rank{'s' if len(differ) > 1 else ''} {ranks} "
                                f"differ{'s' if len(differ) == 1 else ''} from rank 0 (digest {digests[0][:12]} vs "
                                f"{digests[differ[0]][:12]}); stopping every rank")

    def together(self, failed: BaseException | None) -> None:
        """After a phase every rank runs (opening a run): if any rank failed, every rank stops. Rank 0
        raises its own error, or `PeerFailed` naming the first rank that failed; the other ranks raise
        `PeerFailed` (the CLI prints it on rank 0 only, so a user error is one line however many ranks)."""
        reports = self.gather(None if failed is None else f"{type(failed).__name__}: {failed}")
        bad = [(r, msg) for r, msg in enumerate(reports) if msg is not None]
        if not bad:
            return
        if self.main and failed is not None:
            raise failed
        rank, msg = bad[0]
        raise PeerFailed(f"rank {rank} failed ({msg})") from failed


def digest(value: Any) -> str:
    """A stable hash of a JSON-able value (sorted keys, exact floats via repr)."""
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def tensor_digest(tensors: Sequence[torch.Tensor]) -> str:
    """A hash of the tensors' exact bytes (bitwise equality, not closeness)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # 0-d too
    return h.hexdigest()


def end_rank(code: int) -> NoReturn:
    """End a launched rank's process with `code` once Python's own exit work is done (atexit handlers,
    flushed streams), skipping the C++ libraries' teardown: gloo's and XLA's threads, destroyed at
    interpreter exit, sometimes abort the process ("terminate called without an active exception",
    about one exit in ten), which would turn a rank's clean exit 2 into a crash of 134."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def launched() -> bool:
    """Is this process one of a launcher's ranks (torchrun, `--nproc`)?"""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def ranks_from_env(env: dict[str, str] | None = None) -> Ranks:
    """The launcher's RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE (absent: the one rank of one)."""
    env = dict(os.environ) if env is None else env
    if "WORLD_SIZE" not in env:
        return Ranks()
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as exc:
        names = ", ".join(_LAUNCHER_VARS)
        raise ConfigError(f"bad launcher environment ({exc}); expected integers in {names}") from exc
    if not (0 <= rank < world and 0 <= local_rank < local_world):
        raise ConfigError(f"bad launcher environment: RANK {rank} of WORLD_SIZE {world}, "
                          f"LOCAL_RANK {local_rank} of LOCAL_WORLD_SIZE {local_world}")
    return Ranks(rank, world, local_rank, local_world)


def bind_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device this rank trains on, made its default: on CUDA a distributed rank uses
    cuda:LOCAL_RANK (ranks share the GPUs round robin when there are fewer); on CPU it gets
    `cpu_threads` threads. One rank changes nothing."""
    if not ranks.distributed:
        return device
    if device.type != "cuda":
        torch.set_num_threads(cpu_threads(ranks))
        return device
    bound = torch.device(f"cuda:{ranks.local_rank % max(torch.cuda.device_count(), 1)}")
    torch.cuda.set_device(bound)
    return bound


def cpu_threads(ranks: Ranks) -> int:
    """The cores this process may use, shared evenly by the machine's ranks (at least one each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // ranks.local_world)


def nccl_fits(ranks: Ranks) -> bool:
    """NCCL wants one GPU per rank: with fewer GPUs than local ranks (N ranks sharing one GPU) gloo carries
    the CUDA tensors too (through host memory)."""
    return torch.cuda.is_available() and ranks.local_world <= torch.cuda.device_count()


def die_with_parent() -> None:
    """SIGKILL this rank when the process that started it dies (Linux's PR_SET_PDEATHSIG). torch's
    elastic launcher starts each rank in a session of its own, so a `kill -9` of the launcher (or of
    its process group) would leave the ranks running on, writing the run directory and holding its lock."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


@contextlib.contextmanager
def process_group(timeout_s: float = DEFAULT_TIMEOUT_S, ranks: Ranks | None = None) -> Iterator[Ranks]:
    """This process's ranks, with the process group joined for the block when there are several
    (gloo for CPU tensors, NCCL for CUDA ones when every local rank has a GPU of its own, else gloo for
    both); one rank needs none. Left on exit,
    error or not."""
    ranks = ranks_from_env() if ranks is None else ranks
    if not ranks.distributed or dist.is_initialized():
        yield ranks
        return
    die_with_parent()
    backend = "cpu:gloo,cuda:nccl" if nccl_fits(ranks) else "gloo"
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield ranks
    finally:
        dist.destroy_process_group()
