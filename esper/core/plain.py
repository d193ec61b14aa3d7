"""Frozen values to JSON types, for checkpoints and files."""

from typing import Any

import attrs


def plain_fields(instance: Any) -> dict[str, Any]:
    """An attrs instance's fields, one level deep, with tuples as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(instance, recurse=False).items()}
