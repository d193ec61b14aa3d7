"""esper.shell.dist: the ranks of a run, their few collectives and the agreement check (docs/runtime.md §9).
Multi-rank cases run as gloo ranks on this CPU (esper.testing.ranks), each group under a timeout."""

import os
import subprocess
import sys

import pytest
import torch

from esper.core.errors import ConfigError
from esper.shell.dist import PeerFailed, Ranks, RanksDiverged, digest, process_group, ranks_from_env, tensor_digest
from esper.shell.launch import without_nproc
from esper.testing.ranks import RankFailed, run_ranks


def test_without_a_launcher_a_process_is_the_one_rank_of_one():
    ranks = ranks_from_env({})
    assert ranks == Ranks() and ranks.main and not ranks.distributed
    t = torch.tensor([1.0, 2.0])
    assert ranks.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert ranks.gather("x") == ["x"] and ranks.broadcast(3) == 3
    ranks.check_agreement(lambda: pytest.fail("one rank computes no digest"), "epoch 1")
    ranks.together(None)


def test_the_launcher_environment_is_read_and_checked():
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert ranks_from_env(env) == Ranks(rank=1, world=4, local_rank=1, local_world=2)
    with pytest.raises(ConfigError, match="RANK 4 of WORLD_SIZE 4"):
        ranks_from_env({**env, "RANK": "4"})
    with pytest.raises(ConfigError, match="expected integers"):
        ranks_from_env({**env, "WORLD_SIZE": "two"})


@pytest.mark.parametrize("n, world", [(8, 2), (4, 4), (5, 2), (3, 4)])
def test_shards_cover_every_item_once_in_rank_order(n, world):
    items = list(range(n))
    shards = [Ranks(rank=r, world=world).shard(items) for r in range(world)]
    assert [x for shard in shards for x in shard] == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_digests_see_every_bit():
    a = torch.tensor([1.0, 2.0])
    assert tensor_digest([a]) == tensor_digest([a.clone()])
    assert tensor_digest([a]) != tensor_digest([torch.nextafter(a, a + 1)])
    assert tensor_digest([torch.tensor(3.0)]) != tensor_digest([torch.tensor(4.0)])  # 0-d: AdamW's step
    assert digest({"b": 1, "a": [0.1]}) == digest({"a": [0.1], "b": 1}) != digest({"a": [0.1 + 1e-17 + 2e-17]})


def test_without_nproc_leaves_the_rest_of_the_command_line():
    argv = ["train", "--nproc", "2", "--epochs", "3", "--nproc=4", "--out", "R"]
    assert without_nproc(argv) == ["train", "--epochs", "3", "--out", "R"]


def _collectives() -> tuple[float, list[int], str, str]:
    with process_group(timeout_s=60) as ranks:
        total = ranks.all_reduce_sum(torch.tensor([float(ranks.rank + 1)])).item()
        gathered = ranks.gather(ranks.rank * 10)
        said = ranks.broadcast(f"rank {ranks.rank} says")
        try:
            ranks.check_agreement(lambda: "same" if ranks.rank == 0 else "other", "epoch 7")
            diverged = "no"
        except RanksDiverged as exc:
            diverged = str(exc)
        return total, gathered, said, diverged


def test_two_gloo_ranks_reduce_gather_broadcast_and_catch_a_divergence():
    results = run_ranks(_collectives, world=2, timeout_s=120)
    for total, gathered, said, diverged in results:
        assert (total, gathered, said) == (3.0, [0, 10], "rank 0 says")
        assert diverged.startswith("ranks diverged at epoch 7: rank 1 differs from rank 0")
    assert results[0][3] == results[1][3]  # every rank stops with the same line


def _together(fail_on: int) -> str:
    with process_group(timeout_s=60) as ranks:
        try:
            ranks.together(ValueError("no data here") if ranks.rank == fail_on else None)
        except PeerFailed as exc:
            return f"peer: {exc}"
        except ValueError as exc:
            return f"own: {exc}"
        return "ok"


@pytest.mark.parametrize("fail_on, expected", [
    (1, ["peer: rank 1 failed (ValueError: no data here)"] * 2),  # rank 0 names the rank that failed
    (0, ["own: no data here", "peer: rank 0 failed (ValueError: no data here)"]),
    (5, ["ok", "ok"]),
])
def test_a_rank_that_fails_while_opening_stops_every_rank(fail_on, expected):
    assert run_ranks(_together, world=2, timeout_s=120, args=(fail_on,)) == expected


def _hangs() -> None:
    import time
    time.sleep(60)


def test_a_group_that_runs_past_its_timeout_fails_and_does_not_hang():
    with pytest.raises(RankFailed, match="gave no result within 3"):
        run_ranks(_hangs, world=2, timeout_s=3)


@pytest.mark.parametrize(("command", "code"), [("tasks", 0), ("train --epochs 0", 2)])
def test_a_launched_rank_exits_with_main_s_code_after_its_exit_work(command, code):
    """A rank ends by os._exit (dist.end_rank): its atexit handlers and buffered output still happen."""
    script = ("import atexit, sys; atexit.register(lambda: print('atexit ran', flush=True)); "
              "from esper.shell.cli import main; main(sys.argv[1:]); print('not reached')")
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}
    done = subprocess.run([sys.executable, "-c", script, *command.split()], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == code, done.stderr
    assert done.stdout.rstrip().endswith("atexit ran") and "not reached" not in done.stdout
    assert ("fashion-mnist" in done.stdout) == (code == 0)  # `tasks`' buffered table was flushed
