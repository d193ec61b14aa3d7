"""`esper-run evaluate` and `esper-run tasks`."""

import json
from pathlib import Path

from esper.core.errors import ConfigError
from esper.core.tasks import DATA_TASKS, TASKS
from esper.shell.checkpoint import load_model_checkpoint, read_checkpoint
from esper.shell.data.budget import data_budget_bytes, data_path
from esper.shell.data.errors import DataError
from esper.shell.data.hf import local_only
from esper.shell.data.image_folder import ImageOptions
from esper.shell.data.image_source import nbytes
from esper.shell.data.images_task import check_unchanged, plan_images
from esper.shell.data.loading import load_task
from esper.shell.data.source import require_same_data
from esper.shell.driver import load_data, resolve_device
from esper.shell.epoch import validate
from esper.shell.nets.hosts import host_config
from esper.shell.rl.runner import FORMAT as RL_FORMAT
from esper.shell.run_checkpoint import ResumePoint, load_run_checkpoint, resolve_checkpoint
from esper.shell.run_config import RunConfig, resolve


def evaluate(target: str, *, data_dir: str | None, device: str, as_json: bool) -> dict[str, object]:
    """Rebuild the model of a checkpoint (run dir → newest) and evaluate it on the full held-out split.
    A PPO learning run holds no network: its report is the learning curve of its checkpoint."""
    path = resolve_checkpoint(Path(target))
    if read_checkpoint(path).get("format") == RL_FORMAT:
        return _report_learning(path, as_json)
    path, data = load_run_checkpoint(path)
    if "data" in data["run"].get("user", {}):  # not a task the CLI can load (docs/runtime.md §6.7)
        raise ConfigError(f"cannot evaluate {path}: it trained on data its script handed in "
                          f"({data['run']['user']['data']}), which only that script has")
    cfg = resolve(ResumePoint(path, data).config_values(), {"data_dir": data_dir} if data_dir else {})
    dev = resolve_device(device)
    task = load_data(cfg, dev)  # the run's own data: its seed, subset, tokenizer and block size
    check_unchanged(data["run"]["data_source"], task.source)  # an images run: the same data and task
    require_same_data(data["run"]["data_source"], task.source, f"cannot evaluate {path}")
    loaded = load_model_checkpoint(data["model"], device=dev)
    sums = validate(loaded.model, task, [{}], batch_size=task.preset.eval_batch_size)
    counts = loaded.model.param_counts()
    result = {
        "checkpoint": str(path), "task": cfg.task, "epoch": data["progress"]["epoch"],
        "val_acc": float(sums.correct[0]) / sums.count, "val_loss": float(sums.loss[0]) / sums.count,
        "params": counts.total, "host_params": counts.host, "seed_params": counts.live + counts.fossilized,
        "slots": [{"slot": s.slot_id, "stage": s.stage.name, "blueprint": s.seed.blueprint if s.seed else None,
                   "params": s.seed.n_params if s.seed else 0} for s in loaded.state.slots],
    }
    if as_json:
        print(json.dumps(result))
    else:
        print(f"{result['task']} epoch {result['epoch']}: val {100 * result['val_acc']:.2f}% "
              f"loss {result['val_loss']:.4f}  params {result['params']:,}")
        for slot in result["slots"]:
            print(f"  {slot['slot']:<8} {slot['stage']:<13} {slot['blueprint'] or '-':<12} {slot['params']:,}")
    return result


def _report_learning(path: Path, as_json: bool) -> dict[str, object]:
    _, data = load_run_checkpoint(path, expected_format=RL_FORMAT)
    controller = data["controller"]
    history = controller["history"]
    config = ResumePoint(path, data).config_values()
    result = {"checkpoint": str(path), "task": config["task"], "controller": "ppo", **controller["counters"],
              "history": history, "policy": str(path.parent.parent / "policy.pt")}
    if as_json:
        print(json.dumps(result))
        return result
    print(f"{config['task']} ppo: {controller['counters']['batch']} updates, {controller['counters']['episodes']} "
          f"episodes; run the policy with: esper-run train --controller ppo --policy {path.parent.parent}")
    for row in history:
        print(f"  update {row['update']:>4}  return {row['return']:+.3f}  final acc {100 * row['final_acc']:.2f}%")
    return result


def list_tasks() -> None:
    """Every preset: topology, host parameters, default epochs, data found or how to get it."""
    for name, preset in TASKS.items():
        params = host_config(preset.host).param_count()  # the formula: no 30M-parameter build to count
        if preset.name.startswith("synth-"):
            found = "generated in-process"
        else:
            try:
                with local_only():  # report what is here; never start a download
                    load_task(name, device="cpu", train_size=1, val_size=1)
                found = "data found"
            except DataError as exc:
                found = f"missing: {exc}"
        print(f"{name:<14} {preset.topology:<12} {params:>12,} params  {preset.epochs:>3} epochs  {found}")
    for name in DATA_TASKS:
        print(f"{name:<14} {'cnn':<12} {'derived':>12}         {DATA_TASKS[name].epochs:>3} epochs  from your data: "
              f"esper-run tasks --data-dir DIR (docs/runtime.md §5.5)")


def describe_images(cfg: RunConfig) -> None:
    """What `--task images` finds in the config's data, without decoding it: classes, images per class
    and split, image sizes, the derived input and host, and the data path a run on its device takes."""
    plan = plan_images(ImageOptions.of(cfg), data_seed=cfg.data_seed, train_size=cfg.train_size,
                       val_size=cfg.val_size)
    record = plan.record
    n_blocks, pools = record.host_blocks
    params = host_config("cifar10", input_shape=record.input_shape, n_classes=len(record.classes),
                         n_blocks=n_blocks, pool_layers=pools).param_count()
    size = sum(nbytes(source) for source in (plan.train, plan.heldout))
    device = resolve_device(cfg.device)
    budget = data_budget_bytes(device, cfg.data_budget)
    print(f"images from {plan.id_or_path} ({plan.kind}): {len(record.classes)} classes; train split "
          f"{record.train_split}; held out: {record.heldout}")
    print(f"  {'class':<20} {'train':>8} {'held-out':>9}")
    for k, name in enumerate(record.classes):
        print(f"  {name:<20} {record.counts['train'][k]:>8,} {record.counts['heldout'][k]:>9,}")
    print(f"  {'total':<20} {sum(record.counts['train']):>8,} {sum(record.counts['heldout']):>9,}")
    print("  training image sizes: " + ", ".join(f"{hw} ({n:,})" for hw, n in record.sizes.items()))
    print(f"  input {'×'.join(map(str, record.input_shape))}: {record.size_rule}; {record.channel_rule}")
    print(f"  host: cnn, {n_blocks} blocks, {pools} pools, {params:,} params at width 8")
    path = data_path(size, budget)
    print(f"  decoded {size / 2**20:,.1f} MiB; data budget on {device} {budget / 2**20:,.0f} MiB: {path}")
