"""The compatibility ladder, phases that root sets up (ci/test-host.sh runs pytest once per phase,
with RL_SCENARIO naming it; see tests/scenarios/conftest.py and ci/condition.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scenarios.conftest import requires_command

UID = os.getuid()


def _user() -> str:
    import pwd

    return pwd.getpwuid(UID).pw_name


# ---------------------------------------------------------------- no /etc/subuid entry (LDAP/SSSD users)

nosub = pytest.mark.scenario("nosub")


@nosub
def test_nosub_check_names_the_fallback_and_the_fix(check) -> None:  # type: ignore[no-untyped-def]
    user = _user()
    result, found = check()
    c = found["subids"]
    assert c["status"] == "warn"
    assert c["detail"] == (
        f"no entry for {user} in /etc/subuid and /etc/subgid (LDAP/SSSD users often have none): rl uses a"
        " single-ID mapping; images still unpack, files of other users become root's"
    )
    assert c["fix"] == (
        f"ask the admin to run 'helpers/grant-subids.sh {user}' (it adds ranges to /etc/subuid and /etc/subgid),"
        " then run 'rl system migrate'"
    )
    assert found["userns.start"]["status"] == "warn"
    assert (
        f"single-ID mapping (no subordinate ids for {user} in /etc/subuid and /etc/subgid)"
        in (found["userns.start"]["detail"])
    )
    # said once: by the command that started the namespace, not by the next one
    assert result.err.count("Warning: no subordinate ids for") == 1
    again, _ = check()
    assert "Warning:" not in again.err


NAMESPACE_UNPACK = r"""
import io, json, os, sys, tarfile
from pathlib import Path
from rootless.runtime import pause
from rootless.image.unpack import unpack

ns = pause.enter(Path(sys.argv[1]))
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as tar:
    for name, uid in (("etc/", 0), ("etc/owned-by-root", 0), ("home/", 1000), ("home/user-file", 1000),
                      ("var/nobody", 65534)):
        info = tarfile.TarInfo(name.rstrip("/"))
        info.uid = info.gid = uid
        if name.endswith("/"):
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        else:
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
buf.seek(0)
dest = Path(sys.argv[2])
dest.mkdir()
stats = unpack(buf, dest)
owners = {p.relative_to(dest).as_posix(): p.lstat().st_uid for p in dest.rglob("*")}
print(json.dumps({"single": ns.single_id, "flattened": stats.flattened, "owners": owners}))
"""


@nosub
def test_nosub_image_files_of_other_ids_still_unpack(rl, scenario_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rl("info")  # nothing started yet; the script below starts the namespace itself
    runroot = Path(scenario_env["XDG_RUNTIME_DIR"]) / "rl"
    proc = subprocess.run(
        [sys.executable, "-c", NAMESPACE_UNPACK, str(runroot), str(tmp_path / "layer")],
        env=scenario_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["single"] is True
    assert data["flattened"] is True  # ownership flattened, as podman's ignore_chown_errors
    assert set(data["owners"].values()) == {0}
    assert (tmp_path / "layer" / "home" / "user-file").read_text() == "x\n"
    assert (tmp_path / "layer" / "home" / "user-file").stat().st_uid == UID
    assert "no subordinate ids for" in proc.stderr  # the warning, once (no log prefix in this script)


@nosub
def test_nosub_rl_run_works_with_single_id(rl) -> None:  # type: ignore[no-untyped-def]
    requires_command("run")
    registry = os.environ.get("RL_TEST_REGISTRY")
    if not registry:
        pytest.skip("RL_TEST_REGISTRY is not set")
    result = rl("run", "--rm", f"{registry}/rltest/busybox:latest", "id", "-u")
    assert result.out.strip() == "0"
    assert result.err.count("Warning: no subordinate ids for") == 1


# ---------------------------------------------------------------- newuidmap / newgidmap


@pytest.mark.scenario("no-newuidmap")
def test_newuidmap_missing_fails_with_the_package_to_install(check, rl) -> None:  # type: ignore[no-untyped-def]
    user = _user()
    _, found = check(rc=1)
    c = found["newuidmap"]
    assert c["status"] == "fail"
    assert c["detail"] == f"newuidmap is not installed: rl cannot map {user}'s subordinate IDs"
    assert c["fix"] == (
        "ask the admin to install the uidmap package (apt-get install uidmap, or sudo helpers/install-packages.sh);"
        " or set RL_USERNS_SINGLE_ID=1 to run with a single-ID mapping meanwhile"
    )
    start = found["userns.start"]
    assert start["status"] == "fail"
    assert start["detail"].startswith("cannot map the subordinate uids of pid ")
    assert start["detail"].endswith(": newuidmap is not installed")
    assert start["fix"] == "ask the admin to install the uidmap package (apt-get install uidmap)"


@pytest.mark.scenario("no-newuidmap")
def test_newuidmap_missing_single_id_override_works(check) -> None:  # type: ignore[no-untyped-def]
    _result, found = check(env={"RL_USERNS_SINGLE_ID": "1"}, rc=1)  # the helper checks still fail
    assert found["userns.start"]["status"] == "warn"
    assert "single-ID mapping forced by RL_USERNS_SINGLE_ID=1" in found["userns.start"]["detail"]


@pytest.mark.scenario("newuidmap-not-setuid")
def test_newuidmap_without_setuid_names_chmod(check) -> None:  # type: ignore[no-untyped-def]
    _, found = check(rc=1)
    for tool in ("newuidmap", "newgidmap"):
        c = found[tool]
        assert c["status"] == "fail"
        assert c["detail"].endswith(
            f"{tool} is neither setuid root nor has file capabilities: rl cannot map {_user()}'s subordinate IDs"
        )
        assert c["fix"].startswith(
            f"/usr/bin/{tool} must be setuid root: ask the admin to run 'chmod u+s"
            f" /usr/bin/{tool}' or reinstall the uidmap package"
        )
    start = found["userns.start"]
    assert start["status"] == "fail"
    assert "newuidmap cannot map ids for pid" in start["detail"]


# ---------------------------------------------------------------- user namespaces disabled


@pytest.mark.scenario("userns-limit")
def test_user_namespaces_disabled_names_the_sysctl(check) -> None:  # type: ignore[no-untyped-def]
    _, found = check(rc=1)
    c = found["userns.sysctl"]
    assert c["status"] == "fail"
    assert c["detail"] == "user namespaces are disabled: user.max_user_namespaces is 0"
    assert c["fix"].startswith("ask the admin to run 'sysctl -w user.max_user_namespaces=15000'")
    assert "/etc/sysctl.d/" in c["fix"]
    create = found["userns.create"]
    assert create["detail"] == (
        "cannot create a user namespace: unshare(CLONE_NEWUSER) failed with ENOSPC: user namespaces are disabled:"
        " user.max_user_namespaces is 0"
    )
    assert found["userns.start"]["status"] == "skip"


@pytest.mark.scenario("userns-limit")
def test_user_namespaces_disabled_rl_stops_with_one_line(rl) -> None:  # type: ignore[no-untyped-def]
    requires_command("run")
    registry = os.environ.get("RL_TEST_REGISTRY", "127.0.0.1:1")
    result = rl("run", "--rm", f"{registry}/rltest/busybox:latest", "true", rc=125)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "Error: cannot create a user namespace: unshare(CLONE_NEWUSER) failed with ENOSPC: user namespaces are"
        " disabled: user.max_user_namespaces is 0: ask the admin to run 'sysctl -w user.max_user_namespaces=15000'"
    )
