"""Model checkpoints (docs/lifecycle.md §8.6): the architecture as plain data, rebuilt, then loaded.

A checkpoint is a dict of plain data and tensors, loadable with `torch.load(weights_only=True)`:

    format "esper.model/1", topology, host {name, config}, catalogue_version 1,
    model {run_seed, episode, env_index, input_grad_from}, lifecycle (codec.encode(state)),
    tensors (model.state_dict()), optionally optimizer (state_dict with §8.5 group names)
    a user's host (esper.shell.user_code): host {name "user", config, factory {path, kwargs, slots,
    sample_dtype}}; a catalogue with user blueprints: blueprints [{name, build, params, fits}] (import
    paths). Neither key is written for a built-in host and catalogue, so those records are unchanged.

Restore: host from its config → model → `codec.decode(LifecycleState, …)` → `sync_to` (rebuilds every
seed module) → `load_state_dict(strict=True)`. Anything that does not fit raises
`CheckpointError` with a one-line message, never a traceback from deep inside torch.
"""

import copy
import os
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import torch

from esper.core import codec
from esper.core.config import LifecycleConfig
from esper.core.errors import ConfigError, HostConfigError, LifecycleError, UnknownBlueprintError
from esper.core.seed import LifecycleState
from esper.core.stages import HAS_MODULE, Stage
from esper.shell.model import MorphogeneticModel
from esper.shell.nets.hosts import HOST_PRESETS, Host, HostConfig, build_host
from esper.shell.user_code import HostFactory, ImportPathError, blueprint_records, catalogue_from_records

FORMAT = "esper.model/1"
CATALOGUE_VERSION = 1
REQUIRED_KEYS = ("format", "topology", "host", "catalogue_version", "model", "lifecycle", "tensors")
# What a mismatching architecture raises on the way to `load_state_dict`; each becomes CheckpointError.
_REBUILD_ERRORS = (LifecycleError, HostConfigError, ConfigError, UnknownBlueprintError, KeyError,
                   TypeError, ValueError)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the architecture it describes."""


class LoadedModel(NamedTuple):
    model: MorphogeneticModel
    state: LifecycleState
    optimizer_state: dict[str, Any] | None


def host_name(config: Any) -> str:
    """The preset whose host this config is, or "custom"."""
    return next((name for name, preset in HOST_PRESETS.items() if preset == config), "custom")


def model_checkpoint(model: MorphogeneticModel, state: LifecycleState,
                     optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """A self-contained snapshot: tensors are copied, so later training does not change it."""
    _check_mirrors(model, state)
    data: dict[str, Any] = {
        "format": FORMAT,
        "topology": model.topology,
        "host": _host_entry(model),
        "catalogue_version": CATALOGUE_VERSION,
        "model": {"run_seed": model.run_seed, "episode": model.episode, "env_index": model.env_index,
                  "input_grad_from": model.lifecycle_config.input_grad_from.name},
        "lifecycle": codec.encode(state),
        "tensors": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    if blueprints := blueprint_records(model.catalogue):
        data["blueprints"] = blueprints
    if optimizer is not None:
        data["optimizer"] = copy.deepcopy(optimizer.state_dict())
    return data


def _host_entry(model: MorphogeneticModel) -> dict[str, Any]:
    """A preset or custom host: its name and config. A user's host: its factory's import path too."""
    config, factory = model.host.config, getattr(model.host, "esper_factory", None)
    if factory is None:
        return {"name": host_name(config), "config": codec.encode(config)}
    return {"name": "user", "config": codec.encode(config) if attrs.has(type(config)) else None,
            "factory": factory.record(model.host.esper_sample_dtype)}


def _check_mirrors(model: MorphogeneticModel, state: LifecycleState) -> None:
    """Refuse to save a state the model was not synced to: the file would not load."""
    if [s.slot_id for s in state.slots] != list(model.slot_ids):
        raise CheckpointError(f"state slots {[s.slot_id for s in state.slots]} are not the model's "
                              f"{list(model.slot_ids)}")
    for slot, target in zip(model.seed_slots(), state.slots, strict=True):
        seed = target.seed
        want = (seed.seed_id, seed.blueprint) if seed is not None and seed.stage in HAS_MODULE else None
        have = (slot.seed_id, slot.blueprint) if slot.module is not None else None
        if want != have:
            raise CheckpointError(f"slot {slot.slot_id}: model holds {have}, state has {want}; "
                                  "call model.sync_to(state) before saving")


def save_model_checkpoint(path: str | os.PathLike[str], model: MorphogeneticModel, state: LifecycleState,
                          optimizer: torch.optim.Optimizer | None = None) -> Path:
    """Write `model_checkpoint(...)` atomically: temp file in the same folder, fsync, os.replace."""
    return write_atomic(path, model_checkpoint(model, state, optimizer))


def write_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(data), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)  # the rename itself survives a crash only once the folder is synced
    return target


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open folders; the file itself is already synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)`: plain data and tensors only; a pickled object is refused."""
    try:
        with warnings.catch_warnings():  # a legacy (non-zip) pickle warns before it is refused
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = [line for line in str(exc).splitlines() if "GLOBAL" in line]
        if blocked:  # weights_only met a class or function: refuse it, never run it
            raise CheckpointError(f"{path}: refused to unpickle a non-tensor object "
                                  f"({blocked[0].strip()})") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({_weights_only_reason(exc)})") from None
    except (OSError, RuntimeError, EOFError, ValueError, IndexError, KeyError) as exc:
        # Corrupt bytes trip the weights-only unpickler's own stack and memo: IndexError ("pop from
        # empty list") and KeyError (a missing memo entry) come from there, not from esper.
        raise CheckpointError(f"{path}: not a readable checkpoint ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an esper checkpoint (top level is {type(data).__name__})")
    return data


def load_model_checkpoint(source: str | os.PathLike[str] | Mapping[str, Any], *,
                          lifecycle: LifecycleConfig | None = None, device: torch.device | str = "cpu",
                          dropout_generator: torch.Generator | None = None) -> LoadedModel:
    """Rebuild the model a checkpoint describes and load its tensors (§8.6).

    Returns (model, state, optimizer_state); the optimizer state (or None) goes into an optimizer
    built with `param_groups(model, …)` through `load_optimizer_state`. The model is in training
    mode on `device`; its host's dropout draws from `dropout_generator` (a run passes its own).
    """
    where = str(source) if not isinstance(source, Mapping) else "checkpoint"
    data = dict(source) if isinstance(source, Mapping) else read_checkpoint(source, device)
    _check_header(where, data)
    try:
        model, state = _rebuild(data, lifecycle, torch.device(device), dropout_generator)
    except ImportPathError as exc:  # the user's code is not importable here: say which path
        raise CheckpointError(f"{where}: {_one_line(exc)}") from None
    except _REBUILD_ERRORS as exc:
        raise CheckpointError(f"{where}: architecture does not match: {_one_line(exc)}") from None
    _load_tensors(where, model, data["tensors"])
    optimizer_state = data.get("optimizer")
    if optimizer_state is not None and not isinstance(optimizer_state, dict):
        raise CheckpointError(f"{where}: optimizer entry is not an optimizer state dict")
    return LoadedModel(model, state, optimizer_state)


def _check_header(where: str, data: Mapping[str, Any]) -> None:
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{where}: format {data.get('format')!r}, expected {FORMAT!r}")
    if missing := [k for k in REQUIRED_KEYS if k not in data]:
        raise CheckpointError(f"{where}: missing entries {missing}")
    if data["catalogue_version"] != CATALOGUE_VERSION:
        raise CheckpointError(f"{where}: catalogue version {data['catalogue_version']!r}, "
                              f"this esper reads {CATALOGUE_VERSION}")


def _rebuild(data: Mapping[str, Any], lifecycle: LifecycleConfig | None, device: torch.device,
             dropout_generator: torch.Generator | None) -> tuple[MorphogeneticModel, LifecycleState]:
    host = _rebuild_host(data, dropout_generator).to(device)
    if data["topology"] != host.config.KIND:
        raise HostConfigError(f"host config kind {host.config.KIND!r} but topology {data['topology']!r}")
    meta = data["model"]
    saved_grad_from = Stage[meta["input_grad_from"]]
    lifecycle = lifecycle or LifecycleConfig(input_grad_from=saved_grad_from)
    if lifecycle.input_grad_from != saved_grad_from:
        raise ConfigError(f"lifecycle input_grad_from {lifecycle.input_grad_from.name}, "
                          f"checkpoint {saved_grad_from.name}")
    model = MorphogeneticModel(host, run_seed=meta["run_seed"], episode=meta["episode"],
                               env_index=meta["env_index"], lifecycle=lifecycle,
                               catalogue=catalogue_from_records(data["topology"], data.get("blueprints", ())))
    state = codec.decode(LifecycleState, data["lifecycle"])
    model.sync_to(state)
    return model, state


def _rebuild_host(data: Mapping[str, Any], dropout_generator: torch.Generator | None) -> Host:
    """The host of the record: a preset/custom one from its config, a user's from its factory (re-imported).
    Its initial weights do not matter: every tensor is loaded from the file afterwards."""
    entry = data["host"]
    if "factory" not in entry:
        return build_host(codec.decode(HostConfig, entry["config"]), torch.Generator().manual_seed(0),
                          dropout_generator)
    recorded = entry.get("config")
    host = HostFactory.rebuild(entry["factory"], recorded["input_shape"] if recorded else (), dropout_generator)
    if recorded is not None and attrs.has(type(host.config)) and codec.encode(host.config) != recorded:
        raise HostConfigError(f"host factory {entry['factory']['path']} now builds another host than the "
                              "checkpoint's (its slots or feature shapes changed)")
    return host


def _load_tensors(where: str, model: MorphogeneticModel, tensors: Mapping[str, Any]) -> None:
    """Compare keys and shapes first, so a mismatch reads as one line, then load strictly."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"{where}: tensors entry is a {type(tensors).__name__}, not a state dict")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and (not isinstance(tensors[k], torch.Tensor)
                                                       or tensors[k].shape != expected[k].shape)]
    for label, keys in (("missing tensors", missing), ("unexpected tensors", unexpected),
                        ("tensors of the wrong shape", wrong)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
            raise CheckpointError(f"{where}: architecture does not match: {label}: {shown}")
    model.load_state_dict(dict(tensors), strict=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: Mapping[str, Any]) -> None:
    """Load a saved optimizer state into an optimizer built with `param_groups(model, …)`.

    PyTorch matches groups by position; groups were created in lifecycle order, so the fresh
    optimizer's groups are first put into the saved order by their §8.5 names.
    """
    saved_names = [g.get("name") for g in saved.get("param_groups", [])]
    by_name = {g.get("name"): g for g in optimizer.param_groups}
    if None in saved_names or sorted(saved_names) != sorted(by_name):
        raise CheckpointError(f"optimizer groups {sorted(by_name)} do not match the saved "
                              f"{saved_names}")
    optimizer.param_groups[:] = [by_name[name] for name in saved_names]
    try:
        optimizer.load_state_dict(dict(saved))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state does not match: {_one_line(exc)}") from None


def _weights_only_reason(exc: BaseException) -> str:
    """The informative line of torch's long weights_only message (it ends with boilerplate)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    informative = [line for line in lines[1:-1] if not line.startswith("Please file an issue")]
    return informative[-1] if informative else _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ").replace("\t", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
