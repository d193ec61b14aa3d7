"""`esper-run train --nproc N`: N local ranks of the same command, started by torch.distributed's
elastic launcher, as `torchrun --standalone --nproc-per-node N -m esper.shell.cli ...` would
(docs/runtime.md §9). No process pool or sockets of our own: the launcher hosts the rendezvous,
watches the ranks every second and, when one fails, stops the others (SIGTERM) and reports it.

This process only launches and waits. Each rank prints its own errors; the launcher's one line here
adds what a rank could not say itself (killed by a signal, or an exit with no message of ours).
"""

import logging
import sys
import uuid
from collections.abc import Sequence
from typing import Any

SILENT_EXITS = (1, 2, 3, 130, 143)  # a rank exiting so printed its own line (esper-run's exit codes)
ERROR_EXITS = (1, 2)  # a rank's own failure; 3 (lost a peer that died) and 130/143 (the launcher stopping
# the others) are consequences of another rank's failure


def without_nproc(argv: Sequence[str]) -> list[str]:
    """The command line each rank runs: `argv` minus `--nproc N` / `--nproc=N` (a rank learns its world
    size from the launcher)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(argv: Sequence[str], nproc: int, *, monitor_s: float = 1.0) -> int:
    """Run `esper-run <argv>` as `nproc` local ranks; the exit code is the first failed rank's (0: all ok)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failures are said below

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=monitor_s, start_method="spawn")
    try:
        elastic_launch(config, sys.executable)("-m", "esper.shell.cli", *without_nproc(argv))
    except ChildFailedError as exc:
        return _report(exc.failures, nproc)
    except SignalException as exc:  # Ctrl-C or SIGTERM to the launcher: the agent has stopped every rank, and
        return 128 + int(exc.sigval)  # each closed as interrupted and said so (docs/runtime.md §7)
    return 0


def _report(failures: dict[int, Any], nproc: int) -> int:
    """The root cause's exit code: a rank's own error exit (the launcher then stopped the others), else a
    rank's death the launcher did not cause (a SIGKILL: 137), else a lost peer (3) or an interrupt, the
    first to fail first; a line here only when no rank could say it. (A rank killed makes the launcher
    SIGTERM the others, 143, unless their next collective failed first, 3.)"""
    codes = {rank: f.exitcode if f.exitcode > 0 else 128 - f.exitcode for rank, f in failures.items()}  # -9: SIGKILL
    rank = min(codes, key=lambda r: (codes[r] not in ERROR_EXITS, codes[r] in SILENT_EXITS,
                                     failures[r].timestamp, r))
    if codes[rank] not in SILENT_EXITS:
        print(f"esper-run: rank {rank} of {nproc} exited with {codes[rank]}; every rank was stopped", file=sys.stderr)
    return codes[rank]
