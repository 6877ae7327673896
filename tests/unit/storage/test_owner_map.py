"""Owner maps: fuse-overlayfs's uidmapping/gidmapping options, kept per container, and who may show them."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.errors import StorageError
from rootless.runtime import idmap
from rootless.storage import fuse_overlayfs as fo
from rootless.storage import select
from rootless.storage.driver import OwnerMap, get_driver

UID = 1001
NS_SIZE = 65537  # the user's own id and 65536 subordinate ids


def keep_id_owners(uid: int = UID, gid: int = UID, size: int = NS_SIZE) -> OwnerMap:
    """What rl run gives the driver for --userns=keep-id: the nested namespace's map lines."""
    plan = idmap.keep_id_mapping(uid, gid, size)

    def triples(m: idmap.IdMap) -> tuple[tuple[int, int, int], ...]:
        return tuple((line.inner, line.outer, line.count) for line in m.lines)

    return OwnerMap(triples(plan.uid_map), triples(plan.gid_map))


def parse_mapping(value: str) -> list[tuple[int, int, int]]:
    numbers = [int(n) for n in value.split(":")]
    assert len(numbers) % 3 == 0
    return [(numbers[i], numbers[i + 1], numbers[i + 2]) for i in range(0, len(numbers), 3)]


def shown(value: str, disk: int) -> int:
    """The owner fuse-overlayfs shows for a file owned by ``disk`` (its find_mapping, direct)."""
    for host, to, count in parse_mapping(value):
        if host <= disk < host + count:
            return to + disk - host
    return 65534


def stored(value: str, caller: int) -> int:
    """The owner fuse-overlayfs writes for a file created by ``caller`` (its find_mapping, reverse)."""
    for host, to, count in parse_mapping(value):
        if to <= caller < to + count:
            return host + caller - to
    return 65534


def test_keep_id_options() -> None:
    assert fo.owner_options(keep_id_owners()) == [
        "uidmapping=0:1:1001:1001:0:1:1002:1002:64535",
        "gidmapping=0:1:1001:1001:0:1:1002:1002:64535",
    ]
    assert fo.owner_options(None) == []


def test_the_nested_namespace_sees_the_image_owners() -> None:
    plan = idmap.keep_id_mapping(UID, UID, NS_SIZE)
    value = fo.owner_options(keep_id_owners())[0].partition("=")[2]
    for image_id in (0, 1, 999, 1000, UID, 1002, 1234, 65534, NS_SIZE - 1):
        # stored on disk as the image's id; fuse shows it as an id of rl's namespace ...
        seen = shown(value, image_id)
        # ... which the nested namespace shows as the image's id again
        assert plan.uid_map.to_inner(seen) == image_id
        # a file the container makes as that id is stored as the same id
        outer = plan.uid_map.to_outer(image_id)
        assert outer is not None and stored(value, outer) == image_id


def test_root_and_the_user_in_the_view_of_rls_namespace() -> None:
    value = fo.owner_options(keep_id_owners())[0].partition("=")[2]
    assert shown(value, 0) == 1  # the image's root: rl's namespace id 1, the nested namespace's 0
    assert shown(value, UID) == 0  # the user inside is the user outside
    assert stored(value, 0) == UID  # so what the user makes is stored as their id inside


def test_owner_map_checks_its_lines() -> None:
    with pytest.raises(ValueError):
        OwnerMap((), ((0, 0, 1),))
    with pytest.raises(ValueError):
        OwnerMap(((0, 0, 0),), ((0, 0, 1),))
    with pytest.raises(ValueError):
        OwnerMap(((0, -1, 1),), ((0, 0, 1),))


def _layers(tmp_path: Path) -> list[Path]:
    layers = [tmp_path / "layers" / str(i) for i in range(2)]
    for layer in layers:
        layer.mkdir(parents=True)
    return layers


def test_the_map_is_kept_with_the_container(tmp_path: Path) -> None:
    driver = fo.FuseOverlayfsDriver()
    c = tmp_path / "c"
    c.mkdir()
    layers = _layers(tmp_path)
    plain = driver.options(c, layers)
    assert "mapping" not in plain
    assert driver.owner_map(c) is None
    owners = keep_id_owners()
    driver.set_owner_map(c, owners)
    assert driver.owner_map(c) == owners
    options = driver.options(c, layers)
    mapping = "0:1:1001:1001:0:1:1002:1002:64535"
    assert options == f"{plain},uidmapping={mapping},gidmapping={mapping}"
    assert f"upperdir={c.resolve()}/upper," in options  # how remove() finds a daemon still using c


def test_a_damaged_map_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / fo.OWNERS_FILE).write_text('{"uids": [[0, 1]], "gids": []}')
    with pytest.raises(StorageError, match="cannot read the owner map") as info:
        fo.read_owner_map(tmp_path)
    assert info.value.hint and "remove the container" in info.value.hint


@pytest.mark.parametrize("name", ["overlay", "vfs"])
def test_other_drivers_cannot_show_other_owners(tmp_path: Path, name: str) -> None:
    driver = get_driver(name)
    assert not driver.maps_owners
    assert driver.owner_map(tmp_path) is None
    with pytest.raises(StorageError, match=f"the {name} storage driver cannot show files with other owners"):
        driver.set_owner_map(tmp_path, keep_id_owners())
    assert get_driver("fuse-overlayfs").maps_owners


@pytest.mark.parametrize(
    ("chosen", "fuse", "expected"),
    [
        ("overlay", None, ("fuse-overlayfs", None)),
        ("overlay", "fuse-overlayfs is not installed", ("overlay", "fuse-overlayfs is not installed")),
        ("fuse-overlayfs", "never asked", ("fuse-overlayfs", None)),
        ("vfs", None, ("vfs", "the vfs storage driver cannot show files with other owners than on disk")),
    ],
)
def test_which_driver_shows_the_image_owners(chosen: str, fuse: str | None, expected: tuple[str, str | None]) -> None:
    assert select.owner_mapping_driver(chosen, fuse=lambda: fuse) == expected


def test_owner_map_translates_both_ways() -> None:
    from rootless.storage.driver import OVERFLOW_ID, OwnerMap

    # rltest's keep-id lines (inner, outer, count): container 0..1000 -> rl 1..1001, 1001 -> 0, the rest as is
    owners = OwnerMap(((0, 1, 1001), (1001, 0, 1), (1002, 1002, 64534)), ((0, 1, 1001), (1001, 0, 1)))
    assert owners.to_disk(1, 1) == (0, 0)  # rl's 1 is the image's root
    assert owners.to_disk(0, 0) == (1001, 1001)  # rl's root is the user inside
    assert owners.to_shown(0, 0) == (1, 1)
    assert owners.to_shown(1234, 1234) == (1234, OVERFLOW_ID)  # no gid line covers 1234
    assert owners.to_disk(70000, 5000) == (OVERFLOW_ID, OVERFLOW_ID)
    for uid in (0, 5, 1000, 1001, 1002, 60000):
        assert owners.to_disk(*owners.to_shown(uid, 0))[0] == uid
