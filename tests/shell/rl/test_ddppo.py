"""DD-PPO (docs/rl.md §12; issue 16 acceptance): 2 gloo ranks of 2 envs each against one rank of the same
4 envs. Each rank runs the real driver (`esper.shell.driver.train`); the rollout and the policy after each
update are recorded by wrapping the runner's `collect_rollout` and `ppo_update` inside the rank's process.
Every group runs under a timeout: a test may fail, never hang."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch
import torch.utils._pytree as torch_pytree

from esper.core.errors import ConfigError
from esper.shell.checkpoint import read_checkpoint
from esper.shell.dist import Ranks, cpu_threads
from esper.shell.rl.ddppo import check_world, concat_buffers, env_rank, local_rows
from esper.shell.rl.rollout import RolloutBuffer
from esper.shell.run_config import RunConfig
from esper.testing.ranks import run_ranks

TINY = RunConfig(task="synth-images", controller="ppo", epochs=2, n_envs=4, episodes=8, train_size=256,
                 val_size=128, batch_size=64, device="cpu", telemetry_level="minimal", progress=False,
                 report=False, checkpoint_every=1)
TIMEOUT_S = 600


def test_each_rank_owns_a_contiguous_shard_of_the_envs_and_every_minibatch():
    owners = [env_rank(Ranks(rank=0, world=2), 5, i) for i in range(5)]
    assert owners == [0, 0, 1, 1, 1]  # Ranks.shard: 5 // 2 envs on rank 0, the rest on rank 1
    index = torch.tensor([3, 0, 2, 1])
    assert [local_rows(Ranks(rank=r, world=2), index).tolist() for r in range(2)] == [[3, 0], [2, 1]]
    check_world(4, 2, Ranks(rank=0, world=2))
    with pytest.raises(ConfigError, match="2 ranks need at least 2 envs per batch and per minibatch"):
        check_world(4, 1, Ranks(rank=0, world=2))


def test_gathered_buffers_are_the_rows_in_rank_order():
    def buffer(n: int, fill: float, stored: bool) -> RolloutBuffer:
        b = RolloutBuffer.empty(n, 2, 3, 1, 2, 3)
        b.reward += fill
        b.cut = [f"r{fill}"] * n
        if stored:
            b.inputs = _inputs(n, fill)
        return b

    whole = concat_buffers([buffer(2, 1.0, True), buffer(1, 2.0, False)])
    assert whole.reward[:, 0].tolist() == [1.0, 1.0, 2.0] and whole.cut == ["r1.0", "r1.0", "r2.0"]
    leaves = torch_pytree.tree_leaves(whole.inputs)
    assert all(x.shape[0] == 3 and x[2].eq(0).all() and x[:2].eq(1.0).all() for x in leaves)


def _inputs(n: int, fill: float):
    from esper.core.rewards import RewardInputs

    fields = {f.name: torch.full((n, 2), fill) for f in attrs.fields(RewardInputs)}
    return RewardInputs(**fields)


def _run_recorded(out: str) -> bytes:
    """One rank of a tiny PPO run (world from the launcher environment): its envs' first rollout, the
    whole first batch it updated on, and its policy and optimizer state after every update (as
    `torch.save` bytes: a tensor sent through the result queue would be shared by a file descriptor
    that dies with the rank's process)."""
    from esper.shell.driver import train
    from esper.shell.rl import runner

    if os.environ["WORLD_SIZE"] == "1":  # the threads each of the 2 ranks gets (bind_device), so the
        torch.set_num_threads(cpu_threads(Ranks(world=2, local_world=2)))  # envs compute alike
    seen: dict[str, Any] = {"local": None, "whole": None, "policy": [], "optimizer": []}
    collect, update = runner.collect_rollout, runner.ppo_update

    def collect_spy(vec, *args, **kwargs):
        buffer, stats = collect(vec, *args, **kwargs)
        seen["local"] = seen["local"] or (vec.indices, buffer)
        return buffer, stats

    def update_spy(policy, optimizer, buffer, *args, **kwargs):
        seen["whole"] = seen["whole"] or buffer
        out = update(policy, optimizer, buffer, *args, **kwargs)
        seen["policy"].append({k: v.clone() for k, v in policy.state_dict().items()})
        seen["optimizer"].append([t.clone() for s in optimizer.state.values() for t in s.values()])
        return out

    runner.collect_rollout, runner.ppo_update = collect_spy, update_spy
    train(TINY, out=out)
    payload = io.BytesIO()
    torch.save(seen, payload)
    return payload.getvalue()


def _recorded(world: int, out: Path) -> list[dict[str, Any]]:
    results = run_ranks(_run_recorded, world=world, timeout_s=TIMEOUT_S, args=(str(out),))
    return [torch.load(io.BytesIO(r), weights_only=False) for r in results]


def _rows(buffer: RolloutBuffer, rows: slice) -> dict[str, Any]:
    fields = {f.name: getattr(buffer, f.name) for f in attrs.fields(RolloutBuffer) if f.name not in ("cut", "inputs")}
    out = {name: t[rows] for name, t in fields.items()}
    out.update({f"inputs.{f.name}": getattr(buffer.inputs, f.name)[rows] for f in attrs.fields(type(buffer.inputs))})
    return {**out, "cut": buffer.cut[rows]}


POLICY_OUTPUTS = ("logp", "value")  # a matmul over 2 rows need not round as one over 4 does


def _assert_equal_rows(got: dict[str, Any], want: dict[str, Any]) -> None:
    """What the envs did (observations, actions, masks, rewards, reward inputs, cuts) bit for bit; the
    policy's own log-probs and values to float32 rounding."""
    assert got.keys() == want.keys()
    for name, value in want.items():
        if name in POLICY_OUTPUTS:
            assert torch.allclose(got[name], value, rtol=1e-5, atol=1e-6), name
        elif isinstance(value, torch.Tensor):
            assert torch.equal(got[name], value), name
        else:
            assert got[name] == value, name


def test_two_ranks_collect_the_one_rank_batch_and_update_alike(tmp_path: Path):
    one = _recorded(1, tmp_path / "one")[0]
    two = _recorded(2, tmp_path / "two")

    # The first batch, env by env: rank r collected envs 2r, 2r+1 as the one rank did.
    for rank, seen in enumerate(two):
        indices, local = seen["local"]
        assert indices == [2 * rank, 2 * rank + 1]
        _assert_equal_rows(_rows(local, slice(None)), _rows(one["whole"], slice(2 * rank, 2 * rank + 2)))
        _assert_equal_rows(_rows(seen["whole"], slice(None)), _rows(one["whole"], slice(None)))

    # After each update: bitwise equal across ranks, and the one rank's to 1e-5.
    assert len(one["policy"]) == len(two[0]["policy"]) == len(two[1]["policy"]) == 2
    for u in range(2):
        for name, p0 in two[0]["policy"][u].items():
            assert torch.equal(p0, two[1]["policy"][u][name]), (u, name)
            assert torch.allclose(p0, one["policy"][u][name], rtol=0, atol=1e-5), (u, name)
        assert all(torch.equal(a, b) for a, b in zip(two[0]["optimizer"][u], two[1]["optimizer"][u], strict=True))
        gap = max((p0 - one["policy"][u][k]).abs().max().item() for k, p0 in two[0]["policy"][u].items())
        print(f"update {u + 1}: max |2 ranks - 1 rank| over the policy's parameters {gap:.1e}")

    # Rank 0 alone wrote the run's results: one ppo.csv row per update, one rollout record per update, one
    # episodes.csv row per env of every rank; the first batch's rows are the one rank's (same envs, same policy).
    run = tmp_path / "two"
    assert len((run / "ppo.csv").read_text().splitlines()) == 3
    episodes = (run / "episodes.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in episodes[1:]] == [[str(u), str(e)] for u in (1, 2) for e in range(4)]
    assert episodes[:5] == (tmp_path / "one" / "episodes.csv").read_text().splitlines()[:5]
    assert sorted(p.name for p in (run / "rollouts").iterdir()) == ["update-00001.npz", "update-00002.npz"]


# -- kill -9 of the whole job, then --resume ------------------------------------------------------------

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
CLI = [sys.executable, "-m", "esper.shell.cli", "train"]
ARGS = ["--nproc", "2", "--controller", "ppo", "--task", "synth-images", "--epochs", "2", "--train-size", "256",
        "--val-size", "128", "--batch-size", "64", "--n-envs", "4", "--episodes", "8", "--checkpoint-every", "1",
        "--no-progress", "--no-report", "--telemetry-level", "minimal"]


def _final_policy(run: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run / "policy.pt")["policy"]


def _descendants(pid: int, *, direct: bool = False) -> list[int]:
    """The processes below `pid` (`direct`: its children only). The launcher's children are its ranks:
    torch's elastic agent starts each in a session of its own, so the launcher's process group lacks them."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += [] if direct else children
    return out


def _survivors(pids: list[int], wait_s: float) -> list[int]:
    """The processes of `pids` still running (not zombies) after at most `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for pid in pids:
            with contextlib.suppress(OSError, IndexError):
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def _kill_job_after_first_checkpoint(run: Path) -> None:
    """Start the 2-rank job in its own session and, once update 1's checkpoint is the run's latest,
    SIGKILL the launcher's process group: its ranks (each in a session of its own) die with it
    (esper.shell.dist.die_with_parent). Any survivor is killed, and fails the test."""
    with (run.parent / "killed.stderr").open("w") as err:
        job = subprocess.Popen([*CLI, *ARGS, "--out", str(run)], stdout=subprocess.DEVNULL, stderr=err, env=ENV,
                               start_new_session=True)
        everything: list[int] = []
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not (run / "checkpoints" / "latest.json").exists():
                assert job.poll() is None, f"the job ended (rc {job.returncode}) before its first checkpoint"
                assert time.monotonic() < deadline, "no first checkpoint within the deadline"
                time.sleep(0.2)
            ranks, everything = _descendants(job.pid, direct=True), _descendants(job.pid)
            assert len(ranks) == 2, ranks
            os.killpg(job.pid, signal.SIGKILL)
            survivors = _survivors(ranks, wait_s=10)
            assert not survivors, f"ranks {survivors} outlived their launcher"
        finally:
            for pid in _survivors(everything, wait_s=0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=60)
    time.sleep(3)  # a process that escaped the kill would go on writing
    assert not (run / "policy.pt").exists() and not (run / "checkpoints" / "update-00002.pt").exists()


def test_kill_9_of_the_whole_job_then_resume_ends_at_the_uninterrupted_policy(tmp_path: Path):
    """Three 2-rank jobs (84 s on the shared 2-core machine): uninterrupted; killed after update 1; resumed."""
    whole = subprocess.run([*CLI, *ARGS, "--out", str(tmp_path / "whole")], capture_output=True, text=True,
                           timeout=TIMEOUT_S, env=ENV)
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    _kill_job_after_first_checkpoint(killed)
    resumed = subprocess.run([*CLI, "--controller", "ppo", "--resume", str(killed), "--nproc", "2"],
                             capture_output=True, text=True, timeout=TIMEOUT_S, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    got, want = _final_policy(killed), _final_policy(tmp_path / "whole")
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert len((killed / "ppo.csv").read_text().splitlines()) == 3  # header + updates 1, 2 (none repeated)
    assert (killed / "episodes.csv").read_bytes() == (tmp_path / "whole" / "episodes.csv").read_bytes()
