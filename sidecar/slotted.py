"""Frozen, slotted dataclasses built without their generated ``__init__`` (a hot-path detail shared
by the storage layer's records and the session layer's ``ResolvedSession``, so it sits below both)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def builder(cls: type[T]) -> Callable[..., T]:
    """``cls(**values)`` for a frozen, slotted dataclass whose fields are all given by name: a
    function generated from ``dataclasses.fields(cls)`` (as dataclasses generates ``__init__``)
    that writes each slot through its descriptor, where the generated ``__init__`` goes through
    ``object.__setattr__`` per field (about 40 % of an ``Identity``'s construction). Every field
    is a required keyword: a field the model gains and a call site does not give is a TypeError,
    never an unset slot. A class this cannot stand in for (not a slotted dataclass, a
    ``__post_init__``, a field outside ``__init__``) gets ``cls`` itself."""
    if (
        not dataclasses.is_dataclass(cls)
        or "__slots__" not in cls.__dict__
        or hasattr(cls, "__post_init__")
        or not all(f.init for f in dataclasses.fields(cls))
    ):
        return cls
    names = [f.name for f in dataclasses.fields(cls)]
    namespace: dict[str, Any] = {"_new_": object.__new__, "_cls_": cls}
    namespace.update({f"_set_{name}_": cls.__dict__[name].__set__ for name in names})
    lines = [f"def build(*, {', '.join(names)}):", "    _self_ = _new_(_cls_)"]
    lines += [f"    _set_{name}_(_self_, {name})" for name in names]
    lines += ["    return _self_"]
    exec("\n".join(lines), namespace)  # noqa: S102 - text made of the class's field names only
    built: Callable[..., T] = namespace["build"]
    built.__qualname__ = built.__name__ = f"build_{cls.__name__}"
    return built
