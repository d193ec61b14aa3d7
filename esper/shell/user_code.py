"""The user's own host and blueprints by import path (docs/lifecycle.md §7.4, §6.6): what a checkpoint records.

A checkpoint holds plain data only (`torch.load(weights_only=True)`), never a pickled function. A run on
the user's host therefore records where its code lives, and loading imports it again:

    HostFactory    "module:function" + JSON-able kwargs (+ slots when the function returns a bare stack)
                   function(generator, **kwargs) -> a Host, or an nn.Sequential / list of blocks
    user blueprint name + "module:function" of its build, params and fits

The factory runs under a forked global RNG seeded from the generator's seed, so a stack whose modules
draw their init from the global RNG (nn.Linear's default) is still a function of the run's seed; its
`nn.Dropout`s are swapped for ones on the run's dropout generator (esper.shell.nets.dropout).
An import path that does not resolve is an `ImportPathError`: one line naming the path.
"""

import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from esper.core.catalogue import Catalogue, catalogue_for
from esper.core.errors import ConfigError
from esper.shell.data.augment import ImageTransform
from esper.shell.data.taskdata import TaskData
from esper.shell.nets.dropout import replace_dropouts
from esper.shell.nets.host_base import Host, to_layout
from esper.shell.nets.stack_host import host_from_stack

BLUEPRINT_ROLES = ("build", "params", "fits")
TENSORS = ("train_inputs", "train_labels", "heldout_inputs", "heldout_labels")  # a resident task's splits


class ImportPathError(ConfigError):
    """A `module:function` path that does not import, or a callable that has no such path."""


def resolve(path: str) -> Any:
    """The object at `module:attr[.attr…]`, or an ImportPathError naming the path."""
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise ImportPathError(f"import path {path!r} is not of the form module:function")
    try:
        target: Any = main_module() if module_name == main_name() else importlib.import_module(module_name)
    except Exception as exc:  # a missing module, or one that fails while importing: one line either way
        raise ImportPathError(f"cannot import {path!r}: {_one_line(exc)}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ImportPathError(f"cannot import {path!r}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ImportPathError(f"import path {path!r} is not callable")
    return target


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def main_module() -> Any:
    return sys.modules["__main__"]


def main_name() -> str | None:
    """The name the running script imports under elsewhere: `python -m pkg.mod`'s pkg.mod, `python path/mod.py`'s
    mod (its folder on sys.path, as Python puts it there); None for an interactive session."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name != "__main__":
        return str(spec.name)
    file = getattr(main, "__file__", None)
    return Path(file).stem if file else None


def import_path_of(fn: Any, what: str) -> str:
    """`module:qualname` of a module-level callable that imports back to itself (no lambda, no closure). A
    function of the running script is recorded under the script's module name (`main_name`): in the script it
    resolves to itself, elsewhere (`esper-run train --resume`, `evaluate`) by importing the script, whose run
    must then sit under `if __name__ == "__main__":`."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module == "__main__":
        module = main_name()
    if not module or not qualname or "<" in qualname:
        raise ImportPathError(f"{what} {fn!r} has no import path: define it at module level of an "
                              "importable module (a checkpoint records module:function, never the code)")
    path = f"{module}:{qualname}"
    if resolve(path) is not fn:
        raise ImportPathError(f"{what}: {path} does not import back to {fn!r}")
    return path


def _json_kwargs(value: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(value), sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"host factory kwargs must be JSON data: {exc}") from None


@attrs.frozen(kw_only=True)
class HostFactory:
    """`path(generator, **kwargs)` builds the user's host; `slots` cut a bare stack into one."""

    path: str
    kwargs: dict[str, Any] = attrs.field(factory=dict, converter=_json_kwargs)
    slots: tuple[tuple[str, int], ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(lambda s: tuple(to_layout(s))))

    def build(self, generator: torch.Generator, sample: Tensor,
              dropout_generator: torch.Generator | None = None) -> Host:
        """The host, its init drawn from `generator` (and the global RNG forked and seeded from it);
        `sample` (a batch like the inputs) is the probe forward of a bare stack. With a
        `dropout_generator`, every `nn.Dropout` of the host draws from it (as a preset host's does)."""
        function = resolve(self.path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator.initial_seed())
            try:
                built = function(generator, **self.kwargs)
            except Exception as exc:  # the user's code: its failure is one line naming the factory
                raise ConfigError(f"host factory {self.path}(generator, **{self.kwargs}) failed: "
                                  f"{_one_line(exc)}") from None
        if isinstance(built, Host):
            host = built
        elif isinstance(built, nn.Sequential | Sequence):
            if self.slots is None:
                raise ConfigError(f"host factory {self.path} returned a stack of blocks: give its slots "
                                  "(HostFactory(..., slots={name: block index}))")
            host = host_from_stack(built, self.slots, sample=sample)
        else:
            raise ConfigError(f"host factory {self.path} returned {type(built).__name__}, not a Host or a stack")
        if dropout_generator is not None:
            replace_dropouts(host, dropout_generator)
        host.esper_factory = self  # what model_checkpoint records (a name no user module is likely to use)
        host.esper_sample_dtype = str(sample.dtype).removeprefix("torch.")
        return host

    def spec(self) -> dict[str, Any]:
        """The factory by import path, as JSON: `HostFactory(**spec)` builds it again."""
        return {"path": self.path, "kwargs": self.kwargs,
                "slots": None if self.slots is None else [list(s) for s in self.slots]}

    def record(self, sample_dtype: str) -> dict[str, Any]:
        """`spec()` and the sample's dtype: what a checkpoint needs to rebuild the host before its weights."""
        return {**self.spec(), "sample_dtype": sample_dtype}

    @classmethod
    def rebuild(cls, record: Mapping[str, Any], input_shape: Sequence[int],
                dropout_generator: torch.Generator | None = None) -> Host:
        """The host a checkpoint's factory record describes (its weights are loaded afterwards)."""
        factory = cls(path=record["path"], kwargs=record.get("kwargs") or {}, slots=record.get("slots"))
        sample = torch.zeros((1, *input_shape), dtype=getattr(torch, record.get("sample_dtype", "float32")))
        return factory.build(torch.Generator().manual_seed(0), sample, dropout_generator)


@attrs.frozen(kw_only=True)
class UserParts:
    """What a script hands a run besides its config: its own data, host factory and catalogue (each optional)."""

    data: TaskData | None = None
    host_factory: HostFactory | None = None
    catalogue: Catalogue | None = None

    def task_data(self, device: torch.device) -> TaskData:
        """The script's data on the run's device (a device-resident task is copied there; a streamed one
        must have been built for it)."""
        data = self.data
        assert data is not None
        if data.device == device:
            return data
        if data.streamed is not None:
            raise ConfigError(f"the streamed data is built for {data.device}, the run is on {device}: build it for "
                              "the run's device")
        transform = data.transform
        if transform is not None:
            transform = ImageTransform(padding=transform.padding, hflip=transform.hflip,
                                       mean=tuple(transform.mean.tolist()), std=tuple(transform.std.tolist()),
                                       device=device)
        return attrs.evolve(data, device=device, transform=transform,
                            **{name: getattr(data, name).to(device) for name in TENSORS})

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"host_factory": self.host_factory, "catalogue": self.catalogue}


def probe_sample(data: TaskData) -> Tensor:
    """A few prepared training inputs on the CPU: the probe batch of a user's stack host."""
    x, _ = data.batch("train", slice(0, min(8, data.n_train)))
    return data.prepare_batch(x, train=False).cpu()


def user_blueprints(catalogue: Catalogue) -> tuple[str, ...]:
    """The names of the catalogue's extensions (entries with their own builder), in catalogue order;
    each must have import paths (`blueprint_records`), so a run's checkpoints can record it."""
    return tuple(record["name"] for record in blueprint_records(catalogue))


def blueprint_records(catalogue: Catalogue) -> list[dict[str, Any]]:
    """Per user blueprint: its name and the import paths of build, params and fits (None: the default)."""
    out = []
    for entry in catalogue.entries:
        if entry.build is None:
            continue
        fits = import_path_of(entry.constraint, f"blueprint {entry.name!r} fits")  # the default's path too
        out.append({"name": entry.name, "build": import_path_of(entry.build, f"blueprint {entry.name!r} build"),
                    "params": import_path_of(entry.params, f"blueprint {entry.name!r} params"), "fits": fits})
    return out


def catalogue_from_records(topology: str, records: Sequence[Mapping[str, Any]]) -> Catalogue:
    """The built-in catalogue of `topology` extended by the recorded user blueprints, in their order."""
    catalogue = catalogue_for(topology)
    for record in records:
        catalogue = catalogue.with_blueprint(record["name"], resolve(record["build"]), resolve(record["params"]),
                                             resolve(record["fits"]))
    return catalogue


def user_record(user: UserParts | None) -> dict[str, Any] | None:
    """What a run's record (config.json, checkpoints) says of the script's parts, by import path: a resume
    rebuilds them from it (`resumed_parts`). None for a run without user parts (its record is unchanged)."""
    if user is None:
        return None
    record: dict[str, Any] = {}
    if user.host_factory is not None:
        record["host_factory"] = user.host_factory.spec()
    if user.catalogue is not None:
        record["catalogue"] = {"topology": user.catalogue.topology, "blueprints": blueprint_records(user.catalogue)}
    if user.data is not None:
        record["data"] = user.data.source.preset  # its tensors are the script's: a resume is handed them again
    return record or None


def resumed_parts(record: Mapping[str, Any] | None, given: UserParts | None) -> UserParts | None:
    """The parts a resumed run uses: those `given` again, else the recorded ones rebuilt from their import
    paths. A run on a script's data needs that data again (one line saying how to give it)."""
    if not record:
        return given
    given = given or UserParts()
    if "data" in record and given.data is None:
        raise ConfigError(f"this run trained on data its script handed in ({record['data']}): resume it from "
                          "Python, esper.train(resume=RUN_DIR, data=<the same data>)")
    factory = given.host_factory
    if factory is None and "host_factory" in record:
        factory = HostFactory(**record["host_factory"])
    catalogue = given.catalogue
    if catalogue is None and "catalogue" in record:
        recorded = record["catalogue"]
        catalogue = catalogue_from_records(recorded["topology"], recorded["blueprints"])
    return UserParts(data=given.data, host_factory=factory, catalogue=catalogue)
