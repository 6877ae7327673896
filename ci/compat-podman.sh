#!/usr/bin/env bash
# The podman column of docs/compatibility.md: Debian's podman under each host condition of the
# compatibility ladder, on this host, as rl's scenario tests set them up.
#
#   sudo ci/compat-podman.sh [USER [NOSUB_USER]]
#
# Runs as root, prepares each condition the way ci/test-host.sh does (ci/condition.py, the
# scenario filesystems), then as USER (default rltest; NOSUB_USER, default rlnosub, for the
# no-subordinate-IDs row) runs 'podman run --rm IMAGE true' with a fresh store, and prints one
# markdown row per condition: "works", or the first line of podman's error. The image is made
# locally (busybox-static plus one file owned by uid 1000) and loaded with 'podman import'.
# podman is configured per user as on a hybrid-cgroup host without systemd (runc, cgroupfs,
# file events log). Changes nothing on the host beyond the temp dirs it removes.
set -euo pipefail

# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

user="${1:-rltest}"
nosub="${2:-rlnosub}"
trap ci_cleanup EXIT
ci_require_root
command -v podman >/dev/null || ci_die "podman is not installed (apt-get install podman runc)"

work="$(mktemp -d /var/tmp/rl-compat.XXXXXX)"
CI_CLEANUP_DIRS+=("$work")
chmod 0755 "$work"

# The image: busybox with a file owned by uid 1000 (what breaks single-ID mappings).
mkdir -p "$work/rootfs/bin" "$work/rootfs/home/user"
cp /bin/busybox "$work/rootfs/bin/busybox"
for tool in sh true id; do ln -s busybox "$work/rootfs/bin/$tool"; done
echo hi >"$work/rootfs/home/user/file"
chown -R 1000:1000 "$work/rootfs/home/user"
tar -C "$work/rootfs" --numeric-owner -cf "$work/image.tar" .
chmod 0644 "$work/image.tar"

ci_scenario_filesystems "$user"

# podman_as USER CONDITION [NAME=VALUE...] -- PREFIX...: prints podman's outcome as one line.
podman_as() {
    local who="$1" condition="$2"
    shift 2
    local -a vars=()
    while (($#)) && [[ "$1" != -- ]]; do
        vars+=("$1")
        shift
    done
    shift
    local home="$work/home-$who-$RANDOM"
    mkdir -p "$home/.config/containers" "$home/run"
    chmod 0700 "$home/run"
    cat >"$home/.config/containers/containers.conf" <<'EOF'
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    chown -R "$who:$(id -g -- "$who")" "$home"
    local -a CI_USER_WRAP=()
    if [[ "$condition" != none ]]; then
        CI_USER_WRAP=("$RL_CI_PYTHON" "$RL_CI_ROOT/ci/condition.py" "$condition" --)
    fi
    # shellcheck disable=SC2016  # expanded by the inner bash
    local script='
        first() { local all; all="$(grep -v "level=warning" | grep -v "^\s*$")"; { grep "^Error: " <<<"$all" || printf "%s\n" "$all"; } | head -n 1; }
        if ! out="$(podman "$@" import -q /image.tar localhost/compat:latest 2>&1 >/dev/null)"; then
            printf "%s\n" "$out" | first; exit 0; fi
        if out="$(podman "$@" run --rm localhost/compat:latest true 2>&1)"; then echo works
        else printf "%s\n" "$out" | first; fi'
    script="${script//\/image.tar/$work/image.tar}"
    # shellcheck disable=SC2086  # PODMAN_ARGS is split on purpose
    (cd "$home" && ci_as_user "$who" HOME="$home" XDG_RUNTIME_DIR="$home/run" "${vars[@]}" -- \
        "$@" bash -c "$script" podman ${PODMAN_ARGS:-}) 2>&1 | tail -n 1
}

row() {
    printf '| %s | %s |\n' "$1" "$2"
}

seccomp_exec=("$RL_CI_PYTHON" -c '
import os, sys
sys.path.insert(0, sys.argv[1])
from rootless.runtime.capabilities import DEFAULT_CAPABILITIES
from rootless.runtime.seccomp import default_program
from rootless.runtime.syscalls import SYSCALLS
program = default_program(DEFAULT_CAPABILITIES)
SYSCALLS.set_no_new_privs()
SYSCALLS.seccomp_load(program)
os.execvp(sys.argv[2], sys.argv[2:])' "$RL_CI_ROOT")
nested=(unshare --user --map-root-user --mount --propagation private sh -c
    'mount --bind /dev/null /proc/keys && mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && mount -o remount,bind,ro /sys && exec "$@"' sh)

printf '| condition | podman %s |\n|---|---|\n' "$(podman --version | awk '{print $3}')"
row "prepared host (baseline)" "$(podman_as "$user" none --)"
row "no /etc/subuid, /etc/subgid entry" "$(podman_as "$nosub" none --)"
row "newuidmap/newgidmap missing" "$(podman_as "$user" no-newuidmap --)"
row "newuidmap/newgidmap not setuid" "$(podman_as "$user" newuidmap-not-setuid --)"
row "user.max_user_namespaces = 0" "$(podman_as "$user" userns-limit --)"
row "XDG_RUNTIME_DIR unset" "$(podman_as "$user" none XDG_RUNTIME_DIR= --)"
row "XDG_RUNTIME_DIR missing" "$(podman_as "$user" none XDG_RUNTIME_DIR=/nonexistent/run --)"
row "XDG_RUNTIME_DIR owned by another user" "$(podman_as "$user" none XDG_RUNTIME_DIR=/ --)"
if [[ -n "$CI_NOXATTR_FS" ]]; then
    row "storage on FUSE without user xattrs" "$(PODMAN_ARGS="--root $CI_NOXATTR_FS/podman-store" podman_as "$user" none --)"
fi
if [[ -n "$CI_FULL_FS" ]]; then
    row "storage filesystem full" "$(PODMAN_ARGS="--root $CI_FULL_FS/podman-store" podman_as "$user" none --)"
fi
if [[ -n "$CI_RO_FS" ]]; then
    row "storage read-only" "$(PODMAN_ARGS="--root $CI_RO_FS/podman-store" podman_as "$user" none --)"
fi
row "no pasta, no slirp4netns (default network)" "$(podman_as "$user" no-network-helpers --)"
row "outer seccomp profile blocks unshare (Docker's default)" "$(podman_as "$user" none -- "${seccomp_exec[@]}")"
row "nested: outer userns, masked /proc, read-only /sys" "$(podman_as "$user" none -- "${nested[@]}")"
