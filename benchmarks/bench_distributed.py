"""DD-PPO collection throughput (docs/rl.md §12): env-epochs/s (and images/s) of the same PPO batch of
N envs collected by 1 rank and by W ranks (each its `Ranks.shard` of the envs, then the all-gather of the
whole batch), in the same invocation.

    python benchmarks/bench_distributed.py [--ranks 2] [--device cpu|cuda] [--n-envs 4] [--epochs 3]
                                           [--train-size 1024] [--batches 2] [--rounds 2] [--threads-per-rank T]
                                           [--one-rank-threads T1] [--out benchmarks/results]

CPU: the comparison is at equal cores, as issue 16 measured it: W ranks of T threads each against one
process of W·T threads (T defaults to cores / W; `--one-rank-threads` sets the baseline's). On a machine
other work loads, a process of several threads loses most (its threads wait for one another), so also
measure `--one-rank-threads T`. CUDA: the W ranks share the GPU (one per GPU when there are several:
rank r on cuda:r mod G); the one rank spreads its envs over the GPUs as a run does.
Each group first collects one batch untimed (warm-up), then `--batches` batches, timed from a barrier to
the slowest rank's end; the groups alternate for `--rounds` rounds (a shared machine's load drifts).
Every rank is a spawned process (esper.testing.ranks), with a timeout.
"""

import argparse
import os
import time
from typing import Any

import torch
from _record import add_out_argument, write_record

from esper.core.rl_config import RLConfig
from esper.shell.dist import bind_device, process_group
from esper.shell.driver import load_data, resolve_device
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.rl.collect import collect_rollout
from esper.shell.rl.ddppo import env_facts, gather_rollout
from esper.shell.rl.envs import ACTING_STREAM, VecEnv, batch_generator
from esper.shell.rl.runner import PPORun, build_learner, policy_dims
from esper.shell.run_config import RunConfig
from esper.testing.ranks import run_ranks


def collect_on_ranks(cfg: RunConfig, n_envs: int, threads: int, batches: int) -> dict[str, Any]:
    """One rank of the group: a warm-up batch, then `batches` timed ones (rank 0 returns the totals)."""
    with process_group(timeout_s=900) as ranks:
        device = bind_device(resolve_device(cfg.device), ranks)
        torch.set_num_threads(threads)
        devices = PPORun.devices(device)
        data = [load_data(cfg, d) for d in devices]
        rl = RLConfig(n_envs=n_envs, minibatch_envs=n_envs, episodes=n_envs)
        indices = ranks.shard(range(n_envs))
        learner = None
        env_epochs, wall = 0.0, 0.0
        with process_settings(ProcessSettings.for_run(cfg.deterministic, device)):
            for batch in range(1 + batches):
                vec = VecEnv(cfg, data, devices, n_envs=n_envs, batch=batch, epochs=cfg.epochs, indices=indices)
                learner = learner or build_learner(policy_dims(vec), rl, cfg.seed, torch.device("cpu"))
                ranks.gather(None)  # a barrier: every rank starts the batch together
                started = time.perf_counter()
                buffer, stats = collect_rollout(vec, learner.policy, learner.norms.obs, rl,
                                                batch_generator(cfg.seed, batch, ACTING_STREAM))
                buffer, _, _ = gather_rollout(ranks, buffer, stats, env_facts(vec))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                slowest = max(ranks.gather(time.perf_counter() - started))
                if batch > 0:
                    env_epochs, wall = env_epochs + float(buffer.valid.sum()), wall + slowest
        per_epoch = (data[0].n_train // vec.envs[0].trainer.batch_size) * vec.envs[0].trainer.batch_size
        return {"env_epochs": env_epochs, "wall_s": wall, "images": env_epochs * per_epoch,
                "threads": torch.get_num_threads(), "devices": [str(d) for d in devices]}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--ranks", type=int, default=2)
    args.add_argument("--device", default="cpu")
    args.add_argument("--n-envs", type=int, default=4)
    args.add_argument("--epochs", type=int, default=3)
    args.add_argument("--train-size", type=int, default=1024)
    args.add_argument("--batches", type=int, default=2)
    args.add_argument("--rounds", type=int, default=2, help="1 rank, W ranks, 1 rank, ...: load drifts between them")
    args.add_argument("--threads-per-rank", type=int, default=None)
    args.add_argument("--one-rank-threads", type=int, default=None, help="the 1-rank baseline's (default: W x T)")
    add_out_argument(args)
    a = args.parse_args()
    cfg = RunConfig(task="synth-images", controller="ppo", epochs=a.epochs, train_size=a.train_size, val_size=512,
                    device=a.device, telemetry_level="off")
    per_rank = a.threads_per_rank or max(1, cores() // a.ranks)
    print(f"machine: {cores()} cores; {a.n_envs} envs x {a.epochs} epochs, train size {a.train_size}, "
          f"{a.batches} timed batches after 1 warm-up per group, device {a.device}, {a.rounds} rounds")
    totals: dict[int, list[float]] = {1: [0.0, 0.0], a.ranks: [0.0, 0.0]}
    for round_ in range(a.rounds):
        rates = {}
        for world, threads in ((1, a.one_rank_threads or per_rank * a.ranks), (a.ranks, per_rank)):
            r = run_ranks(collect_on_ranks, world=world, timeout_s=1800, args=(cfg, a.n_envs, threads, a.batches))[0]
            rates[world] = r["env_epochs"] / r["wall_s"]
            totals[world][0] += r["env_epochs"]
            totals[world][1] += r["wall_s"]
            print(f"round {round_ + 1}: {world} rank{'s' if world > 1 else ''} x {r['threads']} "
                  f"thread{'s' if r['threads'] > 1 else ''} ({', '.join(r['devices'])}): {rates[world]:.3f} "
                  f"env-epochs/s, {r['images'] / r['wall_s']:.0f} images/s ({r['env_epochs']:.0f} env-epochs in "
                  f"{r['wall_s']:.1f}s)", flush=True)
        print(f"round {round_ + 1}: ratio {a.ranks} ranks / 1 rank: {rates[a.ranks] / rates[1]:.2f}x", flush=True)
    one, many = (totals[w][0] / totals[w][1] for w in (1, a.ranks))
    print(f"all rounds: 1 rank {one:.3f}, {a.ranks} ranks {many:.3f} env-epochs/s; "
          f"ratio {a.ranks} ranks / 1 rank: {many / one:.2f}x env-epochs/s")
    write_record("bench_distributed", a.device,
                 {"one_rank_env_epochs_per_s": one, "w_ranks_env_epochs_per_s": many, "w_ranks_vs_one_rank": many / one,
                  "ranks": a.ranks},
                 {"args": vars(a), "cores": cores(), "totals": {str(w): t for w, t in totals.items()}}, a.out)


if __name__ == "__main__":
    main()
