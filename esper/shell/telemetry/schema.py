"""JSONL schema v1: the shipped `schema_v1.json`, how it is derived, and a small validator.

The shipped file is generated from the event registry (`python -m esper.shell.telemetry.schema`
rewrites it) and a test holds the two equal, so a field added to an event without updating the
schema fails CI. The validator covers the JSON-Schema subset the file uses (type, const, enum,
pattern, minimum, required, properties, additionalProperties, items, anyOf, allOf, if/then),
so the check needs no `jsonschema` dependency.
"""

import json
import re
import sys
import types
from importlib import resources
from typing import Any, Union, get_args, get_origin

import attrs

from esper.core.stages import Stage
from esper.core.wire import EVENT_TYPES, SCHEMA_VERSION

SCHEMA_FILE = f"schema_v{SCHEMA_VERSION}.json"
_FLOAT = {"anyOf": [{"type": "number"}, {"enum": ["nan", "inf", "-inf"]}]}


def load_schema() -> dict[str, Any]:
    """The schema shipped inside the package (works from a wheel or an editable install)."""
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


# --- derivation from the registry ---------------------------------------------------------------


def _type_schema(tp: Any) -> dict[str, Any]:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    simple = {str: "string", bool: "boolean", int: "integer"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is float:
        return _FLOAT
    if tp is Stage:
        return {"enum": [s.name for s in Stage]}
    if origin is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return {"type": "array", "items": _type_schema(item)}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if isinstance(tp, type) and attrs.has(tp):
        return _object_schema(tp)
    return {}  # Any: free-form JSON


def _object_schema(cls: type) -> dict[str, Any]:
    fields = attrs.fields(cls)
    return {
        "type": "object",
        "required": [f.name for f in fields if f.default is attrs.NOTHING],
        "properties": {f.name: _field_schema(f) for f in fields},
    }


def _field_schema(field: "attrs.Attribute[Any]") -> dict[str, Any]:
    """The field's type, or the closed set of values its `attrs.validators.in_` allows."""
    options = getattr(field.validator, "options", None)
    return {"enum": list(options)} if options is not None else _type_schema(field.type)


def build_schema() -> dict[str, Any]:
    """Schema v1 as derived from the event classes."""
    per_kind = [
        {"if": {"properties": {"event": {"const": kind}}},
         "then": {"properties": {"fields": _object_schema(cls)}}}
        for kind, cls in EVENT_TYPES.items()
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://esper.invalid/schema/events/v1.json",
        "title": "esper telemetry record, schema v1 (one JSON object per line of events.jsonl)",
        "type": "object",
        "required": ["schema_version", "run_id", "seq", "time", "event", "severity", "epoch", "env",
                     "fields"],
        "additionalProperties": False,
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "run_id": {"type": "string", "minLength": 1},
            "seq": {"type": "integer", "minimum": 0},
            "time": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"},
            "event": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"},
            "severity": {"enum": ["info", "warning", "error"]},
            "epoch": {"type": ["integer", "null"]},
            "env": {"type": "integer", "minimum": 0},
            "fields": {"type": "object"},
        },
        "allOf": per_kind,
    }


# --- validation --------------------------------------------------------------------------------

_JSON_TYPES = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def validate(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every violation of `schema` by `instance`, as `path: message` strings (empty: valid)."""
    errors: list[str] = []
    for key, check in _KEYWORDS.items():
        if key in schema:
            errors += check(instance, schema, path)
    return errors


def _type(v: Any, s: dict[str, Any], path: str) -> list[str]:
    names = s["type"] if isinstance(s["type"], list) else [s["type"]]
    return [] if any(_JSON_TYPES[n](v) for n in names) else [f"{path}: {v!r} is not of type {names}"]


def _const(v: Any, s: dict[str, Any], path: str) -> list[str]:
    return [] if v == s["const"] and type(v) is type(s["const"]) else [f"{path}: {v!r} != {s['const']!r}"]


def _enum(v: Any, s: dict[str, Any], path: str) -> list[str]:
    return [] if v in s["enum"] else [f"{path}: {v!r} not one of {s['enum']}"]


def _pattern(v: Any, s: dict[str, Any], path: str) -> list[str]:
    ok = not isinstance(v, str) or re.search(s["pattern"], v)
    return [] if ok else [f"{path}: {v!r} does not match {s['pattern']!r}"]


def _minimum(v: Any, s: dict[str, Any], path: str) -> list[str]:
    ok = not _JSON_TYPES["number"](v) or v >= s["minimum"]
    return [] if ok else [f"{path}: {v!r} < {s['minimum']}"]


def _min_length(v: Any, s: dict[str, Any], path: str) -> list[str]:
    ok = not isinstance(v, str) or len(v) >= s["minLength"]
    return [] if ok else [f"{path}: {v!r} shorter than {s['minLength']}"]


def _required(v: Any, s: dict[str, Any], path: str) -> list[str]:
    if not isinstance(v, dict):
        return []
    return [f"{path}: missing required {k!r}" for k in s["required"] if k not in v]


def _properties(v: Any, s: dict[str, Any], path: str) -> list[str]:
    if not isinstance(v, dict):
        return []
    return [e for k, sub in s["properties"].items() if k in v for e in validate(v[k], sub, f"{path}.{k}")]


def _additional(v: Any, s: dict[str, Any], path: str) -> list[str]:
    if not isinstance(v, dict) or s["additionalProperties"] is not False:
        return []
    return [f"{path}: unexpected property {k!r}" for k in v if k not in s.get("properties", {})]


def _items(v: Any, s: dict[str, Any], path: str) -> list[str]:
    if not isinstance(v, list):
        return []
    return [e for i, item in enumerate(v) for e in validate(item, s["items"], f"{path}[{i}]")]


def _any_of(v: Any, s: dict[str, Any], path: str) -> list[str]:
    if any(not validate(v, sub, path) for sub in s["anyOf"]):
        return []
    return [f"{path}: {v!r} matches none of {len(s['anyOf'])} alternatives"]


def _all_of(v: Any, s: dict[str, Any], path: str) -> list[str]:
    return [e for sub in s["allOf"] for e in validate(v, sub, path)]


def _if_then(v: Any, s: dict[str, Any], path: str) -> list[str]:
    if validate(v, s["if"], path):
        return []
    return validate(v, s.get("then", {}), path)


_KEYWORDS = {
    "type": _type, "const": _const, "enum": _enum, "pattern": _pattern, "minimum": _minimum,
    "minLength": _min_length, "required": _required, "properties": _properties,
    "additionalProperties": _additional, "items": _items, "anyOf": _any_of, "allOf": _all_of,
    "if": _if_then,
}


def main() -> None:
    """Regenerate the shipped schema file next to this module."""
    target = resources.files(__package__).joinpath(SCHEMA_FILE)
    schema = build_schema()
    head = json.dumps({k: v for k, v in schema.items() if k != "allOf"}, indent=2)
    per_kind = ",\n".join(f"    {json.dumps(rule, ensure_ascii=False)}" for rule in schema["allOf"])
    text = f'{head[:-2]},\n  "allOf": [\n{per_kind}\n  ]\n}}\n'  # one line per event kind
    with open(str(target), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
