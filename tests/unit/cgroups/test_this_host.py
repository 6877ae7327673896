"""On the real host (run as the unprivileged test user): limits the host can't honour give one line
naming the fix; no limits need no cgroup of rl's own and print nothing."""

from __future__ import annotations

import logging

import pytest

from rootless.cgroups import Limits, describe, detect, prepare
from rootless.errors import HostError


def test_limits_without_delegation_fail_in_one_line(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    info = detect()
    if info.usable:
        pytest.skip(f"this host delegates {info.delegated}: covered by the cgroup v2 VM lane")
    with pytest.raises(HostError) as caught:
        prepare("a" * 64, Limits.parse(memory="32m", cpus="0.5", pids_limit=10))
    line = caught.value.line()
    assert "\n" not in line
    assert line.startswith("cannot apply --memory, --cpus, --pids-limit: ")
    assert "helpers/enable-cgroup-delegation.sh" in line
    if info.version == "hybrid":
        assert "hybrid cgroup layout" in line
        assert "systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" in line
    assert capsys.readouterr() == ("", "")


def test_no_limits_need_no_cgroup_and_print_nothing(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    info = detect()
    if info.usable:
        pytest.skip(f"this host delegates {info.delegated}: covered by the cgroup v2 VM lane")
    with caplog.at_level(logging.INFO, logger="rl"):
        assert prepare("a" * 64, Limits()) is None
    assert caplog.records == []
    assert capsys.readouterr() == ("", "")


def test_describe_for_rl_info() -> None:
    facts = describe()
    assert facts["version"] in ("v2", "hybrid", "v1", "none")
    assert set(facts) == {"version", "mount", "ownCgroup", "delegated", "controllers", "problem"}
    assert (facts["delegated"] is None) == (facts["problem"] is not None)
