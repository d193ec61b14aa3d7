"""Register frozen attrs classes as pytrees, so `torch.func` transforms (and, where the
`jax` extra is installed, `jax.tree_util`) walk core states alike.

Fields marked `static_field()` are structure, not data: they travel in the pytree context
(compared for equality, never traced or batched). Every other field is a child.

    @register_pytree
    @attrs.frozen
    class Normaliser:
        mean: Tensor
        var: Tensor
        count: Tensor
        clip: float = static_field(default=5.0)

`tree_stack` and `tree_index` are the two pytree moves the RL loop makes: stack per-env (or per-step)
states along a new leading axis, and pick rows of every leaf.
"""

from collections.abc import Sequence
from typing import Any, TypeVar

import attrs
import torch.utils._pytree as torch_pytree

from esper.core.xp import namespace

T = TypeVar("T")
_STATIC = "esper.pytree.static"


def static_field(**kwargs: Any) -> Any:
    """An attrs field kept out of the pytree's children (a Python constant, not data)."""
    metadata = {**kwargs.pop("metadata", {}), _STATIC: True}
    return attrs.field(metadata=metadata, **kwargs)


def _split(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fields = attrs.fields(cls)
    children = tuple(f.name for f in fields if not f.metadata.get(_STATIC))
    static = tuple(f.name for f in fields if f.metadata.get(_STATIC))
    return children, static


def register_pytree(cls: type[T]) -> type[T]:
    """Class decorator: register an attrs class with torch's pytree (and jax's, if importable)."""
    children, static = _split(cls)

    def flatten(obj: Any) -> tuple[list[Any], tuple[Any, ...]]:
        return [getattr(obj, n) for n in children], tuple(getattr(obj, n) for n in static)

    def unflatten(values: Any, context: tuple[Any, ...]) -> Any:
        return cls(**dict(zip(children, values, strict=True)), **dict(zip(static, context, strict=True)))

    def flatten_with_keys(obj: Any) -> tuple[list[tuple[Any, Any]], tuple[Any, ...]]:
        values, context = flatten(obj)
        return [(torch_pytree.GetAttrKey(n), v) for n, v in zip(children, values, strict=True)], context

    torch_pytree.register_pytree_node(
        cls, flatten, unflatten,
        serialized_type_name=f"{cls.__module__}.{cls.__qualname__}",
        flatten_with_keys_fn=flatten_with_keys,
    )
    _register_with_jax(cls, flatten, unflatten)
    return cls


def _register_with_jax(cls: type, flatten: Any, unflatten: Any) -> None:
    try:  # JAX is an optional extra; the core never requires it.
        import jax.tree_util
    except ImportError:
        return
    jax.tree_util.register_pytree_node(cls, flatten, lambda ctx, values: unflatten(values, ctx))


def set_frozen_fields(obj: object, values: dict[str, Any]) -> None:
    """The `__init__` body of a frozen attrs pytree built inside compiled code.

    attrs' generated `__init__` for frozen classes fetches `object.__setattr__.__get__`, which
    torch.compile(fullgraph=True) rejects; pytree unflatten under a compiled vmap, and pure functions
    returning these classes, build them there. Declare the class `@attrs.frozen(kw_only=True,
    init=False)` and call this from a keyword-only `__init__(self, **values)`.
    """
    names = tuple(f.name for f in attrs.fields(type(obj)))
    if set(values) != set(names):
        raise TypeError(f"{type(obj).__name__} takes exactly the fields {names}, got {tuple(values)}")
    for name in names:
        object.__setattr__(obj, name, values[name])


def tree_stack(trees: Sequence[T]) -> T:
    """Stack same-structure pytrees leaf by leaf along a new leading axis: N trees of [...] → one of [N, ...]."""
    if not trees:
        raise ValueError("tree_stack needs at least one pytree")
    return torch_pytree.tree_map(lambda *leaves: namespace(leaves[0]).stack(leaves), trees[0], *trees[1:])


def tree_index(tree: T, index: Any) -> T:
    """`leaf[index]` for every leaf (an int picks one row, an index array several, along the leading axis)."""
    return torch_pytree.tree_map(lambda leaf: leaf[index], tree)
