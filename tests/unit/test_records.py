"""rootless.records.record behaves as dataclasses.dataclass for what rl uses."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import field

import pytest

from rootless.records import record


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
    tags: list[str] = field(default_factory=list)
    secret: str = field(default="", repr=False)
    note: str = field(default="", compare=False)


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
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.name = "b"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del k.size  # type: ignore[misc]
    assert hash(k) == hash(Key("a"))  # extra is neither compared nor hashed
    assert {k, Key("a")} == {k}
    assert dataclasses.replace(k, size=2) == Key("a", 2)


def test_dataclasses_functions_copy_and_pickle() -> None:
    p = Point(1, 2, ["a"])
    assert dataclasses.is_dataclass(p)
    assert [f.name for f in dataclasses.fields(Point)] == ["x", "y", "tags", "secret", "note"]
    assert dataclasses.asdict(p) == {"x": 1, "y": 2, "tags": ["a"], "secret": "", "note": ""}
    assert copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(Key("a"))) == Key("a")
    assert copy.copy(Key("a")) == Key("a")


def test_post_init_and_init_false_fields() -> None:
    assert WithPost(3).b == 6
    with pytest.raises(TypeError):
        WithPost(1, 2)  # type: ignore[call-arg]
