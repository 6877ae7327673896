#!/usr/bin/env python3
"""Run a command under one host condition of the compatibility ladder, without touching the host.

    sudo python3 ci/condition.py CONDITION -- COMMAND [ARGS...]

Runs as root, sets the condition up in namespaces of its own (nothing changes for other processes
on the host), then execs COMMAND (still root: pass "setpriv --reuid=USER ..." to drop to the test
user). Conditions:

  none                   nothing: COMMAND as it is
  no-newuidmap           newuidmap and newgidmap are missing: /usr/bin is replaced, in a private
                         mount namespace, by a tmpfs of symlinks to everything else in it
  no-network-helpers     pasta and slirp4netns are missing (the same way)
  newuidmap-not-setuid   newuidmap and newgidmap are there but neither setuid nor with file
                         capabilities: copies without the setuid bit are bind-mounted over them
  userns-limit           user.max_user_namespaces is 0: COMMAND runs in a user namespace that maps
                         every id to itself and whose own limit is 0 (the limit is per namespace:
                         the host's stays as it is)

Used by ci/test-host.sh (scenario phases of the test suite) and ci/compat-podman.sh.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
HELPERS = ("newuidmap", "newgidmap")
BIN = "/usr/bin"

_libc = ctypes.CDLL(None, use_errno=True)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare({flags:#x}): {os.strerror(err)}")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


SCRATCH = "/mnt"  # covered by a tmpfs in the private mount namespace only


def private_mounts() -> str:
    """A private mount namespace and a scratch tmpfs in it (gone with the namespace)."""
    unshare(CLONE_NEWNS)
    mount("--make-rprivate", "/")
    os.makedirs(SCRATCH, exist_ok=True)
    mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", SCRATCH)
    return SCRATCH


def hide_in_bin(hidden: tuple[str, ...]) -> None:
    scratch = private_mounts()
    orig, farm = os.path.join(scratch, "orig-bin"), os.path.join(scratch, "bin")
    os.mkdir(orig)
    os.mkdir(farm, 0o755)
    mount("--bind", BIN, orig)
    for name in os.listdir(orig):
        if name not in hidden:
            os.symlink(os.path.join(orig, name), os.path.join(farm, name))
    mount("--bind", farm, BIN)
    for name in hidden:
        if os.path.lexists(os.path.join(BIN, name)):
            raise SystemExit(f"ci/condition.py: {BIN}/{name} is still there")


def no_newuidmap() -> None:
    hide_in_bin(HELPERS)


def no_network_helpers() -> None:
    hide_in_bin(("pasta", "pasta.avx2", "passt", "passt.avx2", "slirp4netns"))


def newuidmap_not_setuid() -> None:
    scratch = private_mounts()
    for name in HELPERS:
        path = shutil.which(name) or os.path.join(BIN, name)
        copy = os.path.join(scratch, name)
        shutil.copyfile(path, copy)
        os.chmod(copy, 0o755)
        mount("--bind", copy, path)


def userns_limit() -> None:
    """Fork: the child unshares a user namespace; this process (root outside) writes identity maps."""
    read_fd, write_fd = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_fd)
        os.close(ready_r)
        unshare(CLONE_NEWUSER)
        os.write(ready_w, b"u")
        os.close(ready_w)
        if os.read(read_fd, 1) != b"m":
            os._exit(1)
        with open("/proc/sys/user/max_user_namespaces", "w") as f:
            f.write("0")
        return  # the child goes on to exec the command
    os.close(read_fd)
    os.close(ready_w)
    if os.read(ready_r, 1) != b"u":
        _, status = os.waitpid(pid, 0)
        raise SystemExit("condition userns-limit: the child could not unshare a user namespace")
    for name, data in (("uid_map", "0 0 4294967295\n"), ("setgroups", "allow"), ("gid_map", "0 0 4294967295\n")):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
    os.write(write_fd, b"m")
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status))


CONDITIONS = {
    "none": lambda: None,
    "no-newuidmap": no_newuidmap,
    "no-network-helpers": no_network_helpers,
    "newuidmap-not-setuid": newuidmap_not_setuid,
    "userns-limit": userns_limit,
}


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--" or argv[0] not in CONDITIONS:
        sys.stderr.write(__doc__ or "")
        raise SystemExit(2)
    if os.getuid() != 0:
        raise SystemExit("ci/condition.py: run it as root")
    CONDITIONS[argv[0]]()
    command = argv[2:]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
