"""Data classes that are cheap to define: ``@record`` and ``@record(frozen=True)``.

Python 3.11's ``@dataclass`` compiles source text for every method it generates (``__init__``,
``__repr__``, ``__eq__``, and for frozen classes ``__setattr__``, ``__delattr__`` and ``__hash__``):
about 0.3 ms a class, and ``rl run`` defines some seventy of them before its container starts,
a fifth of its whole run time. ``record`` lets ``dataclasses`` collect the fields (so ``fields``,
``asdict``, ``replace`` and ``is_dataclass`` work unchanged) but generates nothing: the methods are
shared functions that read the class's field table. They behave as the generated ones for what rl
uses (positional and keyword arguments, defaults and default factories, ``repr=False``,
``compare=False``, ``hash=False``, ``__post_init__``, frozen instances); constructing an instance
costs a few microseconds more, which no code path here notices.

Type checkers see the standard decorator, so they check these classes exactly as data classes.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

_MISSING = dataclasses.MISSING
_TABLE = "__record_table__"


class _Table:
    """What the shared methods need, computed once per class."""

    __slots__ = ("compare", "hash", "init", "name", "positional", "post_init", "repr")

    def __init__(self, cls: type) -> None:
        fields = dataclasses.fields(cls)
        self.name = cls.__qualname__
        self.init = tuple((f.name, f.default, f.default_factory, f.init) for f in fields)
        self.repr = tuple(f.name for f in fields if f.repr)
        self.compare = tuple(f.name for f in fields if f.compare)
        self.hash = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
        self.post_init = hasattr(cls, "__post_init__")
        self.positional = sum(1 for f in fields if f.init)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    table: _Table = getattr(type(self), _TABLE)
    if len(args) > table.positional:
        raise TypeError(f"{table.name}() takes {table.positional} positional arguments but {len(args)} were given")
    setter = object.__setattr__
    position = 0
    for name, default, factory, in_init in table.init:
        if not in_init:
            value = default if factory is _MISSING else factory()
        elif position < len(args):
            if name in kwargs:
                raise TypeError(f"{table.name}() got multiple values for argument {name!r}")
            value = args[position]
            position += 1
        elif name in kwargs:
            value = kwargs[name]
        elif default is not _MISSING:
            value = default
        elif factory is not _MISSING:
            value = factory()
        else:
            raise TypeError(f"{table.name}() missing required argument: {name!r}")
        setter(self, name, value)
    if kwargs:
        known = {name for name, _, _, in_init in table.init if in_init}
        unknown = [k for k in kwargs if k not in known]
        if unknown:
            raise TypeError(f"{table.name}() got an unexpected keyword argument {unknown[0]!r}")
    if table.post_init:
        self.__post_init__()


def _repr(self: Any) -> str:
    table: _Table = getattr(type(self), _TABLE)
    inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in table.repr)
    return f"{table.name}({inner})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = getattr(type(self), _TABLE).compare
    return all(getattr(self, n) == getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    names = getattr(type(self), _TABLE).hash
    return hash(tuple(getattr(self, n) for n in names))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _build(cls: type, frozen: bool) -> type:
    if not cls.__doc__:
        cls.__doc__ = cls.__name__  # dataclasses would build one from inspect.signature(), slowly
    dataclasses.dataclass(cls, init=False, repr=False, eq=False)
    setattr(cls, _TABLE, _Table(cls))
    type.__setattr__(cls, "__init__", _init)
    type.__setattr__(cls, "__repr__", _repr)
    type.__setattr__(cls, "__eq__", _eq)
    if frozen:
        type.__setattr__(cls, "__setattr__", _frozen_setattr)
        type.__setattr__(cls, "__delattr__", _frozen_delattr)
        type.__setattr__(cls, "__hash__", _hash)
    else:
        type.__setattr__(cls, "__hash__", None)  # mutable and comparable: unhashable, as a dataclass
    return cls


if TYPE_CHECKING:
    from dataclasses import dataclass as record
else:

    def record(cls: type | None = None, /, *, frozen: bool = False) -> Any:
        if cls is None:
            return lambda c: _build(c, frozen)
        return _build(cls, frozen)
