"""docs/rl.md §8 throughput: env-epochs/s and images/s of N vectorised envs against 1 env in the same
process, and the share of a step spent outside train/validate (observation, policy, lifecycle, reward).

    python benchmarks/bench_rl_envs.py [--device cuda] [--n-envs 4] [--epochs 3] [--train-size 4096]
                                       [--out benchmarks/results]
"""

import argparse
import time

import torch
from _record import add_out_argument, write_record

from esper.core.rl_config import RLConfig
from esper.shell.driver import load_data, resolve_device
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.rl.collect import collect_rollout
from esper.shell.rl.envs import ACTING_STREAM, VecEnv, batch_generator
from esper.shell.rl.runner import PPORun, build_learner, policy_dims
from esper.shell.run_config import RunConfig


def measure(cfg: RunConfig, n_envs: int, devices: list[torch.device], data: list) -> dict[str, float]:
    rl = RLConfig(n_envs=n_envs, minibatch_envs=n_envs, episodes=n_envs)
    vec = VecEnv(cfg, data, devices, n_envs=n_envs, batch=0, epochs=cfg.epochs)
    learner = build_learner(policy_dims(vec), rl, cfg.seed, torch.device("cpu"))
    inside = 0.0
    for env in vec:  # time spent in train + validate + the fetch that waits for them, per env
        for name in ("launch_epoch", "collect_epoch"):
            original = getattr(env.trainer, name)

            def timed(*args, original=original):
                nonlocal inside
                started = time.perf_counter()
                out = original(*args)
                inside += time.perf_counter() - started
                return out

            setattr(env.trainer, name, timed)
    started = time.perf_counter()
    buffer, _ = collect_rollout(vec, learner.policy, learner.norms.obs, rl, batch_generator(0, 0, ACTING_STREAM))
    if devices[0].type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    env_epochs = float(buffer.valid.sum())
    batch = vec.envs[0].trainer.batch_size
    images = env_epochs * (data[0].n_train // batch) * batch  # full batches of every kept env-epoch
    return {"wall_s": wall, "env_epochs_per_s": env_epochs / wall, "images_per_s": images / wall,
            "outside_share": max(0.0, 1.0 - inside / wall)}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--device", default="cpu")
    args.add_argument("--n-envs", type=int, default=4)
    args.add_argument("--epochs", type=int, default=3)
    args.add_argument("--train-size", type=int, default=4096)
    add_out_argument(args)
    a = args.parse_args()
    cfg = RunConfig(task="synth-images", controller="ppo", epochs=a.epochs, train_size=a.train_size, val_size=1024,
                    device=a.device, telemetry_level="off")
    device = resolve_device(a.device)
    devices = PPORun.devices(device)
    data = [load_data(cfg, d) for d in devices]
    with process_settings(ProcessSettings.for_run(cfg.deterministic, device)):  # as a run holds them
        # Warm both shapes of the run first: each new env brings its own CUDA stream (its own allocator
        # pool) and new conv shapes for cuDNN's autotuner, which a 1-env warm-up alone does not pay for.
        measure(cfg, 1, devices, data)
        measure(cfg, a.n_envs, devices, data)
        one = measure(cfg, 1, devices, data)
        many = measure(cfg, a.n_envs, devices, data)
    print(f"device {devices}: 1 env {one['env_epochs_per_s']:.2f} env-epochs/s, {one['images_per_s']:.0f} images/s")
    print(f"{a.n_envs} envs: {many['env_epochs_per_s']:.2f} env-epochs/s, {many['images_per_s']:.0f} images/s, "
          f"{100 * many['outside_share']:.1f}% of the step outside train/validate")
    ratio = many["env_epochs_per_s"] / one["env_epochs_per_s"]
    print(f"ratio {a.n_envs} envs / 1 env: {ratio:.2f}x env-epochs/s")
    write_record("bench_rl_envs", device,
                 {"one_env_images_per_s": one["images_per_s"], "n_envs_images_per_s": many["images_per_s"],
                  "n_envs_vs_one_env_epochs_per_s": ratio, "n_envs_outside_share": many["outside_share"]},
                 {"args": vars(a), "devices": [str(d) for d in devices], "one_env": one, "n_envs": many}, a.out)


if __name__ == "__main__":
    main()
