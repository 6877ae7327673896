"""Mapping plans for uid_map/gid_map, /proc map parsing, and newuidmap/newgidmap error translation."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.errors import HostError, RuntimeSetupError
from rootless.runtime import idmap
from rootless.runtime.idmap import HelperStatus, IdMap, IdRange, MapLine

OK = HelperStatus("newuidmap", "/usr/bin/newuidmap", True, None)
NOT_SETUID = HelperStatus(
    "newuidmap", "/usr/bin/newuidmap", False, "/usr/bin/newuidmap is neither setuid root nor has file capabilities"
)


def lines(m: IdMap) -> list[tuple[int, int, int]]:
    return [(x.inner, x.outer, x.count) for x in m.lines]


def test_parse_subid_by_name_and_uid() -> None:
    text = "# c\nalice:100000:65536\n1000:200000:10\nbob:300000:5\nalice:bad:1\nalice:1:0\n"
    assert idmap.parse_subid(text, "alice", 1000) == [IdRange(100000, 65536), IdRange(200000, 10)]


def test_full_mapping_one_range() -> None:
    plan = idmap.full_mapping(1000, 1001, [IdRange(100000, 65536)], [IdRange(200000, 65536)])
    assert not plan.single and plan.setgroups == "allow"
    assert lines(plan.uid_map) == [(0, 1000, 1), (1, 100000, 65536)]
    assert lines(plan.gid_map) == [(0, 1001, 1), (1, 200000, 65536)]
    assert plan.uid_map.text() == "0 1000 1\n1 100000 65536\n"
    assert plan.uid_map.size == 65537


def test_full_mapping_stacks_several_ranges_contiguously() -> None:
    plan = idmap.full_mapping(1000, 1000, [IdRange(300000, 10), IdRange(100000, 65536)], [IdRange(5, 3)])
    assert lines(plan.uid_map) == [(0, 1000, 1), (1, 100000, 65536), (65537, 300000, 10)]
    assert lines(plan.gid_map) == [(0, 1000, 1), (1, 5, 3)]
    assert plan.uid_map.helper_args() == ["0", "1000", "1", "1", "100000", "65536", "65537", "300000", "10"]


def test_usable_ranges_drop_overlaps_and_own_id() -> None:
    got = idmap.usable_ranges([IdRange(100, 10), IdRange(100, 10), IdRange(105, 10), IdRange(990, 20)], 1000)
    assert got == [IdRange(100, 10), IdRange(110, 5), IdRange(990, 10), IdRange(1001, 9)]


def test_usable_ranges_capped_to_kernel_line_limit() -> None:
    many = [IdRange(100000 + 10 * i, 5) for i in range(400)]
    assert len(idmap.usable_ranges(many, 1000)) == idmap.MAX_MAP_LINES - 1


def test_single_mapping() -> None:
    plan = idmap.single_mapping(1000, 1001)
    assert plan.single and plan.setgroups == "deny"
    assert plan.uid_map.text() == "0 1000 1\n"
    assert plan.gid_map.text() == "0 1001 1\n"


def test_keep_id_mapping_typical_user() -> None:
    plan = idmap.keep_id_mapping(1000, 1000, 65537)
    assert lines(plan.uid_map) == [(0, 1, 1000), (1000, 0, 1), (1001, 1001, 64536)]
    m = plan.uid_map
    assert m.to_outer(1000) == 0 and m.to_outer(0) == 1 and m.to_outer(999) == 1000
    assert m.to_outer(1001) == 1001 and m.to_outer(65536) == 65536 and m.to_outer(65537) is None
    assert m.size == 65537
    # every outer id used exactly once
    outers = sorted(o for x in m.lines for o in range(x.outer, x.outer + x.count))
    assert outers == list(range(65537))


def test_keep_id_mapping_root_and_different_gid() -> None:
    plan = idmap.keep_id_mapping(0, 50, 100, outer_gid_size=60)
    assert lines(plan.uid_map) == [(0, 0, 1), (1, 1, 99)]
    assert lines(plan.gid_map) == [(0, 1, 50), (50, 0, 1), (51, 51, 9)]


def test_keep_id_mapping_uid_beyond_namespace_size() -> None:
    # single-ID pause namespace: only the user exists
    assert lines(idmap.keep_id_mapping(1000, 1000, 1).uid_map) == [(1000, 0, 1)]
    # small namespace: everything fits below the uid
    assert lines(idmap.keep_id_mapping(1000, 1000, 11).uid_map) == [(0, 1, 10), (1000, 0, 1)]


def test_keep_id_mapping_size_limit() -> None:
    plan = idmap.keep_id_mapping(1000, 1000, 65537, size=2000)
    assert lines(plan.uid_map) == [(0, 1, 1000), (1000, 0, 1), (1001, 1001, 999)]
    assert plan.uid_map.size == 2000


def test_keep_id_mapping_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        idmap.keep_id_mapping(-1, 0, 10)


def test_nomap_mapping() -> None:
    plan = idmap.nomap_mapping(65537)
    assert lines(plan.uid_map) == [(0, 1, 65536)]
    assert plan.uid_map.to_outer(0) == 1
    with pytest.raises(ValueError, match="subordinate"):
        idmap.nomap_mapping(1)


def test_parse_map_as_proc_shows_it() -> None:
    text = "         0       1000          1\n         1     100000      65536\n"
    m = idmap.parse_map(text)
    assert m == IdMap((MapLine(0, 1000, 1), MapLine(1, 100000, 65536)))
    assert m.to_inner(100000) == 1 and m.to_inner(1000) == 0 and m.to_inner(99999) is None
    assert IdMap.from_lists(m.as_lists()) == m
    with pytest.raises(ValueError):
        idmap.parse_map("0 1\n")


def test_write_maps_single_writes_setgroups_first(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    idmap.write_maps(42, idmap.single_mapping(1000, 1001), proc=tmp_path)
    assert (tmp_path / "42" / "setgroups").read_text() == "deny"
    assert (tmp_path / "42" / "uid_map").read_text() == "0 1000 1\n"
    assert (tmp_path / "42" / "gid_map").read_text() == "0 1001 1\n"


def test_write_maps_nested_leaves_setgroups(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    idmap.write_maps(7, idmap.keep_id_mapping(5, 5, 10), proc=tmp_path)
    assert not (tmp_path / "7" / "setgroups").exists()
    assert (tmp_path / "7" / "uid_map").read_text() == "0 1 5\n5 0 1\n6 6 4\n"


def test_write_maps_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="uid_map refused"):
        idmap.write_maps(9, idmap.keep_id_mapping(0, 0, 2), proc=tmp_path)


# ---------------------------------------------------------------- newuidmap / newgidmap


def run_helper(code: int, stderr: str, status: HelperStatus = OK, tool: str = "newuidmap") -> list[list[str]]:
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return code, stderr

    m = idmap.full_mapping(1000, 1000, [IdRange(100000, 65536)], [IdRange(100000, 65536)]).uid_map
    idmap.run_map_helper(tool, 123, m, "alice", status=status, runner=runner)
    return calls


def test_helper_argv() -> None:
    calls = run_helper(0, "")
    assert calls == [["/usr/bin/newuidmap", "123", "0", "1000", "1", "1", "100000", "65536"]]


def test_helper_missing() -> None:
    with pytest.raises(HostError) as e:
        run_helper(0, "", HelperStatus("newuidmap", None, False, "newuidmap is not installed"))
    assert e.value.line() == (
        "cannot map the subordinate uids of pid 123: newuidmap is not installed: "
        "ask the admin to install the uidmap package (apt-get install uidmap)"
    )


def test_helper_not_setuid_is_caught_before_running() -> None:
    with pytest.raises(HostError) as e:
        run_helper(0, "", NOT_SETUID)
    assert "chmod u+s /usr/bin/newuidmap" in (e.value.hint or "")
    assert e.value.message.startswith("newuidmap cannot map ids for pid 123: ")


def test_helper_write_refused_without_setuid() -> None:
    err = idmap.translate_helper_failure(
        "newuidmap", 123, "alice", 1, "newuidmap: write to uid_map failed: Operation not permitted\n", NOT_SETUID
    )
    assert isinstance(err, HostError)
    assert err.line() == (
        "newuidmap failed for pid 123: write to uid_map refused: /usr/bin/newuidmap must be setuid root: "
        "ask the admin to run 'chmod u+s /usr/bin/newuidmap' or reinstall the uidmap package"
    )


def test_helper_write_refused_with_setuid() -> None:
    with pytest.raises(HostError) as e:
        run_helper(1, "newgidmap: write to gid_map failed: Operation not permitted\n", tool="newgidmap")
    assert e.value.message == "newgidmap failed for pid 123: write to gid_map refused"
    assert "/etc/subgid" in (e.value.hint or "")


def test_helper_range_not_allowed() -> None:
    with pytest.raises(HostError) as e:
        run_helper(1, "newuidmap: uid range [1-65537) -> [100000-165536) not allowed\n")
    assert e.value.message == (
        "newuidmap failed for pid 123: uid range [1-65537) -> [100000-165536) not allowed by /etc/subuid"
    )
    assert "helpers/grant-subids.sh alice" in (e.value.hint or "")
    assert "rl system migrate" in (e.value.hint or "")


def test_helper_target_gone() -> None:
    with pytest.raises(RuntimeSetupError, match="exited before its uids were mapped"):
        run_helper(1, "newuidmap: Could not open proc directory for target 123\n")


def test_helper_other_failure_keeps_its_text() -> None:
    with pytest.raises(HostError) as e:
        run_helper(1, "newuidmap: something odd\n")
    assert e.value.message == "newuidmap failed for pid 123: exit status 1: something odd"


def test_helper_cannot_execute() -> None:
    def runner(argv: list[str]) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(HostError, match="cannot run /usr/bin/newuidmap for pid 5: Permission denied"):
        idmap.run_map_helper("newuidmap", 5, idmap.single_mapping(1, 1).uid_map, "a", status=OK, runner=runner)
