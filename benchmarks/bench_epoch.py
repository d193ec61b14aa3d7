"""Issue 17: esper's epoch against a plain PyTorch loop of the same network, and what the counterfactual
validation costs (docs/runtime.md §2.4, docs/lifecycle.md §8.3).

    python benchmarks/bench_epoch.py [--device cpu|cuda] [--tasks cifar10 fashion-mnist]
        [--compile auto|off|default|reduce-overhead] [--train-size 2560] [--val-size 1000] [--rounds 3]
        [--data-dir TASK=PATH ...] [--out benchmarks/results]

Per task, its preset's host, batch, optimizer and augmentation. Data: the preset's own when found
(`--data-dir TASK=PATH`, or Fashion-MNIST's Debian folder), else generated data of the same shape
(synth-images, rendered to the preset's shape) written in the layout the preset's loader reads, so
every row goes through esper's real data path. Rows, all on the same TaskData:

    plain eager / compiled   the host alone: train (forward, cross-entropy, backward, step) + validate
    esper static             Trainer.run_epoch, static controller, no seed (train, validate, fetch,
                             governor snapshot, lifecycle; no telemetry files: those are the driver's)
    esper TRAINING … 3 live  a conv_light seed held in `mid` in that stage; 3 live: early TRAINING,
                             mid BLENDING, late PROBATIONARY (the state is re-applied after each epoch)
    compiled esper rows      with RunConfig(compile=MODE); "n/a" while RunConfig has no `compile`

images/s = training images per wall second of a whole epoch (training and validation). After one
warm-up epoch per row (compile time, reported apart), the rows step round-robin, one epoch each in
turn, so a shared machine's noise spreads over all alike; "median" and "best" over `--rounds`.

Counterfactual validation, 3 live slots: the plan's V = 4 variants in one `validate`, against one plain
pass ({} alone) and against the V variants as V separate passes. "ideal" = Σ_k G_k·c_k / Σ_k c_k plain
passes (G_k: groups at segment k, c_k: host FLOPs of segment k), i.e. 1 + Σ (the fraction of the host
after each varied slot). Results go to benchmarks/results/bench_epoch-<device>-<time>.json.
"""

import argparse
import gzip
import importlib.metadata
import json
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from esper.core import heuristic, lifecycle
from esper.core.actions import FactoredAction
from esper.core.measurements import EpochMeasurements, SlotMeasurement
from esper.core.seed import LifecycleState
from esper.core.stages import Stage
from esper.shell.data import fashion_mnist, synth_images
from esper.shell.data.loading import load_task
from esper.shell.data.taskdata import TaskData
from esper.shell.epoch import validate
from esper.shell.epoch_numbers import EpochLayout
from esper.shell.nets.hosts import host_for
from esper.shell.optim_groups import sync_optimizer
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("cifar10", "fashion-mnist")
BLUEPRINT = "conv_light"
HELD = {  # row → the stage each seeded slot is held in
    "esper static": {},
    "esper TRAINING": {"mid": Stage.TRAINING},
    "esper BLENDING": {"mid": Stage.BLENDING},
    "esper PROBATIONARY": {"mid": Stage.PROBATIONARY},
    "esper 3 live": {"late": Stage.PROBATIONARY, "mid": Stage.BLENDING, "early": Stage.TRAINING},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- data: the preset's, or generated in its loader's layout ---------------------------------


def write_generated(task: str, folder: Path, n_train: int, n_heldout: int) -> Path:
    """synth-images at the preset's shape: CIFAR-10 binary batches, or gray 28×28 Fashion-MNIST IDX files."""
    splits = {"train": synth_images.generate(n_train, synth_images.split_generator(0, "train")),
              "heldout": synth_images.generate(n_heldout, synth_images.split_generator(0, "heldout"))}
    if task == "cifar10":
        out = folder / "cifar-10-batches-bin"
        out.mkdir(parents=True)
        records = {k: np.concatenate([y.numpy().astype(np.uint8)[:, None], x.reshape(len(x), -1).numpy()], 1)
                   for k, (x, y) in splits.items()}
        for k, part in enumerate(np.array_split(records["train"], 5), start=1):
            part.tofile(out / f"data_batch_{k}.bin")
        records["heldout"].tofile(out / "test_batch.bin")
        return folder
    folder.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("heldout", "t10k")):
        x, y = splits[split]
        gray = x.float().mean(1)[:, 2:30, 2:30].round().to(torch.uint8).numpy()
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 2051, len(gray), 28, 28) + gray.tobytes()))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 2049, len(y)) + y.numpy().astype(np.uint8).tobytes()))
    return folder


def task_data(task: str, args: argparse.Namespace, device: torch.device, scratch: Path) -> tuple[TaskData, str]:
    """The task's data on the device and where it came from ("preset data" or "generated")."""
    given = dict(entry.split("=", 1) for entry in args.data_dir)
    folder = given.get(task)
    if folder is None and task == "fashion-mnist" and fashion_mnist.idx_folder(fashion_mnist.DEBIAN_DIR):
        folder = str(fashion_mnist.DEBIAN_DIR)
    if folder is not None:
        data = load_task(task, device=device, data_dir=folder, train_size=args.train_size, val_size=args.val_size)
        return data, f"preset data ({folder})"
    folder = str(write_generated(task, scratch / task, args.train_size, args.val_size))
    return load_task(task, device=device, data_dir=folder), "generated (synth-images at the preset's shape)"


# --- the rows ----------------------------------------------------------------------------------


class PlainLoop:
    """The preset's host and optimizer in a plain loop: what esper's epoch is measured against."""

    def __init__(self, data: TaskData, device: torch.device, mode: str | None) -> None:
        preset = data.preset
        self.data, self.device, self.preset = data, device, preset
        host = host_for(preset.host, torch.Generator().manual_seed(0)).to(device)
        self.net = host if mode is None else torch.compile(host, mode=mode)
        if preset.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                host.parameters(), lr=preset.host_lr, momentum=preset.momentum, weight_decay=preset.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(host.parameters(), lr=preset.host_lr, betas=preset.betas,
                                               weight_decay=preset.weight_decay)
        self.data_gen = torch.Generator().manual_seed(1)
        self.augment_gen = torch.Generator(device=device).manual_seed(2)

    def epoch(self) -> None:
        data, net = self.data, self.net
        net.train()
        for index in data.train_batches(self.preset.batch_size, self.data_gen):
            x, y = data.batch("train", index)
            loss = F.cross_entropy(net(data.prepare_batch(x, True, self.augment_gen)).float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        net.eval()
        total = torch.zeros(2, device=self.device)
        with torch.inference_mode():
            for index in data.heldout_batches(self.preset.eval_batch_size):
                x, y = data.batch("heldout", index)
                logits = net(data.prepare_batch(x, False)).float()
                total += torch.stack([F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(-1) == y).sum()])
        total.cpu()  # the one fetch, as esper's epoch has


def compile_supported() -> bool:
    return "compile" in attrs.fields_dict(RunConfig)


def esper_trainer(data: TaskData, device: torch.device, mode: str | None) -> Trainer:
    extra = {} if mode is None else {"compile": mode}
    cfg = RunConfig(task=data.preset.name, controller="static", epochs=100, device=device.type, progress=False,
                    **extra)
    # Patient timeouts: the drive to the held stages must not cull a seed already there.
    lifecycle_config = attrs.evolve(data.preset.lifecycle_config(100, max_seeds=0), max_training_epochs=40,
                                    max_probation_epochs=40)
    return Trainer(cfg, data, device, lifecycle_config=lifecycle_config,
                   decider=lambda trainer, pending: (FactoredAction.wait(), "bench", []))


def drive(trainer: Trainer, held: dict[str, Stage]) -> LifecycleState:
    """Germinate each slot in turn and record passing measurements until it reaches its stage."""
    rules, state = trainer.rules, trainer.state
    germinable = rules.catalogue.germinable_index(BLUEPRINT)
    for slot_id, stage in held.items():
        action = FactoredAction.germinate(state.slot(slot_id).index, germinable)
        for _ in range(60):
            seeded = [s.slot_id for s in state.slots if s.seed is not None]
            m = EpochMeasurements(epoch=state.epoch + 1, val_acc=0.5, slots=tuple(
                SlotMeasurement(slot_id=s, contribution=0.05, shadow_gain=0.05, grad_ratio=1.0) for s in seeded))
            state, events = lifecycle.apply_action(lifecycle.record(state, m), action, rules)
            # The trainer's heuristic state folds every lifecycle event (it refuses a cull of a seed it never saw).
            trainer.heuristic = heuristic.observe(trainer.heuristic, events, state.epoch, trainer.heuristic_cfg)
            action = FactoredAction.wait()
            if state.slot(slot_id).stage == stage:
                break
    assert all(state.slot(s).stage == stage for s, stage in held.items()), state
    return state


def hold(trainer: Trainer, state: LifecycleState, observed: heuristic.HeuristicState) -> None:
    """Put the trainer (back) into `state`: the model and optimizer groups mirror it again."""
    trainer.state, trainer.heuristic = state, observed
    trainer.model.sync_to(state)
    sync_optimizer(trainer.optimizer, trainer.model)


def esper_epoch(trainer: Trainer, state: LifecycleState) -> Callable[[], None]:
    observed = trainer.heuristic
    hold(trainer, state, observed)

    def epoch() -> None:
        trainer.run_epoch()
        # The next epoch sees the same stages (a few ms: mostly no-op syncs); the epoch counter runs on.
        hold(trainer, attrs.evolve(state, epoch=trainer.state.epoch), observed)

    return epoch


# --- timing ------------------------------------------------------------------------------------


def time_rows(rows: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, dict]:
    """One warm-up call per row, then `rounds` round-robin calls: seconds of each."""
    out: dict[str, dict] = {}
    for name, run in rows.items():
        start = time.perf_counter()
        run()
        sync(device)
        out[name] = {"warmup_s": time.perf_counter() - start, "seconds": []}
    for _ in range(rounds):
        for name, run in rows.items():
            start = time.perf_counter()
            run()
            sync(device)
            out[name]["seconds"].append(time.perf_counter() - start)
    return out


def epoch_rows(data: TaskData, device: torch.device, mode: str | None) -> dict[str, Callable[[], None] | None]:
    rows: dict[str, Callable[[], None] | None] = {"plain eager": PlainLoop(data, device, None).epoch}
    if mode is not None:
        rows["plain compiled"] = PlainLoop(data, device, mode).epoch
    for name, held in HELD.items():
        trainer = esper_trainer(data, device, None)
        rows[name] = esper_epoch(trainer, drive(trainer, held))
    for name, held in HELD.items():
        if mode is None:
            continue
        if not compile_supported():
            rows[f"{name} compiled"] = None
            continue
        trainer = esper_trainer(data, device, mode)
        rows[f"{name} compiled"] = esper_epoch(trainer, drive(trainer, held))
    return rows


def segment_flops(trainer: Trainer) -> list[int]:
    """Forward FLOPs of each host segment for one held-out sample (the slots in between skipped)."""
    model, data = trainer.model, trainer.data
    h = data.prepare_batch(data.batch("heldout", slice(0, 1))[0], False)
    flops = []
    with torch.inference_mode():
        for k in range(model.host.n_slots + 1):
            with FlopCounterMode(display=False) as counter:
                h = model.host.segment(k, h)
            flops.append(counter.get_total_flops())
    return flops


def counterfactual_costs(data: TaskData, device: torch.device, rounds: int) -> dict:
    """The 3-live plan's validation: one pass with its V variants, one plain pass, V separate passes."""
    trainer = esper_trainer(data, device, None)
    state = drive(trainer, HELD["esper 3 live"])
    hold(trainer, state, trainer.heuristic)
    model, batch = trainer.model, data.preset.eval_batch_size
    variants = EpochLayout.of(lifecycle.measurement_plan(state)).variants
    passes = {
        "plain": lambda: validate(model, data, [{}], batch_size=batch),
        "shared": lambda: validate(model, data, variants, batch_size=batch),
        "separate": lambda: [validate(model, data, [v], batch_size=batch) for v in variants],
    }
    timed = time_rows(passes, rounds, device)
    seconds = {name: statistics.median(row["seconds"]) for name, row in timed.items()}
    widths, flops = model.variant_tree(variants).widths, segment_flops(trainer)
    ideal = sum(w * c for w, c in zip(widths, flops, strict=True)) / sum(flops)
    return {"variants": [dict(v) for v in variants], "widths": list(widths), "segment_flops": flops,
            "seconds": seconds, "vs_plain": seconds["shared"] / seconds["plain"],
            "vs_separate": seconds["shared"] / seconds["separate"], "ideal_vs_plain": ideal,
            "ideal_vs_separate": ideal / len(variants)}


# --- report --------------------------------------------------------------------------------------


def summarise(timed: dict[str, dict | None], images: int) -> dict[str, dict | None]:
    out: dict[str, dict | None] = {}
    base = timed["plain eager"]
    assert base is not None
    for name, row in timed.items():
        if row is None:
            out[name] = None
            continue
        median, best = statistics.median(row["seconds"]), min(row["seconds"])
        out[name] = {**row, "images_per_s": images / median, "best_images_per_s": images / best,
                     "vs_plain_eager": statistics.median(base["seconds"]) / median,
                     "best_vs_plain_eager": min(base["seconds"]) / best}
    return out


def print_task(task: str, source: str, images: int, rows: dict[str, dict | None], cf: dict) -> None:
    print(f"\n{task}: {images} training images per epoch, {source}")
    print(f"{'row':<30} {'warm-up s':>9} {'images/s':>9} {'vs plain':>9} {'best/s':>9} {'vs plain':>9}")
    for name, row in rows.items():
        if row is None:
            print(f"{name:<30} {'n/a':>9} {'n/a':>9} {'n/a':>9} {'n/a':>9} {'n/a':>9}  (RunConfig has no compile)")
            continue
        print(f"{name:<30} {row['warmup_s']:>9.2f} {row['images_per_s']:>9.0f} {row['vs_plain_eager']:>8.3f}× "
              f"{row['best_images_per_s']:>9.0f} {row['best_vs_plain_eager']:>8.3f}×")
    s = cf["seconds"]
    print(f"counterfactual validation, 3 live slots, V={len(cf['variants'])} variants, groups per segment "
          f"{cf['widths']}: shared {s['shared']:.3f} s, plain {s['plain']:.3f} s, separate {s['separate']:.3f} s")
    print(f"  vs one plain pass {cf['vs_plain']:.2f}× (ideal {cf['ideal_vs_plain']:.2f}×), vs separate passes "
          f"{cf['vs_separate']:.2f}× (ideal {cf['ideal_vs_separate']:.2f}×)")


def provenance(device: torch.device) -> dict:
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    try:
        version = importlib.metadata.version("esper")
    except importlib.metadata.PackageNotFoundError:
        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                              platform.machine())
    return {"device": device.type, "device_name": name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "esper": version, "python": sys.version.split()[0],
            "git_commit": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain")),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def resolve_mode(flag: str, device: torch.device) -> str | None:
    if flag == "auto":
        return "reduce-overhead" if device.type == "cuda" else "default"
    return None if flag == "off" else flag


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--compile", default="auto", choices=("auto", "off", "default", "reduce-overhead"))
    parser.add_argument("--train-size", type=int, default=2560)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", action="append", default=[], metavar="TASK=PATH")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device, results = torch.device(args.device), {}
    mode = resolve_mode(args.compile, device)
    with tempfile.TemporaryDirectory() as scratch, process_settings(ProcessSettings.for_run(None, device)):
        for task in args.tasks:
            data, source = task_data(task, args, device, Path(scratch))
            images = data.n_train // data.preset.batch_size * data.preset.batch_size
            rows = {name: run for name, run in epoch_rows(data, device, mode).items()}
            timed = time_rows({n: r for n, r in rows.items() if r is not None}, args.rounds, device)
            summary = summarise({n: timed.get(n) for n in rows}, images)
            cf = counterfactual_costs(data, device, args.rounds)
            print_task(task, source, images, summary, cf)
            results[task] = {"data": source, "train_images": images, "heldout_images": data.n_heldout,
                             "batch_size": data.preset.batch_size, "rows": summary, "counterfactual": cf}
    record = {**provenance(device), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "compile_mode": mode, "esper_compile_supported": compile_supported(),
              "tasks": results, "benchmark": "bench_epoch"}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_epoch-{device.type}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
