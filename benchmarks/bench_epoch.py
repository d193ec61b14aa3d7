"""Issue 17: esper's epoch against a plain PyTorch loop of the same network, and what the counterfactual
validation costs (docs/runtime.md §2.4, docs/lifecycle.md §8.3).

    python benchmarks/bench_epoch.py [--device cpu|cuda] [--tasks cifar10 fashion-mnist]
        [--compile auto|off|default|reduce-overhead] [--train-size 2560] [--val-size 1000] [--rounds 3]
        [--rows static TRAINING BLENDING PROBATIONARY 3-live] [--data-dir TASK=PATH ...] [--out benchmarks/results]

Per task, its preset's host, batch, optimizer and augmentation. Data: the preset's own when found
(`--data-dir TASK=PATH`, or Fashion-MNIST's Debian folder), else generated data of the same shape
(synth-images, rendered to the preset's shape) written in the layout the preset's loader reads, so
every row goes through esper's real data path. Rows, all on the same TaskData:

    plain eager / compiled   the host alone: train (forward, cross-entropy, backward, step) + validate
    esper static             Trainer.run_epoch, static controller, no seed (train, validate, fetch,
                             governor snapshot, lifecycle; no telemetry files: those are the driver's)
    esper TRAINING … 3 live  a conv_light seed held in `mid` in that stage; 3 live: early TRAINING,
                             mid BLENDING, late PROBATIONARY (the state is re-applied after each epoch)
    compiled esper rows      with RunConfig(compile=MODE) (`--compile auto`: reduce-overhead on CUDA, default
                             on CPU); `--rows` keeps only some esper rows (the plain ones always run)

images/s = training images per wall second of a whole epoch (training and validation). After one
warm-up epoch per row (compile time, reported apart), the rows step round-robin, one epoch each in
turn, so a shared machine's noise spreads over all alike; "median" and "best" over `--rounds`.

Counterfactual validation, 3 live slots: the plan's V = 4 variants in one `validate`, against one plain
pass ({} alone) and against the V variants as V separate passes, as a run validates (its autocast), eager;
with a compile mode also through the compiled variant-tree pass ("counterfactual_compiled": shared and
plain only, as separate single-variant trees would each compile a graph no run uses). "ideal" =
Σ_k G_k·c_k / Σ_k c_k plain passes (G_k: groups at segment k, c_k: host FLOPs of segment k), i.e. 1 + Σ
(the fraction of the host after each varied slot). The record (benchmarks/_record.py) goes to
benchmarks/results/bench_epoch-<device>-<time>.json; its summary holds issue 17's GPU target numbers.
"""

import argparse
import gzip
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from _record import add_out_argument, write_record
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


def row_key(name: str) -> str:
    """`--rows`' name of an esper row: "esper 3 live" → "3-live"."""
    return name.removeprefix("esper ").replace(" ", "-")


def epoch_rows(data: TaskData, device: torch.device, mode: str | None,
               keep: list[str]) -> dict[str, Callable[[], None]]:
    rows: dict[str, Callable[[], None]] = {"plain eager": PlainLoop(data, device, None).epoch}
    if mode is not None:
        rows["plain compiled"] = PlainLoop(data, device, mode).epoch
    held_rows = {name: held for name, held in HELD.items() if row_key(name) in keep}
    for suffix, row_mode in (("", None), (" compiled", mode)):
        if suffix and mode is None:
            continue
        for name, held in held_rows.items():
            trainer = esper_trainer(data, device, row_mode)
            rows[f"{name}{suffix}"] = esper_epoch(trainer, drive(trainer, held))
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


def counterfactual_costs(data: TaskData, device: torch.device, rounds: int, mode: str | None = None) -> dict:
    """The 3-live plan's validation: one pass with its V variants, one plain pass and (eager) V separate
    passes, each as a run validates (its autocast; with `mode`, its compiled variant-tree pass)."""
    trainer = esper_trainer(data, device, mode)
    state = drive(trainer, HELD["esper 3 live"])
    hold(trainer, state, trainer.heuristic)
    model, batch = trainer.model, data.preset.eval_batch_size
    variants = EpochLayout.of(lifecycle.measurement_plan(state)).variants
    as_run = {"batch_size": batch, "autocast": trainer.autocast, "steps": trainer.steps}
    passes = {
        "plain": lambda: validate(model, data, [{}], **as_run),
        "shared": lambda: validate(model, data, variants, **as_run),
    }
    if mode is None:
        passes["separate"] = lambda: [validate(model, data, [v], **as_run) for v in variants]
    timed = time_rows(passes, rounds, device)
    seconds = {name: statistics.median(row["seconds"]) for name, row in timed.items()}
    widths, flops = model.variant_tree(variants).widths, segment_flops(trainer)
    ideal = sum(w * c for w, c in zip(widths, flops, strict=True)) / sum(flops)
    return {"variants": [dict(v) for v in variants], "widths": list(widths), "segment_flops": flops,
            "warmup_s": {name: row["warmup_s"] for name, row in timed.items()}, "seconds": seconds,
            "vs_plain": seconds["shared"] / seconds["plain"], "ideal_vs_plain": ideal,
            "ideal_vs_separate": ideal / len(variants),
            "vs_separate": seconds["shared"] / seconds["separate"] if "separate" in seconds else None}


# --- report --------------------------------------------------------------------------------------


def summarise(timed: dict[str, dict], images: int) -> dict[str, dict]:
    out: dict[str, dict] = {}
    base = timed["plain eager"]
    for name, row in timed.items():
        median, best = statistics.median(row["seconds"]), min(row["seconds"])
        out[name] = {**row, "images_per_s": images / median, "best_images_per_s": images / best,
                     "vs_plain_eager": statistics.median(base["seconds"]) / median,
                     "best_vs_plain_eager": min(base["seconds"]) / best}
    return out


def print_task(task: str, source: str, images: int, rows: dict[str, dict], cfs: dict[str, dict]) -> None:
    print(f"\n{task}: {images} training images per epoch, {source}")
    print(f"{'row':<30} {'warm-up s':>9} {'images/s':>9} {'vs plain':>9} {'best/s':>9} {'vs plain':>9}")
    for name, row in rows.items():
        print(f"{name:<30} {row['warmup_s']:>9.2f} {row['images_per_s']:>9.0f} {row['vs_plain_eager']:>8.3f}× "
              f"{row['best_images_per_s']:>9.0f} {row['best_vs_plain_eager']:>8.3f}×")
    for label, cf in cfs.items():
        s = cf["seconds"]
        print(f"{label} validation, 3 live slots, V={len(cf['variants'])} variants, groups per segment "
              f"{cf['widths']}: shared {s['shared']:.3f} s, plain {s['plain']:.3f} s"
              + (f", separate {s['separate']:.3f} s" if "separate" in s else ""))
        separate = "" if cf["vs_separate"] is None else (
            f", vs separate passes {cf['vs_separate']:.2f}× (ideal {cf['ideal_vs_separate']:.2f}×)")
        print(f"  vs one plain pass {cf['vs_plain']:.2f}× (ideal {cf['ideal_vs_plain']:.2f}×){separate}")


def key_numbers(tasks: dict[str, dict], mode: str | None) -> dict:
    """Per task, the ratios issue 17's targets name: esper static / plain eager, plain compiled / plain
    eager (the host at the preset batch), and the 3-slot counterfactual validation / one plain pass."""
    def ratio(rows: dict, name: str) -> float | None:
        return rows[name]["vs_plain_eager"] if name in rows else None

    out: dict = {"compile_mode": mode, "tasks": {}}
    for task, result in tasks.items():
        rows = result["rows"]
        cfs = {label: result[label] for label in ("counterfactual", "counterfactual_compiled") if label in result}
        out["tasks"][task] = {
            "batch_size": result["batch_size"], "plain_eager_images_per_s": rows["plain eager"]["images_per_s"],
            "esper_static_vs_plain_eager": ratio(rows, "esper static"),
            "esper_static_compiled_vs_plain_eager": ratio(rows, "esper static compiled"),
            "plain_compiled_vs_plain_eager": ratio(rows, "plain compiled"),
            **{f"{label}_vs_plain": cf["vs_plain"] for label, cf in cfs.items()},
            **{f"{label}_vs_separate": cf["vs_separate"] for label, cf in cfs.items()}}
    return out


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
    parser.add_argument("--rows", nargs="+", default=[row_key(n) for n in HELD], choices=[row_key(n) for n in HELD],
                        help="the esper rows to time (each eager and, with a compile mode, compiled)")
    parser.add_argument("--data-dir", action="append", default=[], metavar="TASK=PATH")
    add_out_argument(parser)
    return parser.parse_args()


def measure_task(task: str, args: argparse.Namespace, device: torch.device, mode: str | None,
                 scratch: Path) -> dict:
    data, source = task_data(task, args, device, scratch)
    images = data.n_train // data.preset.batch_size * data.preset.batch_size
    rows = summarise(time_rows(epoch_rows(data, device, mode, args.rows), args.rounds, device), images)
    cfs = {"counterfactual": counterfactual_costs(data, device, args.rounds)}
    if mode is not None:
        cfs["counterfactual_compiled"] = counterfactual_costs(data, device, args.rounds, mode)
    print_task(task, source, images, rows, cfs)
    return {"data": source, "train_images": images, "heldout_images": data.n_heldout,
            "batch_size": data.preset.batch_size, "rows": rows, **cfs}


def main() -> None:
    args = parse_args()
    device, tasks = torch.device(args.device), {}
    mode = resolve_mode(args.compile, device)
    with tempfile.TemporaryDirectory() as scratch, process_settings(ProcessSettings.for_run(None, device)):
        for task in args.tasks:
            tasks[task] = measure_task(task, args, device, mode, Path(scratch))
    print()
    write_record("bench_epoch", device, key_numbers(tasks, mode),
                 {"args": vars(args), "compile_mode": mode, "tasks": tasks}, args.out)


if __name__ == "__main__":
    main()
