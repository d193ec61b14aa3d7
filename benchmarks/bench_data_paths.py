"""Issue 18: the streamed data path against the device-resident one, on the same data (docs/runtime.md §5.7).

    python benchmarks/bench_data_paths.py [--device cpu|cuda] [--task synth-images] [--train-size 4096]
        [--val-size 1024] [--workers 0 2] [--rounds 3] [--out benchmarks/results]

The task's splits are loaded once and fed to both paths (`image_task_data`: budget None = resident,
budget 0 = streamed through `--workers` DataLoader workers each). Rows:

    feed    one epoch of training batches as the epoch loop takes them: index batches drawn, (x, y) read
            onto the device, augmented and normalised (TaskData.prepare_batch), no model: the path alone
    epoch   Trainer.run_epoch, static controller, the preset's host: train + validate + fetch, as a run

images/s = training images (full batches) per wall second; the epoch row's clock also covers validation.
After one warm-up pass per row (worker start-up, reported apart), the rows step round-robin, one pass
each in turn, so a shared machine's noise spreads over all alike; "median" and "best" over `--rounds`.
"ratio" = streamed / resident images/s (median). A record goes to benchmarks/results/bench_data_paths-
<device>-<time>.json (device name, versions, arguments, every time).
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _record import add_out_argument, device_name, write_record

from esper.core.tasks import task_preset
from esper.shell.data.image_source import ArraySource
from esper.shell.data.loading import image_task_data, load_task
from esper.shell.data.streamed import LoaderSettings
from esper.shell.data.taskdata import TaskData
from esper.shell.process import ProcessSettings, process_settings
from esper.shell.run_config import RunConfig
from esper.shell.trainer import Trainer


def path_data(args: argparse.Namespace, device: torch.device) -> dict[str, TaskData]:
    """The same splits on the resident path and on the streamed path with each worker count."""
    loaded = load_task(args.task, device="cpu", train_size=args.train_size, val_size=args.val_size)
    splits = {s: ArraySource(getattr(loaded, f"{s}_inputs").numpy(), getattr(loaded, f"{s}_labels").numpy())
              for s in ("train", "heldout")}
    preset = task_preset(args.task)
    paths = {"resident": image_task_data(preset, loaded.source, splits, device, budget=None)}
    for workers in args.workers:
        paths[f"streamed, {workers} workers"] = image_task_data(preset, loaded.source, splits, device, budget=0,
                                                               loader=LoaderSettings(workers=workers))
    return paths


def feed(data: TaskData, device: torch.device) -> Callable[[], None]:
    """One epoch of the training path without a model (esper.shell.epoch.train_epoch's data part)."""
    data_gen, augment_gen = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(1)
    batch = data.preset.batch_size

    def epoch() -> None:
        indices = list(data.train_batches(batch, data_gen))
        total = torch.zeros((), device=device)
        for x, _y in data.batches("train", indices):
            total += data.prepare_batch(x, True, augment_gen).sum()
        total.item()  # the epoch's one fetch, as a run's

    return epoch


def trained(data: TaskData, device: torch.device, args: argparse.Namespace) -> Callable[[], None]:
    cfg = RunConfig(task=args.task, controller="static", epochs=10 ** 6, device=device.type, compile="off")
    trainer = Trainer(cfg, data, device)
    return lambda: trainer.run_epoch()


def time_rows(rows: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, dict]:
    """Warm-up once each, then `rounds` round-robin passes: seconds per pass."""
    def clock(run: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    out = {name: {"warmup_s": clock(run), "seconds": []} for name, run in rows.items()}
    for _ in range(rounds):
        for name, run in rows.items():
            out[name]["seconds"].append(clock(run))
    return out


def summarise(timed: dict[str, dict], images: int) -> dict[str, dict]:
    rows = {}
    for name, t in timed.items():
        median, best = statistics.median(t["seconds"]), min(t["seconds"])
        rows[name] = {**t, "images_per_s_median": images / median, "images_per_s_best": images / best}
    base = next(v for k, v in rows.items() if k.endswith("resident"))["images_per_s_median"]
    for row in rows.values():
        row["ratio_to_resident"] = row["images_per_s_median"] / base
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--task", default="synth-images")
    parser.add_argument("--train-size", type=int, default=4096)
    parser.add_argument("--val-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rounds", type=int, default=3)
    add_out_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    with process_settings(ProcessSettings.for_run(None, device)):
        paths = path_data(args, device)
        some = next(iter(paths.values()))
        images = some.n_train // some.preset.batch_size * some.preset.batch_size
        rows: dict[str, Callable[[], None]] = {}
        for kind, make in (("feed", lambda d: feed(d, device)), ("epoch", lambda d: trained(d, device, args))):
            rows |= {f"{kind}: {name}": make(data) for name, data in paths.items()}
        timed = time_rows(rows, args.rounds, device)
        for data in paths.values():
            if data.streamed is not None:
                data.streamed.close()
    results = {kind: summarise({n: t for n, t in timed.items() if n.startswith(kind)}, images)
               for kind in ("feed", "epoch")}
    print(f"{args.task} on {device} ({device_name(device)}), {images} training images a pass, "
          f"batch {some.preset.batch_size}, {args.rounds} rounds")
    for rows_of_kind in results.values():
        for name, row in rows_of_kind.items():
            print(f"  {name:<32} {row['images_per_s_median']:>9.0f} images/s (best {row['images_per_s_best']:.0f}, "
                  f"warm-up {row['warmup_s']:.2f} s)  ratio {row['ratio_to_resident']:.3f}")
    write_record("bench_data_paths", device,
                 {f"{kind}: {name}": row["ratio_to_resident"] for kind, rows_of_kind in results.items()
                  for name, row in rows_of_kind.items() if not name.endswith("resident")},
                 {"task": args.task, "train_images": images, "batch_size": some.preset.batch_size,
                  "args": vars(args), "rows": results}, args.out)


if __name__ == "__main__":
    main()
