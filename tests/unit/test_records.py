"""rootless.records behaves as dataclasses for what rl uses, without importing it."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from rootless.records import FrozenInstanceError, asdict, field, fields, record, replace


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)
    secret: str = field(default="", repr=False)
    note: str = field(default="", compare=False)


@record(frozen=True)
class Key:
    name: str
    size: int = 1
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@record
class WithPost:
    a: int
    b: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.b = self.a * 2


@dataclasses.dataclass
class StdPoint:
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)
    secret: str = dataclasses.field(default="", repr=False)
    note: str = dataclasses.field(default="", compare=False)


def test_construction_positional_keyword_and_defaults() -> None:
    assert (Point(1).x, Point(1).y, Point(1).tags) == (1, 0, [])
    p = Point(1, 2, ["a"], note="n")
    assert (p.x, p.y, p.tags, p.note) == (1, 2, ["a"], "n")
    assert Point(y=3, x=4) == Point(4, 3)
    assert Point(1).tags is not Point(1).tags  # a fresh default each time


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing required argument: 'x'"),
        ((1, 2, [], "", "", 6), {}, "takes 5 positional arguments but 6 were given"),
        ((1,), {"x": 2}, "multiple values for argument 'x'"),
        ((1,), {"z": 2}, "unexpected keyword argument 'z'"),
    ],
)
def test_bad_arguments_are_type_errors(args: tuple[object, ...], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)  # type: ignore[arg-type]


def test_repr_and_eq_match_the_standard_dataclass() -> None:
    ours, std = Point(1, 2, ["a"], secret="s", note="n"), StdPoint(1, 2, ["a"], secret="s", note="n")
    assert repr(ours).removeprefix("Point") == repr(std).removeprefix("StdPoint")
    assert Point(1, note="a") == Point(1, note="b")  # compare=False
    assert Point(1) != Point(2)
    assert Point(1) != StdPoint(1)
    assert Point.__hash__ is None  # mutable and comparable: unhashable, like a dataclass


def test_frozen_instances() -> None:
    k = Key("a", extra={"x": "y"})
    with pytest.raises(FrozenInstanceError):
        k.name = "b"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del k.size  # type: ignore[misc]
    assert hash(k) == hash(Key("a"))  # extra is neither compared nor hashed
    assert {k, Key("a")} == {k}
    assert replace(k, size=2) == Key("a", 2)


def test_fields_asdict_copy_and_pickle() -> None:
    p = Point(1, 2, ["a"])
    assert [f.name for f in fields(Point)] == ["x", "y", "tags", "secret", "note"]
    assert [f.name for f in fields(p)] == ["x", "y", "tags", "secret", "note"]
    assert asdict(p) == {"x": 1, "y": 2, "tags": ["a"], "secret": "", "note": ""}
    assert copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(Key("a"))) == Key("a")
    assert copy.copy(Key("a")) == Key("a")


def test_post_init_and_init_false_fields() -> None:
    assert WithPost(3).b == 6
    with pytest.raises(TypeError):
        WithPost(1, 2)  # type: ignore[call-arg]


@record
class Base:
    a: int
    b: str = "b"


@record
class Child(Base):
    c: list[int] = field(default_factory=list)
    nested: Point | None = None


def test_inheritance_and_nested_asdict() -> None:
    c = Child(1, "x", [2], Point(3))
    assert [f.name for f in fields(Child)] == ["a", "b", "c", "nested"]
    assert c == Child(a=1, b="x", c=[2], nested=Point(3))
    assert repr(c).startswith("Child(a=1, b='x', c=[2], nested=Point(x=3,")
    d = asdict(c)
    assert d["nested"] == {"x": 3, "y": 0, "tags": [], "secret": "", "note": ""}
    assert d["c"] is not c.c  # copied, as dataclasses.asdict
    assert Child.b == "b" and not hasattr(Child, "c")  # class attributes as dataclasses leaves them


def test_declaration_mistakes_are_caught() -> None:
    with pytest.raises(ValueError, match="mutable default"):
        record(type("Bad", (), {"__annotations__": {"x": "list[int]"}, "x": []}))
    with pytest.raises(TypeError, match="non-default argument 'y' follows default argument"):
        record(type("Bad2", (), {"__annotations__": {"x": "int", "y": "int"}, "x": 1}))


def test_importing_records_does_not_import_dataclasses() -> None:
    import subprocess
    import sys

    code = ("import sys, rootless.records\n"
            "assert 'dataclasses' not in sys.modules and 'inspect' not in sys.modules, 'imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
