from __future__ import annotations

import pytest

from rootless.engine.users import User, resolve_user
from rootless.errors import UsageError

PASSWD = "root:x:0:0:root:/root:/bin/sh\nalice:x:1234:1234::/home/alice:/bin/sh\nbob:x:1500:100::/home/bob:/bin/sh\n"
GROUP = "root:x:0:\nusers:x:100:alice\nalice:x:1234:\nwheel:x:10:alice,bob\n"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", User(0, 0, (), "/root", "root")),
        ("alice", User(1234, 1234, (10, 100), "/home/alice", "alice")),
        ("1234", User(1234, 1234, (10, 100), "/home/alice", "alice")),
        ("1234:1234", User(1234, 1234, (), "/home/alice", "alice")),
        ("bob:wheel", User(1500, 10, (), "/home/bob", "bob")),
        ("4321", User(4321, 0, (), "/", "")),
        ("4321:55", User(4321, 55, (), "/", "")),
    ],
)
def test_resolve(spec: str, expected: User) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == expected


def test_unknown_names() -> None:
    with pytest.raises(UsageError, match="unable to find user carol"):
        resolve_user("carol", PASSWD, GROUP)
    with pytest.raises(UsageError, match="unable to find group nogroup"):
        resolve_user("alice:nogroup", PASSWD, GROUP)


def test_ids_out_of_range() -> None:
    with pytest.raises(UsageError, match="out of range"):
        resolve_user("99999999999", PASSWD, GROUP)
