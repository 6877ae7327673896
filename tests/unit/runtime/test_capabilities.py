"""Capability names, Docker's default set, --cap-add/--cap-drop, and how sets are applied."""

from __future__ import annotations

import pytest

from rootless.errors import RuntimeSetupError, UsageError
from rootless.runtime import capabilities as caps
from rootless.runtime.syscalls import Syscalls


class RecordingSyscalls(Syscalls):
    def __init__(self, fail: dict[str, int] | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[object, ...]] = []
        self.fail = fail or {}

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise OSError(self.fail[name], name)

    def capbset_drop(self, cap: int) -> None:
        self._maybe_fail("capbset_drop")
        self.calls.append(("capbset_drop", cap))

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self.calls.append(("prctl", option, arg2))
        return 0

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._maybe_fail("capset")
        self.calls.append(("capset", effective, permitted, inheritable))

    def ambient_raise(self, cap: int) -> None:
        self.calls.append(("ambient_raise", cap))


def test_table_is_complete() -> None:
    assert caps.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(caps.CAPABILITIES.values()) == list(range(41))
    assert caps.CAPABILITY_NAMES[21] == "CAP_SYS_ADMIN"


def test_docker_default_mask() -> None:
    assert caps.mask(caps.DEFAULT_CAPABILITIES) == 0xA80425FB
    assert caps.names_of(0xA80425FB) == sorted(caps.DEFAULT_CAPABILITIES, key=caps.CAPABILITIES.__getitem__)


@pytest.mark.parametrize("name", ["net_admin", "NET_ADMIN", "CAP_NET_ADMIN", " cap_net_admin "])
def test_normalize(name: str) -> None:
    assert caps.normalize(name) == "CAP_NET_ADMIN"


def test_normalize_rejects_unknown() -> None:
    assert caps.normalize("all") == "ALL"
    with pytest.raises(UsageError, match="unknown capability: 'CAP_FOO'"):
        caps.normalize("CAP_FOO")


def test_tweak_like_docker() -> None:
    base = caps.DEFAULT_CAPABILITIES
    result = caps.tweak(base, add=["sys_admin"], drop=["CAP_CHOWN", "net_raw"])
    assert "CAP_SYS_ADMIN" in result and "CAP_CHOWN" not in result and "CAP_NET_RAW" not in result
    assert len(result) == len(base) - 1
    assert caps.tweak(base, add=["ALL"], drop=["sys_admin"]) == [
        c for c in caps.CAPABILITIES if c != "CAP_SYS_ADMIN"]
    assert caps.tweak(base, add=["chown", "kill"], drop=["all"]) == ["CAP_CHOWN", "CAP_KILL"]
    assert caps.tweak(base, drop=["ALL"]) == []
    assert caps.tweak(base) == sorted(base, key=caps.CAPABILITIES.__getitem__)


def test_sets_for_root_and_for_other_users() -> None:
    root = caps.for_user(caps.DEFAULT_CAPABILITIES, 0)
    assert caps.mask(root.bounding) == caps.mask(root.effective) == caps.mask(root.permitted) == 0xA80425FB
    assert root.inheritable == [] and root.ambient == []
    alice = caps.for_user(caps.DEFAULT_CAPABILITIES, 1234)
    assert caps.mask(alice.bounding) == 0xA80425FB
    assert alice.effective == alice.permitted == alice.inheritable == alice.ambient == []


def test_drop_bounding_drops_everything_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "last_cap", lambda: 40)
    sys = RecordingSyscalls()
    caps.drop_bounding(caps.for_user(caps.DEFAULT_CAPABILITIES, 0), sys)
    dropped = [c[1] for c in sys.calls if c[0] == "capbset_drop"]
    assert dropped == [i for i in range(41) if not 0xA80425FB >> i & 1]
    assert not [c for c in sys.calls if c[0] == "prctl"]  # no keepcaps: nothing to keep across setuid


def test_keepcaps_and_ambient_for_a_user_with_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "last_cap", lambda: 40)
    sys = RecordingSyscalls()
    sets = caps.CapabilitySets(bounding=["CAP_NET_BIND_SERVICE"], effective=["CAP_NET_BIND_SERVICE"],
                               permitted=["CAP_NET_BIND_SERVICE"], inheritable=["CAP_NET_BIND_SERVICE"],
                               ambient=["NET_BIND_SERVICE"])
    caps.drop_bounding(sets, sys, uid=1234)
    caps.apply_sets(sets, sys)
    assert ("prctl", caps.PR_SET_KEEPCAPS, 1) in sys.calls
    assert sys.calls[-2:] == [("capset", 1 << 10, 1 << 10, 1 << 10), ("ambient_raise", 10)]


def test_errors_name_the_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "last_cap", lambda: 40)
    with pytest.raises(RuntimeSetupError, match="drop CAP_DAC_READ_SEARCH from the bounding set failed: "
                                                "operation not permitted"):
        caps.drop_bounding(caps.CapabilitySets(bounding=["CAP_CHOWN", "CAP_DAC_OVERRIDE"]),
                           RecordingSyscalls({"capbset_drop": 1}))
    with pytest.raises(RuntimeSetupError, match="capset failed: operation not permitted"):
        caps.apply_sets(caps.CapabilitySets(), RecordingSyscalls({"capset": 1}))


def test_unknown_kernel_capabilities_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "last_cap", lambda: 40)
    caps.drop_bounding(caps.CapabilitySets(), RecordingSyscalls({"capbset_drop": 22}))  # EINVAL: no error
