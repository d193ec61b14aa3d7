"""docs/runtime.md §4.4–§4.5: what each `--profile` costs per epoch against `standard`.

    python benchmarks/bench_profiles.py [--device cpu] [--epochs 4] [--train-size 1024] [--rounds 1]
                                        [--out benchmarks/results]

The same short synth-images run (static controller, a fossil in `late` so the slot diagnostics have a
slot to measure) trains at minimal, standard, diagnostic and research in one process, at telemetry
level normal. Epoch 1 runs every diagnostic once (none has a cost yet) and pays one-time set-up, so it
is reported apart; "steady" is the median epoch_s of epochs 2..E (where the budget has its costs)
over all rounds, "fastest" their minimum (the epoch least disturbed by other work on the machine).
The four runs step round-robin, one epoch each in turn, so a machine shared with other work spreads
its noise over every profile alike; on a busy machine trust "fastest" more than "steady".
"""

import argparse
import statistics

import torch
from _record import add_out_argument, write_record

from esper.shell.driver import load_data
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

PROFILES = ("minimal", "standard", "diagnostic", "research")


def trainer_for(profile: str, args: argparse.Namespace) -> Trainer:
    cfg = RunConfig(task="synth-images", seed=0, epochs=args.epochs, train_size=args.train_size, val_size=512,
                    batch_size=64, device=args.device, profile=profile, telemetry_level="normal", progress=False,
                    controller="static", static_seeds=("late:conv_light",))
    device = torch.device(args.device)
    return Trainer(cfg, load_data(cfg, device), device)


def round_seconds(args: argparse.Namespace) -> dict[str, list[float]]:
    """One run per profile, stepped round-robin epoch by epoch: each profile's epoch_s per epoch."""
    trainers = {profile: trainer_for(profile, args) for profile in PROFILES}
    seconds: dict[str, list[float]] = {profile: [] for profile in PROFILES}
    for _ in range(args.epochs):
        for profile, trainer in trainers.items():
            seconds[profile].append(trainer.run_epoch().metrics.epoch_s)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    add_out_argument(parser)
    args = parser.parse_args()
    first: dict[str, list[float]] = {p: [] for p in PROFILES}
    steady: dict[str, list[float]] = {p: [] for p in PROFILES}
    for _ in range(args.rounds):
        for profile, seconds in round_seconds(args).items():
            first[profile].append(seconds[0])
            steady[profile] += seconds[1:]
    base = statistics.median(steady["standard"])
    print(f"synth-images, {args.train_size} training images, {args.epochs} epochs × {args.rounds} round(s), "
          f"{args.device}; seconds per epoch")
    best = min(steady["standard"])
    table = {p: {"epoch_1_s": statistics.median(first[p]), "steady_s": statistics.median(steady[p]),
                 "fastest_s": min(steady[p])} for p in PROFILES}
    print(f"{'profile':<11} {'epoch 1':>8} {'steady':>8} {'vs standard':>12} {'fastest':>8} {'vs standard':>12}")
    for profile, row in table.items():
        median, fastest = row["steady_s"], row["fastest_s"]
        print(f"{profile:<11} {row['epoch_1_s']:>8.3f} {median:>8.3f} {median / base:>11.2f}× "
              f"{fastest:>8.3f} {fastest / best:>11.2f}×")
    write_record("bench_profiles", args.device,
                 {f"{p}_steady_vs_standard": row["steady_s"] / base for p, row in table.items()},
                 {"args": vars(args), "profiles": table}, args.out)


if __name__ == "__main__":
    main()
