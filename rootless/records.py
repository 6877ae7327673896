"""Data classes that are cheap to define: ``@record``, ``@record(frozen=True)``, and the functions
rl uses with them (``field``, ``fields``, ``asdict``, ``replace``).

Python 3.11's ``dataclasses`` costs every rl command twice before it does anything: importing the
module imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``), a few milliseconds; and
``@dataclass`` compiles source text for each method it generates, about 0.3 ms a class, with some
seventy classes on `rl run`'s path. A record collects its fields from the class annotations once and
shares plain functions for ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and the frozen
guards, which read the class's field table. They behave as the generated ones for what rl uses:
positional and keyword arguments, defaults and default factories, ``init=False``, ``repr=False``,
``compare=False``, ``hash=False``, ``__post_init__``, inheritance from another record, frozen
instances; ``asdict`` recurses into records, lists, tuples and dicts and copies the rest, as
``dataclasses.asdict`` does. Constructing an instance costs a few microseconds more, which no code
path here notices.

Type checkers see ``dataclasses`` itself (the names below are its names when TYPE_CHECKING), so they
check these classes exactly as data classes.
"""

from __future__ import annotations

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as typing's
if TYPE_CHECKING:
    from dataclasses import MISSING, Field, FrozenInstanceError, asdict, field, fields, replace
    from dataclasses import dataclass as record
else:
    _FIELDS = "__record_fields__"
    _TABLE = "__record_table__"

    class _Missing:
        def __repr__(self) -> str:
            return "MISSING"

    MISSING = _Missing()

    class FrozenInstanceError(AttributeError):
        """Assigning to or deleting a field of a frozen record."""

    class Field:
        __slots__ = ("compare", "default", "default_factory", "hash", "init", "metadata", "name", "repr")

        def __init__(self, default, default_factory, init, repr, compare, hash, metadata):
            if default is not MISSING and default_factory is not MISSING:
                raise ValueError("cannot specify both default and default_factory")
            self.name = ""
            self.default = default
            self.default_factory = default_factory
            self.init = init
            self.repr = repr
            self.compare = compare
            self.hash = hash
            self.metadata = metadata or {}

        def __repr__(self):
            return f"Field(name={self.name!r}, default={self.default!r}, default_factory={self.default_factory!r})"

    def field(*, default=MISSING, default_factory=MISSING, init=True, repr=True, compare=True,
              hash=None, metadata=None):
        return Field(default, default_factory, init, repr, compare, hash, metadata)

    def fields(class_or_instance):
        cls = class_or_instance if isinstance(class_or_instance, type) else type(class_or_instance)
        try:
            return getattr(cls, _FIELDS)
        except AttributeError:
            raise TypeError(f"{cls.__qualname__} is not a record") from None

    def asdict(obj, *, dict_factory=dict):
        return _asdict(obj, dict_factory)

    def _asdict(obj, dict_factory):
        if hasattr(type(obj), _FIELDS):
            return dict_factory([(f.name, _asdict(getattr(obj, f.name), dict_factory)) for f in fields(obj)])
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
            return type(obj)(*[_asdict(v, dict_factory) for v in obj])
        if isinstance(obj, (list, tuple)):
            return type(obj)(_asdict(v, dict_factory) for v in obj)
        if isinstance(obj, dict):
            return type(obj)((_asdict(k, dict_factory), _asdict(v, dict_factory)) for k, v in obj.items())
        if isinstance(obj, (str, int, float, bool, type(None), bytes)):
            return obj
        import copy

        return copy.deepcopy(obj)

    def replace(obj, /, **changes):
        for f in fields(obj):
            if not f.init:
                if f.name in changes:
                    raise ValueError(f"field {f.name} is declared with init=False, it cannot be specified with "
                                     "replace()")
                continue
            if f.name not in changes:
                changes[f.name] = getattr(obj, f.name)
        return type(obj)(**changes)

    class _Table:
        """What the shared methods need, computed once per class."""

        __slots__ = ("compare", "hash", "init", "name", "positional", "post_init", "repr")

        def __init__(self, cls, all_fields):
            self.name = cls.__qualname__
            self.init = tuple((f.name, f.default, f.default_factory, f.init) for f in all_fields)
            self.repr = tuple(f.name for f in all_fields if f.repr)
            self.compare = tuple(f.name for f in all_fields if f.compare)
            self.hash = tuple(f.name for f in all_fields if (f.compare if f.hash is None else f.hash))
            self.post_init = hasattr(cls, "__post_init__")
            self.positional = sum(1 for f in all_fields if f.init)

    def _is_classvar(annotation):
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        return text.startswith(("ClassVar", "typing.ClassVar"))

    def _collect(cls):
        """The fields of ``cls``: its bases' (records only), then its own annotations in order."""
        found = {}
        for base in reversed(cls.__mro__[1:]):
            for f in getattr(base, _FIELDS, ()):
                found[f.name] = f
        own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 - inspect is what this module avoids
        for name, annotation in own.items():
            if _is_classvar(annotation):
                continue
            value = cls.__dict__.get(name, MISSING)
            f = value if isinstance(value, Field) else field(default=value)
            f.name = name
            if isinstance(f.default, (list, dict, set)):
                raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: "
                                 "use default_factory")
            if isinstance(value, Field):  # as dataclasses: the class attribute becomes the default, or goes
                if f.default is MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, f.default)
            found[name] = f
        seen_default = False
        for f in found.values():
            if not f.init:
                continue
            if f.default is MISSING and f.default_factory is MISSING:
                if seen_default:
                    raise TypeError(f"non-default argument {f.name!r} follows default argument")
            else:
                seen_default = True
        return tuple(found.values())

    def _init(self, *args, **kwargs):
        table = getattr(type(self), _TABLE)
        if len(args) > table.positional:
            raise TypeError(f"{table.name}() takes {table.positional} positional arguments but {len(args)} were given")
        setter = object.__setattr__
        position = 0
        for name, default, factory, in_init in table.init:
            if not in_init:
                if default is MISSING and factory is MISSING:
                    continue
                value = default if factory is MISSING else factory()
            elif position < len(args):
                if name in kwargs:
                    raise TypeError(f"{table.name}() got multiple values for argument {name!r}")
                value = args[position]
                position += 1
            elif name in kwargs:
                value = kwargs[name]
            elif default is not MISSING:
                value = default
            elif factory is not MISSING:
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

    def _repr(self):
        table = getattr(type(self), _TABLE)
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in table.repr)
        return f"{table.name}({inner})"

    def _eq(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in getattr(type(self), _TABLE).compare)

    def _hash(self):
        return hash(tuple(getattr(self, n) for n in getattr(type(self), _TABLE).hash))

    def _frozen_setattr(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def _frozen_delattr(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def _build(cls, frozen):
        all_fields = _collect(cls)
        setattr(cls, _FIELDS, all_fields)
        setattr(cls, _TABLE, _Table(cls, all_fields))
        cls.__match_args__ = tuple(f.name for f in all_fields if f.init)
        cls.__init__ = _init
        cls.__repr__ = _repr
        cls.__eq__ = _eq
        if frozen:
            cls.__setattr__ = _frozen_setattr
            cls.__delattr__ = _frozen_delattr
            cls.__hash__ = _hash
        else:
            cls.__hash__ = None  # mutable and comparable: unhashable, as a data class
        return cls

    def record(cls=None, /, *, frozen=False):
        if cls is None:
            return lambda c: _build(c, frozen)
        return _build(cls, frozen)


__all__ = ["MISSING", "Field", "FrozenInstanceError", "asdict", "field", "fields", "record", "replace"]
