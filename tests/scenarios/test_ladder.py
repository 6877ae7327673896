"""The compatibility ladder, main phase: conditions the test user can make, or that root prepared
before pytest (RL_TEST_*_FS). Each test asserts the fallback rl took or its exact message."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.scenarios.conftest import prepared_dir, requires_command

UID = os.getuid()


# ---------------------------------------------------------------- XDG_RUNTIME_DIR


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "XDG_RUNTIME_DIR is not set"),
        ("/nonexistent/run/user", "XDG_RUNTIME_DIR=/nonexistent/run/user does not exist"),
        ("/", f"XDG_RUNTIME_DIR=/ is owned by uid 0, not {UID}"),
    ],
    ids=["unset", "missing", "other-owner"],
)
def test_xdg_runtime_dir_falls_back_to_private_tmp(check, value, problem) -> None:  # type: ignore[no-untyped-def]
    options = {"unset": ["XDG_RUNTIME_DIR"]} if value is None else {"env": {"XDG_RUNTIME_DIR": value}}
    _, found = check(no_start=True, **options)
    c = found["runtime.dir"]
    assert c["status"] == "warn"
    assert c["detail"] == f"{problem}: rl uses {Path(os.environ.get('TMPDIR', '/tmp')) / f'rl-run-{UID}'}"
    assert "loginctl enable-linger" in c["fix"] and "XDG_RUNTIME_DIR=$TMPDIR" in c["fix"]


def test_xdg_runtime_dir_unset_rl_info_says_which_dir(rl) -> None:  # type: ignore[no-untyped-def]
    out = rl("info", "--format", "json", unset=["XDG_RUNTIME_DIR"]).out
    assert f"rl-run-{UID}" in out and "XDG_RUNTIME_DIR is not set: using a private dir under the temp dir" in out


def test_runroot_owned_by_someone_else_fails(check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, found = check("--runroot", "/", no_start=True)
    c = found["runtime.dir"]
    assert c["status"] == "fail"
    assert c["detail"] == f"runtime directory / belongs to uid 0, not to you (uid {UID})"


# ---------------------------------------------------------------- a healthy host, as a baseline


def test_prepared_host_passes_namespace_checks(check) -> None:  # type: ignore[no-untyped-def]
    _result, found = check()
    for cid in (
        "userns.sysctl",
        "userns.create",
        "subids",
        "newuidmap",
        "newgidmap",
        "runtime.dir",
        "userns.start",
        "mounts",
        "storage.root",
        "storage.fs",
    ):
        assert found[cid]["status"] == "pass", found[cid]
    assert (
        "uids and 65537 gids mapped" in found["userns.start"]["detail"] or "mapped" in found["userns.start"]["detail"]
    )


def test_check_table_has_fix_lines(rl) -> None:  # type: ignore[no-untyped-def]
    out = rl("system", "check", "--no-start", unset=["XDG_RUNTIME_DIR"], rc=None).out
    lines = out.splitlines()
    warn = next(i for i, line in enumerate(lines) if line.startswith("WARN") and "runtime directory" in line)
    assert lines[warn + 1].strip().startswith("fix: log in through a PAM session")
    assert lines[-1].startswith("checks: ")


# ---------------------------------------------------------------- storage on odd filesystems


def test_storage_without_user_xattrs_moves_writable_storage_local(check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fs = prepared_dir("RL_TEST_NOXATTR_FS")
    root = fs / f"store-{os.getpid()}-{tmp_path.name}"
    local = tmp_path / "local"
    try:
        _, found = check("--root", str(root), env={"RL_STORAGE_LOCAL_ROOT": str(local)}, rc=None)
        c = found["storage.fs"]
        assert c["status"] == "warn", c
        assert c["detail"] == (
            f"the store {root} is on a FUSE filesystem, which cannot hold overlay upper dirs: unpacked layers and"
            f" container storage go to the local directory {local} (image blobs stay in {root});"
            " set storage.local_root to choose another"
        )
        assert local.is_dir() and (local.stat().st_mode & 0o777) == 0o700
        assert found["storage.driver"]["status"] in ("pass", "warn")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_storage_local_root_on_the_same_bad_filesystem_fails(check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fs = prepared_dir("RL_TEST_NOXATTR_FS")
    root = fs / f"store-{os.getpid()}-{tmp_path.name}"
    local = fs / f"local-{os.getpid()}-{tmp_path.name}"
    try:
        _, found = check("--root", str(root), no_start=True, env={"RL_STORAGE_LOCAL_ROOT": str(local)}, rc=1)
        c = found["storage.fs"]
        assert c["status"] == "fail"
        assert c["detail"].endswith(
            f"and the local storage directory is no better: {local} is on a FUSE filesystem, which cannot hold"
            " overlay upper dirs"
        )
        assert c["fix"].startswith("set storage.local_root to a directory on a local disk")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(local, ignore_errors=True)


def test_placement_on_a_filesystem_without_xattrs(tmp_path: Path) -> None:
    from rootless.storage import placement, probe

    fs = prepared_dir("RL_TEST_NOXATTR_FS")
    root = fs / f"placement-{os.getpid()}-{tmp_path.name}"
    try:
        results = probe.probe(root)
        assert results.upper_fs == f"the store {root} is on a FUSE filesystem, which cannot hold overlay upper dirs"
        placed = placement.plan(root, results, str(tmp_path / "local"))
        assert placed.layers_moved and placed.layers == tmp_path / "local" / "layers"
        assert placed.containers == tmp_path / "local" / "containers"
        assert placed.root == root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_full_storage_filesystem_fails_clearly(check) -> None:  # type: ignore[no-untyped-def]
    fs = prepared_dir("RL_TEST_FULL_FS")
    _, found = check("--root", str(fs / "store"), no_start=True, rc=1)
    c = found["storage.root"]
    assert c["status"] == "fail"
    assert c["detail"].startswith(f"the filesystem holding storage root {fs / 'store'} is full (")
    assert "set storage.root to a writable local directory" in c["fix"]
    assert found["storage.fs"]["status"] == "skip"


def test_read_only_storage_fails_clearly(check) -> None:  # type: ignore[no-untyped-def]
    fs = prepared_dir("RL_TEST_RO_FS")
    _, found = check("--root", str(fs / "store"), no_start=True, rc=1)
    c = found["storage.root"]
    assert c["status"] == "fail"
    assert c["detail"] == f"storage root {fs / 'store'} is on a read-only filesystem ({fs})"
    assert not (fs / "store").exists()


def test_pull_into_a_full_store_leaves_nothing_half_written(rl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    requires_command("pull")
    fs = prepared_dir("RL_TEST_FULL_FS")
    registry = os.environ.get("RL_TEST_REGISTRY")
    if not registry:
        pytest.skip("RL_TEST_REGISTRY is not set")
    root = fs / "pull-store"
    before = sorted(p.relative_to(fs) for p in fs.rglob("*")) if fs.exists() else []
    result = rl("--root", str(root), "pull", f"{registry}/rltest/busybox:latest", rc=125)
    assert result.err.startswith("Error: ") and len(result.err.strip().splitlines()) == 1
    assert "no space left on device" in result.err.lower()
    leftovers = [p for p in root.rglob("*") if p.is_file() and p.stat().st_size and "tmp" in p.name.lower()]
    assert not leftovers
    assert sorted(p.relative_to(fs) for p in fs.rglob("*") if "pull-store" not in str(p)) == [
        b for b in before if "pull-store" not in str(b)
    ]


# ---------------------------------------------------------------- inside another container


def _docker_seccomp():  # type: ignore[no-untyped-def]
    """A preexec function that puts Docker's default seccomp profile (for Docker's default
    capabilities) on the child, compiled here in the test process."""
    from rootless.runtime.capabilities import DEFAULT_CAPABILITIES
    from rootless.runtime.seccomp import default_program
    from rootless.runtime.syscalls import SYSCALLS

    program = default_program(DEFAULT_CAPABILITIES)
    _ = SYSCALLS.lib

    def preexec() -> None:  # pragma: no cover - runs in the child before exec
        SYSCALLS.set_no_new_privs()
        SYSCALLS.seccomp_load(program)

    return preexec


def test_outer_seccomp_profile_that_blocks_unshare(check) -> None:  # type: ignore[no-untyped-def]
    """Docker's default profile (what a CI runner in Docker has) forbids unshare without CAP_SYS_ADMIN."""
    _, found = check(no_start=True, preexec=_docker_seccomp(), rc=1)
    c = found["userns.create"]
    assert c["status"] == "fail"
    assert c["detail"].startswith(
        "cannot create a user namespace: unshare(CLONE_NEWUSER) failed with EPERM: the kernel refused though no"
        " sysctl forbids it"
    )
    assert "'Seccomp: 2' in /proc/self/status" in c["detail"]
    assert "--security-opt seccomp=unconfined" in c["fix"]
    assert found["userns.start"]["status"] == "skip"
    assert "a seccomp filter is active" in found["nested"]["detail"]


NESTED = (
    "mount --bind /dev/null /proc/keys && mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys"
    ' && mount -o remount,bind,ro /sys && exec "$@"'
)


def test_nested_in_a_container_with_masked_proc(check, rl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An outer user namespace mapping only the user (no subordinate IDs there), /proc partly masked and
    read-only, /sys read-only: as in an unprivileged Docker or Kubernetes container."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    prefix = ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private", "sh", "-c", NESTED, "sh"]
    try:
        result, found = check("--runroot", str(tmp_path / "run"), prefix=prefix, rc=1)
        assert found["mounts"]["status"] == "fail"
        assert found["mounts"]["detail"] == (
            "the kernel refuses a new /proc in a user namespace (Operation not permitted): parts of /proc are masked"
            " or read-only, as in a Docker or Kubernetes container"
        )
        assert "systempaths=unconfined" in found["mounts"]["fix"]
        assert "rl runs in a user namespace (uid_map: 0" in found["nested"]["detail"]
        # no subordinate IDs for the outer namespace's root: single-ID mapping, said once
        assert found["subids"]["status"] == "warn"
        assert found["userns.start"]["status"] == "warn"
        assert "single-ID mapping" in found["userns.start"]["detail"]
        assert result.err.count("Warning: no subordinate ids for root") == 1
    finally:  # the pause process outlives the outer namespace's shell: stop it from here
        rl("--runroot", str(tmp_path / "run"), "system", "migrate", rc=None)


# ---------------------------------------------------------------- network helpers


def test_no_network_helper_falls_back_to_host_with_warning(check, scenario_env) -> None:  # type: ignore[no-untyped-def]
    path = os.path.dirname(sys.executable)  # the venv: rl, python; no pasta, no slirp4netns
    _, found = check(no_start=True, env={"PATH": path})
    c = found["network"]
    assert c["status"] == "warn"
    assert c["detail"] == (
        "neither pasta nor slirp4netns is installed: containers without --network use the host's network"
        " (warned once); --network pasta or slirp4netns fails"
    )
    assert "apt-get install passt slirp4netns" in c["fix"]


def test_no_network_helper_without_fallback_fails(check) -> None:  # type: ignore[no-untyped-def]
    path = os.path.dirname(sys.executable)
    _, found = check(no_start=True, env={"PATH": path, "RL_NETWORK_FALLBACK_TO_HOST": "false"}, rc=1)
    c = found["network"]
    assert c["status"] == "fail"
    assert c["detail"] == "neither pasta nor slirp4netns is installed, and network.fallback_to_host is false"


def test_explicit_user_mode_network_without_helper_fails(rl) -> None:  # type: ignore[no-untyped-def]
    requires_command("run")
    if not os.environ.get("RL_TEST_REGISTRY"):
        pytest.skip("RL_TEST_REGISTRY is not set")
    path = os.path.dirname(sys.executable)
    image = f"{os.environ['RL_TEST_REGISTRY']}/rltest/busybox:latest"
    result = rl("run", "--rm", "--network", "pasta", image, "true", env={"PATH": path}, rc=125)
    assert result.err.startswith("Error: ") and len(result.err.strip().splitlines()) == 1
    assert "pasta" in result.err


# ---------------------------------------------------------------- storage driver ladder


def test_driver_ladder_warns_on_vfs_with_the_fix() -> None:
    from rootless.engine import check as engine
    from rootless.storage.placement import Placement
    from rootless.storage.probe import ProbeResults

    root = Path("/nonexistent-store")
    ctx = engine.Context(settings={"storage.driver": ""}, storage=root, runroot=root, runroot_reason="test")
    ctx.placement = Placement(root, root / "layers", root / "containers", None, None)
    ctx.probe_results = ProbeResults(
        overlay="overlayfs cannot be mounted in a user namespace here: Operation not permitted",
        fuse_overlayfs="/dev/fuse cannot be opened: No such file or directory",
    )
    c = engine.check_storage_driver(ctx)
    assert c.status == "warn"
    assert c.detail.startswith("vfs: each container gets a full copy of its image")
    assert "/dev/fuse cannot be opened" in c.detail
    assert "helpers/enable-devices.sh" in c.fix
