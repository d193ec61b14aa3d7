"""One codec for the frozen values that go into files and checkpoints (cattrs underneath).

    encode(value)      -> JSON types (dicts, lists, str, int, float, bool, None)
    decode(cls, data)  -> a `cls`;   decode(type(v), encode(v)) == v

The format, for every attrs class alike:

- a value is the dict of its fields in declaration order; nested values likewise;
- tuples are lists; dicts stay dicts;
- a `StrEnum` is its value (`Verdict.kind` "ok"); any other enum its name (`Stage`, `Curve`, `Op`);
- a field whose metadata sets `OMIT_IF_DEFAULT` is absent while it equals its default (a field added
  to a recorded class, so older records re-encode to the same bytes);
- a class with a string `KIND` class attribute (the host configs) leads with `"kind": KIND`;
  decoding checks it, and decoding a union of such classes dispatches on it.

Decoding builds each class through its own `__init__`, so the class's converters and validators
judge the record. Scalars pass through as the record holds them: a "3" where an int belongs fails
the class's own check instead of silently becoming 3. A field the class lacks is a `TypeError`, a
missing required one a `KeyError`, a record that is not a mapping a `TypeError`; classes
registered with `register_error` turn those into their own error type (the lifecycle states raise
`LifecycleError`, the host configs `HostConfigError`).

Two classes differ from the rule, each with its hooks below: `RunningStats` (tensors as nested
lists and the count as a float, checked on reading) and `RunSummary` (writes its derived
`total_params` after the fields, ignores it on reading).

Pure: no I/O. Encoding a `RunningStats` copies its tensors to the host (`tolist`), so only the
shell encodes one. The telemetry wire (`esper.core.wire`) reads and writes events with a
converter from `make_converter` too.
"""

import enum
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs
import cattrs
import torch
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from esper.core.errors import LifecycleError
from esper.core.running_stats import RunningStats
from esper.core.seed import LifecycleState, SeedState, SlotState
from esper.core.summary import RunSummary

__all__ = ["OMIT_IF_DEFAULT", "decode", "encode", "make_converter", "register_error"]

T = TypeVar("T")
Hook = Callable[[Any, Any], Any]
MALFORMED = (KeyError, TypeError, ValueError)
_SCALARS = (int, float, str, bool)
_ENUM_BASES = (enum.Enum, enum.IntEnum, enum.StrEnum)
_ERRORS: dict[Any, tuple[type[Exception], str]] = {}
# A field added to a recorded class with this metadata key true is left out of the record while it
# holds its default (decoding restores the default): the records written before it stay byte for byte.
OMIT_IF_DEFAULT = "codec_omit_if_default"


def encode(value: Any) -> Any:
    """`value` as JSON types (module docstring: the format)."""
    return FILES.unstructure(value)


def decode(cls: type[T], data: Any) -> T:
    """The `cls` that `data` (JSON types, as `encode` wrote them) describes."""
    return FILES.structure(data, cls)


def register_error(cls: Any, error: type[Exception], what: str) -> None:
    """Malformed records of `cls` (KeyError, TypeError, ValueError) raise `error(f"{what}: …")`."""
    _ERRORS[cls] = (error, what)


def _raising_own_error(cls: Any, hook: Hook) -> Hook:
    def structure(data: Any, tp: Any) -> Any:
        try:
            return hook(data, tp)
        except MALFORMED as exc:
            error, what = _ERRORS.get(cls, (None, ""))
            if error is None or isinstance(exc, error):
                raise
            raise error(f"{what}: {exc!r}") from exc
    return structure


# --- tagged classes (`KIND`) -------------------------------------------------------------------


def _tagged(tp: Any) -> bool:
    return attrs.has(tp) and isinstance(getattr(tp, "KIND", None), str)


def _tagged_union(tp: Any) -> bool:
    members = [a for a in get_args(tp) if a is not type(None)]
    return get_origin(tp) in (Union, types.UnionType) and len(members) > 1 and all(map(_tagged, members))


def _untag(cls: Any, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} record must be a mapping, got {type(data).__name__}")
    values = dict(data)
    kind = values.pop("kind", cls.KIND)
    if kind != cls.KIND:
        raise ValueError(f"{cls.__name__} cannot read a {kind!r} record")
    return values


def _structure_tagged_union(converter: cattrs.Converter, tp: Any) -> Hook:
    by_kind = {cls.KIND: cls for cls in get_args(tp) if cls is not type(None)}

    def structure(data: Any, _: Any) -> Any:
        kind = data.get("kind") if isinstance(data, Mapping) else None
        if kind not in by_kind:
            raise ValueError(f"kind {kind!r} not in {sorted(by_kind)}")
        return converter.structure(data, by_kind[kind])
    return _raising_own_error(tp, structure)


# --- attrs classes ------------------------------------------------------------------------------


def _structure_attrs(converter: cattrs.Converter, cls: Any,
                     field_hooks: Mapping[tuple[type, str], Hook] | None = None) -> Hook:
    hooks = {name: override(struct_hook=hook) for (owner, name), hook in (field_hooks or {}).items() if owner is cls}
    generated = make_dict_structure_fn(cls, converter, **hooks)

    def structure(data: Any, tp: Any) -> Any:
        if _tagged(cls):
            data = _untag(cls, data)
        elif not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__} record must be a mapping, got {type(data).__name__}")
        try:
            return generated(data, tp)
        except ForbiddenExtraKeysError as exc:
            raise TypeError(f"{cls.__name__} has no field(s) {sorted(exc.extra_fields)}") from None
    return _raising_own_error(cls, structure)


def _unstructure_attrs(converter: cattrs.Converter, cls: Any) -> Callable[[Any], dict[str, Any]]:
    omitted = {f.name: override(omit_if_default=True) for f in attrs.fields(cls) if f.metadata.get(OMIT_IF_DEFAULT)}
    generated = make_dict_unstructure_fn(cls, converter, **omitted)
    if _tagged(cls):
        return lambda value: {"kind": cls.KIND, **generated(value)}
    return generated


def _enum_name_or_value(value: enum.Enum) -> Any:
    return value.value if isinstance(value, enum.StrEnum) else value.name


def _enum_from_name_or_value(data: Any, tp: type[enum.Enum]) -> enum.Enum:
    if isinstance(data, tp):
        return data
    return tp(data) if issubclass(tp, enum.StrEnum) else tp[data]


# --- the two special classes --------------------------------------------------------------------


def _encode_stats(stats: RunningStats) -> dict[str, Any]:
    """Plain lists and a float, loadable with `torch.load(weights_only=True)`."""
    return {"mean": stats.mean.tolist(), "var": stats.var.tolist(), "count": float(stats.count)}


def _decode_stats(data: Any, _: Any) -> RunningStats:
    mean = torch.tensor(data["mean"], dtype=torch.float32)
    var = torch.tensor(data["var"], dtype=torch.float32)
    count = torch.tensor(float(data["count"]), dtype=torch.float32)
    if mean.shape != var.shape or bool((var < 0).any()) or float(count) < 0:
        raise ValueError(f"running stats: bad record (mean {tuple(mean.shape)}, var {tuple(var.shape)}, "
                         f"count {float(count)})")
    return RunningStats(mean=mean, var=var, count=count)


def _summary_hooks(converter: cattrs.Converter) -> None:
    fields = _unstructure_attrs(converter, RunSummary)
    read = _structure_attrs(converter, RunSummary)

    def encode_summary(summary: RunSummary) -> dict[str, Any]:
        return {**fields(summary), "total_params": summary.total_params}

    def decode_summary(data: Any, tp: Any) -> RunSummary:
        if isinstance(data, Mapping):
            data = {k: v for k, v in data.items() if k != "total_params"}
        return read(data, tp)

    converter.register_unstructure_hook(RunSummary, encode_summary)
    converter.register_structure_hook(RunSummary, decode_summary)


# --- the converters -----------------------------------------------------------------------------


def _same(value: Any, _: Any) -> Any:
    return value


def make_converter(*, forbid_extra_keys: bool = True, float_hook: Hook = _same,
                   field_hooks: Mapping[tuple[type, str], Hook] | None = None) -> cattrs.Converter:
    """A converter with the format above. The telemetry wire reuses it with unknown fields
    ignored (a v1 reader of a newer writer), floats parsed from "nan"/"inf" strings, and
    `field_hooks` {(class, field): hook(value, type)} for fields typed `Any` that hold core values."""
    converter = cattrs.Converter(forbid_extra_keys=forbid_extra_keys, detailed_validation=False,
                                 unstruct_collection_overrides={tuple: list})
    for scalar in _SCALARS:  # cattrs would call int(value) and friends: pass them through instead
        converter.register_structure_hook(scalar, float_hook if scalar is float else _same)
    converter.register_structure_hook_func(lambda tp: tp is object, _same)
    for base in _ENUM_BASES:  # each base: an IntEnum would otherwise find cattrs' int hook first
        converter.register_structure_hook(base, _enum_from_name_or_value)
        converter.register_unstructure_hook(base, _enum_name_or_value)
    # A field typed `object` (a gate check's value) holds any value: encode it by what it is.
    converter.register_unstructure_hook_func(lambda tp: tp is object, lambda value: converter.unstructure(value))
    converter.register_structure_hook_factory(attrs.has, lambda tp: _structure_attrs(converter, tp, field_hooks))
    converter.register_unstructure_hook_factory(attrs.has, lambda tp: _unstructure_attrs(converter, tp))
    converter.register_structure_hook_factory(_tagged_union, lambda tp: _structure_tagged_union(converter, tp))
    converter.register_unstructure_hook(RunningStats, _encode_stats)
    converter.register_structure_hook(RunningStats, _decode_stats)
    _summary_hooks(converter)
    return converter


register_error(SeedState, LifecycleError, "bad seed record")
register_error(SlotState, LifecycleError, "bad slot record")
register_error(LifecycleState, LifecycleError, "bad lifecycle record")
FILES = make_converter()
