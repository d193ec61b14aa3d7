"""Grow a network from a script (docs/runtime.md §6.7): `esper.train(...)`, the entry `esper-run train` calls too.

    import esper
    summary = esper.train(host=my_stack, slots={"mid": 2}, data=((x, y), (x_val, y_val)),
                          catalogue=my_catalogue, epochs=20, out="runs/mine")

Options are the CLI's, by their config names (`epochs=`, `controller="ppo"`, `train_size=`, … as in
`esper-run train --help` and a config file's keys); `config` is a base to start from (a RunConfig, a
TOML or config.json path, or a dict of the file's keys), and the options win over it. The run writes the
run directory the CLI writes and returns its summary (a RunSummary; a PPO learning run's rl_summary dict).

The user's parts, each optional:
    host       a preset host name (`--host`), or the function that builds the user's network, as a
               module-level callable, a "module:function" path or a HostFactory: fn(generator, **host_kwargs)
               returns a Host, or a stack of blocks cut at `slots` ({name: block index}). A checkpoint records
               its import path (never its code), so a resume (`esper-run train --resume`, `evaluate`) can rebuild it.
    catalogue  the blueprints: a built-in catalogue extended by `esper.register_blueprint`.
    data       a TaskData, or ((x, y), (x_val, y_val)) tensors, or (train, val) map-style Datasets of (x, y)
               (esper.shell.data.tensors); otherwise the `task` option's data, as on the CLI.
A resume (`resume=RUN_DIR`) continues a run where it stopped; a run trained on a script's data needs that
data again, the rest it rebuilds from what the run recorded.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from torch import nn
from torch.utils.data import Dataset

from esper.core.catalogue import Catalogue
from esper.core.errors import ConfigError
from esper.core.tasks import FLAT_HOST
from esper.shell.data.taskdata import TaskData
from esper.shell.data.tensors import dataset_data, tensor_data
from esper.shell.driver import train as drive_run
from esper.shell.run_config import RunConfig, closest, field_names, load_config_file, resolve
from esper.shell.user_code import HostFactory, UserParts, import_path_of

HostSpec = str | HostFactory | Callable[..., Any] | None


def train(config: RunConfig | str | Path | Mapping[str, Any] | None = None, *, host: HostSpec = None,
          slots: Mapping[str, int] | None = None, host_kwargs: Mapping[str, Any] | None = None,
          catalogue: Catalogue | None = None, data: Any = None, out: str | Path | None = None,
          resume: str | Path | None = None, stop_after: int | None = None, **options: Any) -> Any:
    """Run (or continue, `resume`) one run and return its summary. `stop_after` ends it after that many
    epochs (PPO: updates) in total, resumable: a job cut to its time limit on purpose. User errors raise
    ConfigError and its kin, each one line (the CLI prints them and exits 2)."""
    cfg = run_config(config, options)
    if isinstance(host, str) and ":" not in host:
        cfg, host = attrs.evolve(cfg, host=host), None  # a preset host, as `--host`
    parts = UserParts(data=script_data(data), host_factory=host_factory(host, slots, host_kwargs),
                      catalogue=catalogue)
    if parts.data is not None:  # the run is named after the script's data, not a preset it did not load
        if "task" in options:
            raise ConfigError(f"data= replaces the task's data: drop task={options['task']!r}")
        cfg = attrs.evolve(cfg, task=parts.data.preset.name)
        if parts.data.preset.host == FLAT_HOST and parts.host_factory is None and resume is None:
            raise ConfigError("flat (N, D) data has no built-in host: pass host= (the function that builds your "
                              "network)")
    return drive_run(cfg, out=None if out is None else str(out), resume=None if resume is None else str(resume),
                     stop_after=stop_after, user=None if parts == UserParts() else parts)


def run_config(config: RunConfig | str | Path | Mapping[str, Any] | None, options: Mapping[str, Any]) -> RunConfig:
    """The base config with the options over it; an unknown option is one line with the closest name."""
    known = field_names()
    for key in options:
        if key not in known:
            raise ConfigError(f"unknown option {key}={options[key]!r}{closest(key, known)}")
    if config is None:
        return resolve({}, options)
    if isinstance(config, RunConfig):
        return resolve(flat_values(config), options)
    if isinstance(config, str | Path):
        return resolve(load_config_file(config), options)
    if isinstance(config, Mapping):
        return resolve(dict(config), options)
    raise ConfigError(f"config must be a RunConfig, a config file's path or a dict, got {type(config).__name__}")


def flat_values(cfg: RunConfig) -> dict[str, Any]:
    """A RunConfig as the flat keys `resolve` takes (its rl settings as their own table)."""
    values = {f.name: getattr(cfg, f.name) for f in attrs.fields(RunConfig)}
    values["rl"] = dict(values["rl"])
    return values


def host_factory(host: HostSpec, slots: Mapping[str, int] | None,
                 host_kwargs: Mapping[str, Any] | None) -> HostFactory | None:
    """The user's host as a HostFactory (what a checkpoint records), or None for a preset host."""
    if host is None:
        if slots is not None or host_kwargs is not None:
            raise ConfigError("slots and host_kwargs describe a user's host: pass host= too")
        return None
    if isinstance(host, HostFactory):
        if slots is not None or host_kwargs is not None:
            raise ConfigError("a HostFactory carries its own slots and kwargs: pass them to it, not to train")
        return host
    if isinstance(host, str):
        return HostFactory(path=host, kwargs=dict(host_kwargs or {}), slots=slots)
    if callable(host) and not isinstance(host, nn.Module):
        return HostFactory(path=import_path_of(host, "host"), kwargs=dict(host_kwargs or {}), slots=slots)
    raise ConfigError(f"host must be a preset name, a module-level function, a 'module:function' path or a "
                      f"HostFactory, got {type(host).__name__} (a built network cannot be recorded: pass the "
                      "function that builds it)")


def script_data(data: Any) -> TaskData | None:
    """A script's data as a TaskData: as given, from ((x, y), (x_val, y_val)) tensors, or from two Datasets."""
    if data is None or isinstance(data, TaskData):
        return data
    if isinstance(data, tuple | list) and len(data) == 2:
        train_part, val_part = data
        if isinstance(train_part, Dataset) and isinstance(val_part, Dataset):
            return dataset_data(train_part, val_part)
        if all(isinstance(part, tuple | list) and len(part) == 2 for part in data):
            return tensor_data(tuple(train_part), tuple(val_part))
    raise ConfigError("data must be a TaskData, ((x, y), (x_val, y_val)) tensors or (train, val) Datasets, got "
                      f"{type(data).__name__}")
