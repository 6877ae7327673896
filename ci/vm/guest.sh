#!/bin/bash
# Inside the cgroup v2 VM, as root, in the host's root (read-only over 9p): delegate a cgroup subtree
# to USER by hand (helpers/enable-cgroup-delegation.sh --manual), start a shell inside it, and run
# tests/cgroupvm as USER with the given venv. Exits with pytest's status.
#
#   guest.sh SRC VENV USER
set -u
src="$1" venv="$2" user="$3"
home="$(getent passwd "$user" | cut -d: -f6)"
gid="$(id -g -- "$user")"

if [[ -d "$home" && "$(stat -c %u "$home")" != "$(id -u -- "$user")" ]]; then
    chown "$user:$gid" "$home" 2>/dev/null || true
fi

echo "RL-VM: controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
if ! bash "$src/helpers/enable-cgroup-delegation.sh" --manual "$user"; then
    echo "RL-VM: enable-cgroup-delegation.sh --manual $user failed"
    exit 5
fi
delegated="/sys/fs/cgroup/rl-$user"
echo "RL-VM: running pytest as $user in $delegated"
cd "$src" || exit 6
# The tests start inside the delegated subtree, as a batch system starts a job: a subshell moves
# itself in (as root: the user can't move processes from outside the subtree), then becomes the user.
# Only the user's processes are in there: cpuset refuses +cpuset over other users' processes (EPERM).
(
    echo "$BASHPID" >"$delegated/cgroup.procs"
    exec setpriv --reuid="$user" --regid="$gid" --init-groups \
        env -i HOME="$home" USER="$user" LOGNAME="$user" SHELL=/bin/bash LANG=C.UTF-8 TERM=dumb \
        PATH="$venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
        TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1 \
        RL_CGROUPVM=1 RL_CGROUPVM_ROOT="$delegated" \
        "$venv/bin/python" -m pytest -p no:cacheprovider -rfEs -v --durations=5 tests/cgroupvm
)
rc=$?
read -r up _ </proc/uptime
echo "RL-VM: pytest exited $rc at ${up}s uptime"
exit "$rc"
