"""The resolved run configuration and the one declarative flag table (docs/runtime.md §6.2–§6.3).

Precedence: built-in defaults < task preset < `--config FILE` (TOML or a run's config.json)
< flags. A key left at None means "the task preset decides" and is filled by
`with_preset`. Every `train` flag maps to exactly one config key (tests check each).
"""

import argparse
import difflib
import json
import math
import re
import reprlib
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from esper.core.errors import ConfigError
from esper.core.heuristic import GERMINATION_MODES
from esper.core.lr_schedule import SCHEDULES
from esper.core.rl_config import RLConfig
from esper.shell import rl_settings

CONTROLLERS = ("heuristic", "static", "ppo")
COMPILE_MODES = ("auto", "off", "default", "reduce-overhead")  # --compile (esper.shell.compiled)
POLICY_ACTS = ("greedy", "sample")  # --policy-act: how a trained policy picks its action (esper.shell.rl.policy_run)
SECTIONS = ("train", "data", "optim", "heuristic", "ppo", "governor", "telemetry", "checkpoint", "dist", "rl")


def _section(name: str) -> dict[str, str]:
    return {"section": name}


@attrs.frozen(kw_only=True)
class RunConfig:
    # [train]
    task: str = attrs.field(default="synth-images", metadata=_section("train"))
    controller: str = attrs.field(default="heuristic", metadata=_section("train"))
    epochs: int | None = attrs.field(default=None, metadata=_section("train"))
    host: str | None = attrs.field(default=None, metadata=_section("train"))
    seed: int = attrs.field(default=0, metadata=_section("train"))
    device: str = attrs.field(default="auto", metadata=_section("train"))
    slots: tuple[str, ...] | None = attrs.field(default=None, metadata=_section("train"))
    max_seeds: int = attrs.field(default=0, metadata=_section("train"))
    static_seeds: tuple[str, ...] = attrs.field(default=(), metadata=_section("train"))
    precision: str = attrs.field(default="auto", metadata=_section("train"))
    deterministic: bool | None = attrs.field(default=None, metadata=_section("train"))
    compile: str = attrs.field(default="auto", metadata=_section("train"))  # esper.shell.compiled
    # [data]
    data_dir: str | None = attrs.field(default=None, metadata=_section("data"))
    data_seed: int = attrs.field(default=0, metadata=_section("data"))
    train_size: int | None = attrs.field(default=None, metadata=_section("data"))
    val_size: int | None = attrs.field(default=None, metadata=_section("data"))
    train_batches: int | None = attrs.field(default=None, metadata=_section("data"))
    tokenizer: str = attrs.field(default="auto", metadata=_section("data"))
    text_column: str = attrs.field(default="text", metadata=_section("data"))  # --task text, a saved dataset
    # --task images (esper.shell.data.images_task): a folder or saved dataset at data_dir, or `dataset`
    # from the HF cache; which columns and splits; the input size and channel rule (None: derived)
    dataset: str | None = attrs.field(default=None, metadata=_section("data"))
    image_column: str | None = attrs.field(default=None, metadata=_section("data"))
    label_column: str | None = attrs.field(default=None, metadata=_section("data"))
    split: str | None = attrs.field(default=None, metadata=_section("data"))
    image_size: int | None = attrs.field(default=None, metadata=_section("data"))
    channels: int | None = attrs.field(default=None, metadata=_section("data"))
    # the data path (docs/runtime.md §5.7): bytes kept on the device (None: budget.DEFAULT_FRACTION of its free
    # memory; 0: always stream) and the streamed path's DataLoader workers (None: auto)
    data_budget: int | None = attrs.field(default=None, metadata=_section("data"))
    data_workers: int | None = attrs.field(default=None, metadata=_section("data"))
    # [optim]
    batch_size: int | None = attrs.field(default=None, metadata=_section("optim"))
    optimizer: str | None = attrs.field(default=None, metadata=_section("optim"))
    host_lr: float | None = attrs.field(default=None, metadata=_section("optim"))
    seed_lr: float | None = attrs.field(default=None, metadata=_section("optim"))
    lr_schedule: str | None = attrs.field(default=None, metadata=_section("optim"))
    host_width: int | None = attrs.field(default=None, metadata=_section("optim"))
    # [heuristic]
    plateau_epochs: int = attrs.field(default=3, metadata=_section("heuristic"))
    min_germinate_epoch: int | None = attrs.field(default=None, metadata=_section("heuristic"))
    germination: str | None = attrs.field(default=None, metadata=_section("heuristic"))
    # [ppo]
    n_envs: int = attrs.field(default=8, metadata=_section("ppo"))
    episodes: int | None = attrs.field(default=None, metadata=_section("ppo"))
    reward: str = attrs.field(default="shaped", metadata=_section("ppo"))
    policy: str | None = attrs.field(default=None, metadata=_section("ppo"))
    policy_act: str = attrs.field(default="greedy", metadata=_section("ppo"))
    # [governor]
    governor: bool = attrs.field(default=True, metadata=_section("governor"))
    max_rollbacks: int = attrs.field(default=3, metadata=_section("governor"))
    # [telemetry]
    telemetry_level: str = attrs.field(default="normal", metadata=_section("telemetry"))
    profile: str = attrs.field(default="standard", metadata=_section("telemetry"))
    events: str | None = attrs.field(default=None, metadata=_section("telemetry"))
    tensorboard: bool = attrs.field(default=False, metadata=_section("telemetry"))
    wandb: bool = attrs.field(default=False, metadata=_section("telemetry"))
    wandb_project: str = attrs.field(default="esper", metadata=_section("telemetry"))
    wandb_entity: str | None = attrs.field(default=None, metadata=_section("telemetry"))
    progress: bool = attrs.field(default=True, metadata=_section("telemetry"))
    report: bool = attrs.field(default=True, metadata=_section("telemetry"))
    # [checkpoint]
    checkpoint_every: int | None = attrs.field(default=None, metadata=_section("checkpoint"))  # 5 epochs; 10 updates
    keep_checkpoints: int = attrs.field(default=3, metadata=_section("checkpoint"))
    # [dist]: the ranks of a torch.distributed run (esper.shell.dist); a resume keeps nproc
    nproc: int = attrs.field(default=1, metadata=_section("dist"))
    dist_timeout: float = attrs.field(default=1800.0, metadata=_section("dist"))
    # [rl]: RLConfig settings besides n_envs, episodes, reward (rl_settings: sorted pairs, non-default only)
    rl: rl_settings.RLPairs = attrs.field(default=(), converter=rl_settings.canonical, metadata=_section("rl"))

    def __attrs_post_init__(self) -> None:
        for message in _violations(self):
            raise ConfigError(message)
        self.rl_config()  # RLConfig's own checks of the RL settings, before anything is written

    def rl_config(self) -> RLConfig:
        """The RLConfig a learning PPO run uses: defaults < --n-envs/--episodes/--reward < the rl settings."""
        return rl_settings.build(self.rl, n_envs=self.n_envs, episodes=self.episodes, reward=self.reward)

    def to_sections(self) -> dict[str, dict[str, Any]]:
        """`{section: {key: value}}` with JSON types: config.json, and a valid `--config`."""
        out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
        for f in attrs.fields(RunConfig):
            value = getattr(self, f.name)
            if f.name != "rl":
                out[f.metadata["section"]][f.name] = list(value) if isinstance(value, tuple) else value
        out["rl"] = rl_settings.table(self.rl_config())  # the resolved RLConfig, every field
        return out


def _violations(c: RunConfig) -> list[str]:
    def positive(name: str) -> tuple[bool, str]:
        value = getattr(c, name)
        return value is None or value >= 1, f"{name} must be >= 1, got {value}"

    def non_negative(name: str) -> tuple[bool, str]:
        value = getattr(c, name)
        return value is None or value >= 0, f"{name} must be >= 0, got {value}"

    def finite_positive(name: str) -> tuple[bool, str]:
        value = getattr(c, name)  # `--host-lr inf` or `nan` would make every loss NaN
        return value is None or (math.isfinite(value) and value > 0), f"{name} must be a finite number > 0, got {value}"

    def one_of(name: str, choices: tuple[Any, ...]) -> tuple[bool, str]:
        value = getattr(c, name)
        return value in choices, f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}"

    rules = [
        one_of("controller", CONTROLLERS),
        one_of("precision", ("auto", "fp32", "bf16")),
        one_of("compile", COMPILE_MODES),
        (c.compile in ("auto", "off") or c.nproc == 1,
         f"--compile {c.compile} needs one rank (data-parallel runs train eagerly); use --compile off or auto"),
        one_of("reward", ("shaped", "sparse", "minimal")),
        one_of("tokenizer", ("auto", "gpt2", "bpe")),
        one_of("channels", (None, 1, 3)),
        *_image_rules(c),
        one_of("optimizer", (None, "sgd", "adamw")),
        one_of("lr_schedule", (None, *SCHEDULES)),
        one_of("germination", (None, *GERMINATION_MODES)),
        one_of("policy_act", POLICY_ACTS),
        one_of("telemetry_level", ("off", "minimal", "normal", "debug")),
        one_of("profile", ("minimal", "standard", "diagnostic", "research")),
        *(positive(n) for n in ("epochs", "train_size", "val_size", "train_batches", "batch_size",
                                "host_width", "checkpoint_every", "keep_checkpoints", "n_envs", "episodes", "nproc",
                                "image_size")),
        *(non_negative(n) for n in ("data_budget", "data_workers")),
        *(non_negative(n) for n in ("seed", "data_seed", "max_seeds", "max_rollbacks",
                                    "plateau_epochs", "min_germinate_epoch")),
        *(finite_positive(n) for n in ("host_lr", "seed_lr", "dist_timeout")),
        (c.device == "auto" or c.device == "cpu" or c.device.startswith("cuda"),
         f"device must be auto, cpu, cuda or cuda:N; got {c.device!r}"),
        *_controller_rules(c),
        (bool(c.wandb_project.strip()), "wandb_project (--wandb-project) must not be empty"),
        (bool(c.text_column.strip()), "text_column (--text-column) must not be empty"),
        (all(s.count(":") == 1 for s in c.static_seeds),
         f"static_seeds entries must be SLOT:BLUEPRINT, got {list(c.static_seeds)}"),
    ]
    return [message for ok, message in rules if not ok]


def _controller_rules(c: RunConfig) -> list[tuple[bool, str]]:
    """Keys that only one controller reads: set under another, they would be silently ignored."""
    return [
        (not c.static_seeds or c.controller == "static", "static_seeds (--static-seeds) needs --controller static"),
        (c.policy is None or c.controller == "ppo", "--policy needs --controller ppo"),
        (c.policy_act == "greedy" or c.policy is not None, "--policy-act sample needs --policy RUN_DIR"),
    ]


def _image_rules(c: RunConfig) -> list[tuple[bool, str]]:
    """--task images' keys (docs/runtime.md §5.5): split names, and no image setting on another task."""
    return [
        (c.task == "images" or (c.image_column, c.image_size, c.channels) == (None, None, None),
         "--image-column, --image-size and --channels need --task images"),
        (c.split is None or 1 <= len(csv_list(c.split)) <= 2,
         f"split must be TRAIN or TRAIN,HELDOUT (split names), got {c.split!r}"),
    ]


# --- the flag table -----------------------------------------------------------------------


@attrs.frozen
class Flag:
    """One `train` flag: its option strings, the config key it sets, how to parse it."""

    options: tuple[str, ...]
    key: str
    parse: Callable[[str], Any] | None  # None: a boolean switch
    help: str
    choices: tuple[str, ...] | None = None
    value: Any = True  # what a switch stores


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """"4096", "512K", "1.5G", "2GiB" → bytes (binary multiples: K = 2**10); ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size in bytes (a number with an optional K, M, G or T suffix)")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def byte_size(text: str) -> int:
    """`parse_bytes` as an argparse type: a bad value is argparse's one-line error (exit 2)."""
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def csv_list(text: str) -> tuple[str, ...]:
    """"a, b,,c" → ("a", "b", "c"): a comma-separated flag value."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


FLAGS: tuple[Flag, ...] = (
    Flag(("--task",), "task", str, "task preset (esper-run tasks lists them)"),
    Flag(("--controller",), "controller", str, "growth controller", CONTROLLERS),
    Flag(("--epochs",), "epochs", int, "total epochs (also on resume); default: the preset's"),
    Flag(("--host",), "host", str, "host preset of the task's topology (e.g. tiny); default: the task's"),
    Flag(("--seed",), "seed", int, "run seed (weights, data order, augmentation)"),
    Flag(("--device",), "device", str, "auto, cpu, cuda or cuda:N"),
    Flag(("--slots",), "slots", csv_list, "comma-separated slots to enable; default: all host slots"),
    Flag(("--max-seeds",), "max_seeds", int, "germinations allowed per run (0 = unlimited)"),
    Flag(("--static-seeds",), "static_seeds", csv_list, "SLOT:BLUEPRINT,... fossils from epoch 0 (static only)"),
    Flag(("--precision",), "precision", str, "autocast", ("auto", "fp32", "bf16")),
    Flag(("--deterministic",), "deterministic", None, "deterministic algorithms (default on CPU)"),
    Flag(("--no-deterministic",), "deterministic", None, "allow non-deterministic kernels", value=False),
    Flag(("--compile",), "compile", str, "torch.compile the train step and validation per model structure "
         "(auto: reduce-overhead on CUDA, off on CPU)", COMPILE_MODES),
    Flag(("--data-dir",), "data_dir", str, "directory holding the dataset files"),
    Flag(("--data-seed",), "data_seed", int, "seed of the generated tasks (independent of --seed)"),
    Flag(("--train-size",), "train_size", int, "use the first N training samples"),
    Flag(("--val-size",), "val_size", int, "use N held-out samples (marks the run as a subset)"),
    Flag(("--train-batches",), "train_batches", int, "cap training batches per epoch"),
    Flag(("--tokenizer",), "tokenizer", str, "text tokenizer", ("auto", "gpt2", "bpe")),
    Flag(("--text-column",), "text_column", str, "--task text: the text column of a save_to_disk dataset"),
    # --task images (docs/runtime.md §5.5)
    Flag(("--dataset",), "dataset", str, "images: a dataset in the Hugging Face cache (cache only, no download)"),
    Flag(("--image-column",), "image_column", str, "images: the image column (default image or img)"),
    Flag(("--label-column",), "label_column", str, "images: the label column (default label or labels)"),
    Flag(("--split",), "split", str, "images: TRAIN or TRAIN,HELDOUT split names (default train; "
         "validation, val or test held out, else a stratified 10 %)"),
    Flag(("--image-size",), "image_size", int, "images: resize the short side to S, centre-crop S×S "
         "(default: the images' size when all agree, else the median short side)"),
    Flag(("--channels",), "channels", int, "images: convert every image to 1 (grey) or 3 (RGB) channels; "
         "needed when they mix"),
    Flag(("--data-budget",), "data_budget", byte_size, "bytes of image data kept on the device, e.g. 2G (K/M/G/T = "
         "2**10…); larger data streams through a DataLoader; 0: always stream; default: half its free memory"),
    Flag(("--data-workers",), "data_workers", int, "DataLoader workers of the streamed path (0: none); default: auto"),
    Flag(("--batch-size",), "batch_size", int, "training batch size; default: the preset's"),
    Flag(("--optimizer",), "optimizer", str, "optimizer kind; default: the preset's", ("sgd", "adamw")),
    Flag(("--host-lr",), "host_lr", float, "host learning rate; default: the preset's"),
    Flag(("--seed-lr",), "seed_lr", float, "seed learning rate; default: the preset's"),
    Flag(("--lr-schedule",), "lr_schedule", str, "lr over the run; default: the preset's", SCHEDULES),
    Flag(("--host-width",), "host_width", int, "CNN base channels / transformer width"),
    Flag(("--plateau-epochs",), "plateau_epochs", int, "heuristic: plateau epochs before germinating"),
    Flag(("--min-germinate-epoch",), "min_germinate_epoch", int,
         "heuristic: first epoch it may germinate; default: the preset's"),
    Flag(("--germination",), "germination", str,
         "heuristic: wait for a plateau, or germinate early; default: the preset's", GERMINATION_MODES),
    Flag(("--n-envs",), "n_envs", int, "ppo: environments (episodes) per rollout batch"),
    Flag(("--episodes",), "episodes", int, "ppo: total training episodes (updates = episodes / n-envs)"),
    Flag(("--reward",), "reward", str, "ppo: reward mode", ("shaped", "sparse", "minimal")),
    Flag(("--policy",), "policy", str, "ppo: run the trained policy of RUN_DIR without learning"),
    Flag(("--policy-act",), "policy_act", str, "ppo --policy: the argmax action (default), or one sampled as "
         "in training, from the run seed and epoch", POLICY_ACTS),
    Flag(("--no-governor",), "governor", None, "disable the divergence governor", value=False),
    Flag(("--max-rollbacks",), "max_rollbacks", int, "governor rollbacks before giving up"),
    Flag(("--telemetry-level",), "telemetry_level", str, "what is emitted",
         ("off", "minimal", "normal", "debug")),
    Flag(("--profile",), "profile", str, "what is computed",
         ("minimal", "standard", "diagnostic", "research")),
    Flag(("--events",), "events", str, "also append the JSONL events to PATH"),
    Flag(("--tensorboard",), "tensorboard", None, "write TensorBoard scalars (extra esper[tensorboard])"),
    Flag(("--wandb",), "wandb", None, "log to Weights & Biases (extra esper[wandb]; WANDB_MODE=offline: local)"),
    Flag(("--wandb-project",), "wandb_project", str, "W&B project of --wandb (default esper)"),
    Flag(("--wandb-entity",), "wandb_entity", str, "W&B entity (team or user) of --wandb; default: W&B's"),
    Flag(("--no-progress",), "progress", None, "no live progress display", value=False),
    Flag(("--no-report",), "report", None, "do not draw the report PNGs at the end", value=False),
    Flag(("--checkpoint-every",), "checkpoint_every", int,
         "epochs between checkpoints (default 5); updates for a PPO learning run (default 10)"),
    Flag(("--keep-checkpoints",), "keep_checkpoints", int, "periodic checkpoints kept"),
    Flag(("--nproc",), "nproc", int, "ranks on this machine (torch.distributed; under torchrun: its world size)"),
    Flag(("--dist-timeout",), "dist_timeout", float,
         "seconds a collective waits for a live peer before every rank stops (default 1800)"),
)


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(RunConfig))


def closest(key: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def section_fields() -> dict[str, dict[str, Any]]:
    """The file's tables, the keys each may hold and their types: `{section: {field: type hint}}`
    (docs/runtime.md §6.3). Another table slots in as one more entry of the same shape."""
    hints = typing.get_type_hints(RunConfig)
    return {s: {f.name: hints[f.name] for f in attrs.fields(RunConfig) if f.metadata["section"] == s}
            for s in SECTIONS}


# A run's config.json: its config by section (`config`), and what the run records beside it.
RECORD_KEYS = ("run_id", "config", "data_source", "data_path", "versions", "user")  # user: a script's parts


def _accepted_types(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)


def _matches(t: Any, value: Any) -> bool:
    if typing.get_origin(t) is tuple:  # tuple[str, ...]: every item of the list has the item type
        return isinstance(value, tuple) and all(_matches(typing.get_args(t)[0], v) for v in value)
    if t is type(None) or t is bool:
        return value is None if t is type(None) else isinstance(value, bool)
    if isinstance(value, bool):  # bool is an int subclass; `epochs = true` is a type error
        return False
    if t is float:
        return isinstance(value, int | float)
    return isinstance(value, t)


def _type_name(t: Any) -> str:
    if typing.get_origin(t) is tuple:
        return f"a list of {typing.get_args(t)[0].__name__}"
    return str(t.__name__)


def _typed(hint: Any, value: Any, where: str) -> Any:
    """Check a file value against the field's annotation; lists become tuples, ints may be floats."""
    if isinstance(value, list):
        value = tuple(value)
    accepted = _accepted_types(hint)
    if not any(_matches(t, value) for t in accepted):
        names = " or ".join(_type_name(t) for t in accepted if t is not type(None))
        raise ConfigError(f"{where} must be {names}, got {reprlib.repr(value)}")
    return float(value) if float in accepted and int not in accepted and value is not None else value


def _read(path: Path) -> Any:
    """The file's parsed content; every way it cannot be read is one ConfigError naming it."""
    kind = "JSON" if path.suffix == ".json" else "TOML"
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config file {path} is a directory; give a TOML file or a run's config.json") from exc
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {kind} ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror or exc})") from exc


def _tables(data: Any, path: Path) -> dict[str, Any]:
    """The `{section: table}` part of the file: a TOML/JSON object of tables, or config.json's `config`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be an object of tables, got a JSON {type(data).__name__}")
    if path.suffix != ".json" or "config" not in data:
        return data
    extra = sorted(set(data) - set(RECORD_KEYS))
    if extra:
        raise ConfigError(f"{path}: unknown key {extra[0]} in a run's config.json{closest(extra[0], RECORD_KEYS)}")
    if not isinstance(data["config"], dict):
        raise ConfigError(f"{path}: config must be an object of tables, got {reprlib.repr(data['config'])}")
    return data["config"]


def _hint(key: str, known: Mapping[str, Mapping[str, Any]]) -> str:
    """Where a misplaced key belongs, or the closest known key."""
    home = [section for section, keys in known.items() if key in keys]
    return f" (it belongs in [{home[0]}])" if home else closest(key, [k for keys in known.values() for k in keys])


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Flat `{key: value}` from a TOML file, a JSON file of the same tables, or a run's config.json.
    An unknown table or key, a table that is not one, or a value of the wrong type: ConfigError."""
    path = Path(path)
    tables, known = _tables(_read(path), path), section_fields()
    flat: dict[str, Any] = {}
    for section, table in tables.items():
        if section not in known:
            raise ConfigError(f"{path}: unknown table [{section}]{closest(section, known)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table of keys, got {reprlib.repr(table)}")
        if section == "rl":
            flat["rl"] = rl_settings.table_values(table, str(path))
            continue
        for key, value in table.items():
            if key not in known[section]:
                raise ConfigError(f"{path}: unknown key {section}.{key}{_hint(key, known)}")
            flat[key] = _typed(known[section][key], value, f"{path}: {section}.{key}")
    return flat


def resolve(file_values: Mapping[str, Any], flag_values: Mapping[str, Any]) -> RunConfig:
    """defaults < file < flags (the preset fills what is still None, in `with_preset`); each source's
    `rl` settings of n_envs, episodes and reward_mode first land on those keys (rl_settings)."""
    file_values = rl_settings.fold_aliases(file_values, "config file")
    flag_values = rl_settings.fold_aliases(flag_values, "command line")
    rl = {**file_values.pop("rl", {}), **flag_values.pop("rl", {})}
    return RunConfig(**{**file_values, **flag_values}, rl=rl)
