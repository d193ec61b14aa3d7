"""When a rank dies, the launcher names the rank that died, not a rank whose next collective failed
because of it (docs/runtime.md §11.1): the exit codes' order, and the real gloo error a peer's death
raises, which the CLI turns into exit 3."""

import os
import signal
import tempfile
import threading
from types import SimpleNamespace

import pytest
import torch

from esper.shell import cli
from esper.shell.dist import lost_peer, process_group
from esper.shell.launch import _report, launch
from esper.testing.ranks import run_ranks


def _failures(**codes_and_times: tuple[int, float]) -> dict[int, SimpleNamespace]:
    """{rank: a failure as torch's launcher records it} from rank<r>=(exitcode, timestamp)."""
    return {int(name.removeprefix("rank")): SimpleNamespace(exitcode=code, timestamp=t)
            for name, (code, t) in codes_and_times.items()}


@pytest.mark.parametrize("failures, code, line", [
    # rank 1 SIGKILLed; rank 0's all-reduce failed first and it exited 3 (the race CI once lost)
    (_failures(rank0=(3, 10.0), rank1=(-9, 11.0)), 137, "esper-run: rank 1 of 2 exited with 137; every rank was stopped"),
    # rank 1 SIGKILLed; the launcher stopped rank 0 (143)
    (_failures(rank0=(-15, 11.0), rank1=(-9, 10.0)), 137, "esper-run: rank 1 of 2 exited with 137; every rank was stopped"),
    # rank 1's own error (it printed its line): it, not the lost peer nor the stopped rank, is the cause
    (_failures(rank0=(3, 10.0), rank1=(1, 11.0), rank2=(-15, 12.0)), 1, ""),
    # only lost peers (a rank on another machine died): the first to fail, which said so itself
    (_failures(rank0=(3, 10.0), rank1=(3, 9.0)), 3, ""),
])
def test_the_launcher_reports_the_rank_that_caused_the_failure(failures, code, line, capsys):
    assert _report(failures, len(failures)) == code
    assert capsys.readouterr().err.strip() == line


def _dies_or_loses_its_peer() -> str:
    with process_group(timeout_s=30) as ranks:
        ranks.all_reduce_sum(torch.ones(1))  # both ranks are connected
        if ranks.rank == 1:  # dies as `kill -9` would kill it, after handing its result back
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGKILL)).start()
            return "died"
        try:
            ranks.all_reduce_sum(torch.ones(1))
        except Exception as exc:  # noqa: BLE001 - what the peer's death raised is the result
            return f"lost peer: {lost_peer(exc)}; {type(exc).__name__}: {exc}"
        return "no error"


def test_a_peer_killed_mid_collective_is_recognised_as_a_lost_peer():
    died, survivor = run_ranks(_dies_or_loses_its_peer, world=2, timeout_s=120)[::-1]
    assert died == "died"
    assert survivor.startswith("lost peer: True"), survivor


def test_a_lost_peer_exits_3_with_one_line_and_other_crashes_exit_1(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the tracebacks go (no run directory)
    gone = RuntimeError("[gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:2478: Connection reset by peer.\n"
                        "This is typically caused by a remote worker hanging")
    for exc, code, said in [(gone, cli.LOST_PEER, "esper-run: lost contact with another rank ([gloo/transport"),
                            (RuntimeError("boom"), cli.RUNTIME_ERROR, "esper-run: RuntimeError: boom")]:
        monkeypatch.setattr(cli, "_tasks", lambda _args, exc=exc: (_ for _ in ()).throw(exc))
        assert cli.main(["tasks"]) == code
        err = capsys.readouterr().err
        assert err.startswith(said) and err.count("\n") == 1, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_launcher_exits_128_plus_it_without_a_line(sig, monkeypatch, capsys):
    # torch's agent turns the launcher's SIGINT/SIGTERM into SignalException after stopping the ranks, which
    # closed as interrupted and said so themselves; the launcher only passes the exit status on.
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.launcher import api

    def interrupted(config, entrypoint):
        def run(*args):
            raise SignalException(f"Process 1 got signal: {int(sig)}", sigval=sig)
        return run

    monkeypatch.setattr(api, "elastic_launch", interrupted)
    assert launch(["train", "--nproc", "2"], 2) == 128 + int(sig)
    assert capsys.readouterr().err == ""
