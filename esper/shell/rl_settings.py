"""`RLConfig`'s fields as user settings: `--rl.FIELD VALUE` flags and a config file's `[rl]` table (docs/rl.md §11).

Everything here is generated from `attrs.fields(RLConfig)`, so a new field is a new flag and a new key:

    type        from the annotation: float (finite), int, bool (`true|false`), str, tuple[float, ...] (`a,b,c`)
    choices     from the field's metadata `choices`, a `Literal[...]` annotation or an `attrs.validators.in_`
    checks      RLConfig's own validation, run when the RunConfig holding the settings is built

Three fields have older `RunConfig` aliases: `--n-envs` (n_envs), `--episodes` (episodes) and `--reward`
(reward_mode); they are one setting. Within one source (the command line, or one config file) an alias and
its `rl.` field that disagree are an error; across sources the usual order holds per field:
RLConfig defaults < config file < flags. A `RunConfig` keeps the RL settings as `rl`, sorted (field, value)
pairs without the aliased fields and without values equal to the default, so two ways of writing one
setting compare equal (a resume compares them).
"""

import argparse
import functools
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from esper.core.errors import ConfigError
from esper.core.rl_config import RLConfig

# RLConfig field → the RunConfig key that sets it too (the older PPO flags).
ALIASES: dict[str, str] = {"n_envs": "n_envs", "episodes": "episodes", "reward_mode": "reward"}
PREFIX = "rl."
RLPairs = tuple[tuple[str, Any], ...]


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(RLConfig))


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(RLConfig)


def _hint(name: str) -> Any:
    return _hints()[name]


def choices(name: str) -> tuple[Any, ...] | None:
    """The values a field allows when it is an enumeration (metadata, Literal or `in_` validator)."""
    field = attrs.fields_dict(RLConfig)[name]
    if "choices" in field.metadata:
        return tuple(field.metadata["choices"])
    if typing.get_origin(_hint(name)) is typing.Literal:
        return typing.get_args(_hint(name))
    options = getattr(field.validator, "options", None)
    return tuple(options) if options is not None else None


def _kind(name: str) -> type:
    """float, int, bool, str or tuple: the one JSON-ish type a field's value has."""
    hint = _hint(name)
    if typing.get_origin(hint) is typing.Literal:
        return type(typing.get_args(hint)[0])
    options = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, typing.Union) else (hint,)
    kinds = [typing.get_origin(t) or t for t in options if t is not type(None)]
    return kinds[0]


def _number(value: Any, kind: type, name: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"rl.{name} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"rl.{name} must be finite, got {value!r}")
    return kind(value)


def typed(name: str, value: Any) -> Any:
    """A field's value from a file or JSON (lists become tuples, ints may be floats), checked against the
    annotation and the field's choices; ConfigError (`rl.NAME must be …`) otherwise."""
    if name not in attrs.fields_dict(RLConfig):
        raise ConfigError(f"unknown RL setting rl.{name}")
    kind = _kind(name)
    if kind is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"rl.{name} must be a list of numbers, got {value!r}")
        value = tuple(_number(v, float, name) for v in value)
    elif kind in (int, float):
        value = _number(value, kind, name)
    elif not isinstance(value, kind):
        raise ConfigError(f"rl.{name} must be {kind.__name__}, got {value!r}")
    allowed = choices(name)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"rl.{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return value


def parse_text(name: str, text: str) -> Any:
    """A command-line value: `0.1`, `8`, `true|false`, `shaped`, `0,0.1,0.2` (a tuple)."""
    kind = _kind(name)
    what = "true or false" if kind is bool else "comma-separated numbers" if kind is tuple else kind.__name__
    try:
        if kind is tuple:
            value: Any = tuple(float(part) for part in text.split(",") if part.strip())
        elif kind is bool:
            value = {"true": True, "false": False}[text.strip().lower()]
        else:
            value = kind(text)
        return typed(name, value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    except (ValueError, KeyError) as exc:
        raise argparse.ArgumentTypeError(f"rl.{name} must be {what}, got {text!r}") from exc


def _parser(name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return parse_text(name, text)

    parse.__name__ = f"rl.{name}"  # argparse names the type in its messages
    return parse


def add_flags(command: argparse.ArgumentParser) -> None:
    """One `--rl.FIELD` option per RLConfig field (dest `rl.FIELD`; absent unless given)."""
    group = command.add_argument_group("RL settings (docs/rl.md; read by a learning PPO run)")
    defaults = RLConfig()
    for name in field_names():
        default, kind = getattr(defaults, name), _kind(name)
        metavar = "{" + ",".join(map(str, choices(name) or ())) + "}" if choices(name) else (
            "A,B,..." if kind is tuple else "true|false" if kind is bool else kind.__name__.upper())
        shown = ",".join(map(str, default)) if kind is tuple else default
        alias = f"; same as --{ALIASES[name].replace('_', '-')}" if name in ALIASES else ""
        group.add_argument(f"--{PREFIX}{name}", dest=PREFIX + name, type=_parser(name), default=argparse.SUPPRESS,
                           metavar=metavar, help=f"RLConfig.{name} (default {shown}){alias}")


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The `--rl.FIELD` values given on the command line."""
    return {name: getattr(args, PREFIX + name) for name in field_names() if hasattr(args, PREFIX + name)}


def table_values(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A config file's `[rl]` table, typed; an unknown key is an error with a did-you-mean."""
    import difflib

    out = {}
    for key, value in table.items():
        if key not in attrs.fields_dict(RLConfig):
            match = difflib.get_close_matches(key, field_names(), n=1)
            raise ConfigError(f"{where}: unknown key rl.{key}" + (f" (did you mean {match[0]}?)" if match else ""))
        try:
            out[key] = typed(key, value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return out


def fold_aliases(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """One source's flat values with its `rl` settings of aliased fields moved onto their RunConfig keys;
    an alias and its field that disagree within the source are an error."""
    out = dict(values)
    rl = dict(out.pop("rl", {}))
    for name, key in ALIASES.items():
        if name not in rl:
            continue
        value = rl.pop(name)
        if key in out and out[key] is None and value == getattr(RLConfig(), name):
            continue  # config.json's `episodes = null` beside the default it stands for: one setting, kept None
        if out.get(key) is not None and out[key] != value:
            raise ConfigError(f"{source}: {key} ({out[key]!r}) and rl.{name} ({value!r}) are one setting and "
                              f"disagree; give one of them")
        out[key] = value
    if rl:
        out["rl"] = rl
    return out


def canonical(settings: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> RLPairs:
    """Sorted (field, value) pairs, typed, without values equal to RLConfig's default: RunConfig.rl."""
    pairs = dict(settings.items() if isinstance(settings, Mapping) else settings)
    defaults = RLConfig()
    kept = {name: typed(name, value) for name, value in pairs.items()}
    return tuple(sorted((k, v) for k, v in kept.items() if k in ALIASES or v != getattr(defaults, k)))


def build(settings: RLPairs, *, n_envs: int, episodes: int | None, reward: str) -> RLConfig:
    """The RLConfig a learning PPO run uses: defaults < the aliases' values < the `rl` settings."""
    if aliased := sorted(name for name, _ in settings if name in ALIASES):
        raise ConfigError(f"rl.{aliased[0]} is set through {ALIASES[aliased[0]]} (resolve folds it)")
    values: dict[str, Any] = {"n_envs": n_envs, "reward_mode": reward}
    if episodes is not None:
        values["episodes"] = episodes
    return RLConfig(**{**values, **dict(settings)})


def table(rl: RLConfig) -> dict[str, Any]:
    """The resolved RLConfig as config.json's `[rl]` table (JSON types)."""
    return {name: list(v) if isinstance(v := getattr(rl, name), tuple) else v for name in field_names()}
