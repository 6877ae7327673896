# shellcheck shell=bash
# Shared code for ci/test-host.sh and ci/try.sh. Source it; don't run it.
#
# Everything here runs as root and prepares the host the way an admin would
# (through helpers/), then runs rl and its tests as an ordinary user.

if [[ -n "${RL_CI_LIB_LOADED:-}" ]]; then
    return 0
fi
RL_CI_LIB_LOADED=1

RL_CI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RL_CI_CACHE="${RL_CI_CACHE:-/var/cache/rl-ci}"
RL_CI_PYTHON="${RL_CI_PYTHON:-/usr/bin/python3}"
RL_CI_DEBIAN_SUITE="${RL_CI_DEBIAN_SUITE:-bookworm}"
RL_CI_DEBIAN_FALLBACK_MIRROR="http://deb.debian.org/debian"

# ---------------------------------------------------------------- logging

ci_log() {
    printf '[ci %(%H:%M:%S)T] %s\n' -1 "$*" >&2
}

ci_die() {
    ci_log "ERROR: $*"
    exit 1
}

# Steps: ci_step_begin NAME ... ci_step_end [RESULT]. A step still open when
# the script exits (set -e tripped) is reported as FAILED by ci_summary.
CI_STEP_NAMES=()
CI_STEP_SECONDS=()
CI_STEP_RESULTS=()
CI_STEP_CURRENT=""
CI_STEP_STARTED=0

ci_step_begin() {
    CI_STEP_CURRENT="$1"
    CI_STEP_STARTED="$SECONDS"
    printf '\n==== %s\n' "$CI_STEP_CURRENT" >&2
}

ci_step_end() {
    local result="${1:-ok}"
    CI_STEP_NAMES+=("$CI_STEP_CURRENT")
    CI_STEP_SECONDS+=("$((SECONDS - CI_STEP_STARTED))")
    CI_STEP_RESULTS+=("$result")
    ci_log "$CI_STEP_CURRENT: $result ($((SECONDS - CI_STEP_STARTED))s)"
    CI_STEP_CURRENT=""
}

ci_summary() {
    local i
    if [[ -n "$CI_STEP_CURRENT" ]]; then
        ci_step_end FAILED
    fi
    printf '\n==== summary\n'
    for i in "${!CI_STEP_NAMES[@]}"; do
        printf '  %-28s %6ss  %s\n' "${CI_STEP_NAMES[$i]}" "${CI_STEP_SECONDS[$i]}" "${CI_STEP_RESULTS[$i]}"
    done
    printf '  %-28s %6ss\n' "total" "$SECONDS"
}

# ci_pytest_counts LOG: "N passed, N failed, N skipped" summed over every pytest closing line
# in LOG (one per pytest run; errors count as failed); nothing if there is no such line.
ci_pytest_counts() {
    local lines
    lines="$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran|deselected).* in [0-9.]+s' "$1" || true)"
    [[ -n "$lines" ]] || return 0
    printf '%s\n' "$lines" | awk '{
        n = split($0, words, /[ ,=]+/)
        for (i = 2; i <= n; i++) {
            if (words[i] == "passed") passed += words[i - 1]
            if (words[i] == "failed" || words[i] ~ /^errors?$/) failed += words[i - 1]
            if (words[i] == "skipped") skipped += words[i - 1]
        }
    }
    END { printf "%d passed, %d failed, %d skipped\n", passed, failed, skipped }'
}

# ---------------------------------------------------------------- cleanup

CI_CLEANUP_PIDS=()
CI_CLEANUP_DIRS=()
CI_CLEANUP_MOUNTS=()

ci_cleanup() {
    local pid dir mnt i
    for pid in "${CI_CLEANUP_PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    CI_CLEANUP_PIDS=()
    # mounts first (newest first), so removing the directories never crosses into one
    for ((i = ${#CI_CLEANUP_MOUNTS[@]} - 1; i >= 0; i--)); do
        mnt="${CI_CLEANUP_MOUNTS[$i]}"
        if mountpoint -q "$mnt"; then
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        fi
    done
    CI_CLEANUP_MOUNTS=()
    if [[ "${RL_CI_KEEP:-0}" == 1 ]]; then
        if ((${#CI_CLEANUP_DIRS[@]})); then
            ci_log "RL_CI_KEEP=1: leaving ${CI_CLEANUP_DIRS[*]}"
        fi
        return 0
    fi
    for dir in "${CI_CLEANUP_DIRS[@]}"; do
        rm -rf --one-file-system -- "$dir"
    done
    CI_CLEANUP_DIRS=()
}

# ---------------------------------------------------------------- host

ci_require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        ci_die "run this as root (sudo $0): it installs packages and creates users"
    fi
}

ci_apt_update_once() {
    if [[ -z "${CI_APT_UPDATED:-}" ]] && command -v apt-get >/dev/null 2>&1; then
        ci_log "apt-get update"
        local try
        for try in 1 2 3 4 5 6; do
            if DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq; then
                CI_APT_UPDATED=1
                return 0
            fi
            ci_log "apt-get update failed (try $try); retrying in 10s"
            sleep 10
        done
        ci_die "apt-get update keeps failing"
    fi
}

# ci_install_packages [install-packages.sh options...]
ci_install_packages() {
    ci_apt_update_once
    bash "$RL_CI_ROOT/helpers/install-packages.sh" --no-update "$@"
}

# ci_ensure_user NAME subids|nosubids
# Creates NAME (with a home) if missing. "subids" grants subordinate ranges via
# helpers/grant-subids.sh; "nosubids" makes sure the user has none (useradd may
# hand out ranges on its own, from login.defs).
ci_ensure_user() {
    local name="$1" mode="$2"
    if ! id -u -- "$name" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 -- "$name"
        ci_log "created user $name"
    fi
    case "$mode" in
        subids) bash "$RL_CI_ROOT/helpers/grant-subids.sh" "$name" ;;
        nosubids)
            local uid file
            uid="$(id -u -- "$name")"
            for file in /etc/subuid /etc/subgid; do
                if [[ -f "$file" ]] && grep -qE "^($name|$uid):" "$file"; then
                    sed -i -E "/^($name|$uid):/d" "$file"
                    ci_log "removed $name's ranges from $file (it must have none)"
                fi
            done
            ;;
        *) ci_die "ci_ensure_user: bad mode '$mode'" ;;
    esac
}

ci_enable_devices() {
    bash "$RL_CI_ROOT/helpers/enable-devices.sh"
}

# ci_as_user USER [NAME=VALUE...] -- COMMAND [ARGS...]
# Runs COMMAND as USER in the current directory with a clean login-like
# environment (HOME, USER, LOGNAME, SHELL, PATH, LANG; PATH starts with
# $CI_VENV/bin when set) plus the given variables. XDG_RUNTIME_DIR stays unset.
# exec's straight into COMMAND, so a background job's $! is COMMAND's pid.
# With the array CI_USER_WRAP set (e.g. (python3 ci/condition.py no-newuidmap --)), that runs
# first, as root, and execs the rest.
ci_as_user() {
    local user="$1"
    shift
    local -a vars=()
    while (($#)) && [[ "$1" != -- ]]; do
        vars+=("$1")
        shift
    done
    [[ "${1:-}" == -- ]] || ci_die "ci_as_user: missing -- before the command"
    shift
    local home path
    home="$(getent passwd "$user" | cut -d: -f6)"
    path="/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
    if [[ -n "${CI_VENV:-}" ]]; then
        path="$CI_VENV/bin:$path"
    fi
    ${CI_USER_WRAP[@]+"${CI_USER_WRAP[@]}"} \
        setpriv --reuid="$user" --regid="$(id -g -- "$user")" --init-groups \
        env -i HOME="$home" USER="$user" LOGNAME="$user" SHELL=/bin/bash PATH="$path" \
        LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" "${vars[@]}" "$@"
}

# ---------------------------------------------------------------- checkout + venv

# ci_stage_checkout USER PREFIX: copies the checkout (work tree, not .git or
# build leftovers) to a fresh directory under /var/tmp owned by USER, so USER
# can read it wherever the clone lives. Sets CI_STAGE.
ci_stage_checkout() {
    local user="$1" prefix="$2"
    CI_STAGE="$(mktemp -d "/var/tmp/${prefix}.XXXXXX")"
    CI_CLEANUP_DIRS+=("$CI_STAGE")
    tar -C "$RL_CI_ROOT" \
        --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude=./.ci/work --exclude='*.egg-info' --exclude=__pycache__ \
        --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache \
        -cf - . | tar -C "$CI_STAGE" -xf -
    chown -R "$user:$(id -g -- "$user")" "$CI_STAGE"
    chmod 0755 "$CI_STAGE"
    ci_log "checkout staged at $CI_STAGE (owner $user)"
}

# ci_make_venv USER [EXTRAS]: venv at $CI_STAGE/.venv with Debian's python
# (root's own python may be unreadable to USER), then installs the staged
# project (non-editable) with the given extras. Sets CI_VENV.
ci_make_venv() {
    local user="$1" extras="${2:-}"
    local target="$CI_STAGE"
    if [[ -n "$extras" ]]; then
        target="${CI_STAGE}[$extras]"
    fi
    CI_VENV="$CI_STAGE/.venv"
    "$RL_CI_PYTHON" -m venv "$CI_VENV"
    "$CI_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$target"
    # pip builds in the source tree; keep the build leftovers out of the tests' way.
    rm -rf "$CI_STAGE/build"
    chown -R "$user:$(id -g -- "$user")" "$CI_STAGE"
    ci_log "venv $CI_VENV: $("$CI_VENV/bin/python" --version), rl $("$CI_VENV/bin/python" -c \
        'import importlib.metadata as m; print(m.version("rootless"))')"
}

# ---------------------------------------------------------------- Debian rootfs

# The Debian mirror apt already uses (so no other host is needed), else
# deb.debian.org.
ci_debian_mirror() {
    local mirror=""
    local -a sources=()
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && sources+=("$f")
    done
    if ((${#sources[@]})); then
        # deb822: a paragraph with "Types: deb", suite == $RL_CI_DEBIAN_SUITE.
        mirror="$(awk -v suite="$RL_CI_DEBIAN_SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/)  types = $i
                    if ($i ~ /^URIs:/)   uris = $i
                    if ($i ~ /^Suites:/) suites = $i
                }
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && (" " suites " ") ~ ("[ \t]" suite "[ \t]")) {
                    split(uris, parts, /[ \t]+/)
                    if (parts[2] ~ /^https?:\/\//) { print parts[2]; exit }
                }
            }' "${sources[@]}")"
    fi
    if [[ -z "$mirror" ]]; then
        local -a lists=()
        [[ -f /etc/apt/sources.list ]] && lists+=(/etc/apt/sources.list)
        for f in /etc/apt/sources.list.d/*.list; do
            [[ -f "$f" ]] && lists+=("$f")
        done
        if ((${#lists[@]})); then
            mirror="$(awk -v suite="$RL_CI_DEBIAN_SUITE" '
                $1 == "deb" {
                    n = 2
                    if ($2 ~ /^\[/) { while (n <= NF && $n !~ /\]$/) n++; n++ }
                    if ($n ~ /^https?:\/\// && $(n + 1) == suite) { print $n; exit }
                }' "${lists[@]}")"
        fi
    fi
    printf '%s\n' "${mirror:-$RL_CI_DEBIAN_FALLBACK_MIRROR}"
}

# ci_debian_tarball: a Debian minbase rootfs as a tar (numeric owners, no device
# nodes), built once with debootstrap and cached in $RL_CI_CACHE. Sets
# CI_DEBIAN_TAR (world-readable).
ci_debian_tarball() {
    CI_DEBIAN_TAR="$RL_CI_CACHE/debian-$RL_CI_DEBIAN_SUITE-minbase.tar"
    install -d -m 0755 "$RL_CI_CACHE"
    # One builder at a time when two runs share a host.
    # (Called plainly so set -e still works inside; exiting drops the lock too.)
    local lock_fd
    exec {lock_fd}>"$RL_CI_CACHE/.lock"
    flock "$lock_fd"
    _ci_debian_tarball_locked
    exec {lock_fd}>&-
}

_ci_debian_tarball_locked() {
    if [[ -s "$CI_DEBIAN_TAR" ]]; then
        ci_log "reusing cached $CI_DEBIAN_TAR ($(du -h "$CI_DEBIAN_TAR" | cut -f1)); delete it to rebuild"
        chmod 0644 "$CI_DEBIAN_TAR"
        return 0
    fi
    local mirror rootfs
    mirror="$(ci_debian_mirror)"
    rootfs="$(mktemp -d /var/tmp/rl-debootstrap.XXXXXX)"
    CI_CLEANUP_DIRS+=("$rootfs")
    ci_log "debootstrap --variant=minbase $RL_CI_DEBIAN_SUITE from $mirror"
    if ! debootstrap --variant=minbase "$RL_CI_DEBIAN_SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
        tail -n 30 "$rootfs.log" >&2
        rm -f "$rootfs.log"
        ci_die "debootstrap failed"
    fi
    rm -f "$rootfs.log"
    # An image holds no device nodes, package lists or apt caches.
    find "$rootfs/dev" -mindepth 1 -delete
    find "$rootfs/var/lib/apt/lists" "$rootfs/var/cache/apt" -type f -delete
    chmod 0755 "$rootfs"  # mktemp made it 0700; it becomes the image's "/"
    tar -C "$rootfs" --numeric-owner --sort=name -cf "$CI_DEBIAN_TAR.tmp" .
    chmod 0644 "$CI_DEBIAN_TAR.tmp"
    mv -f "$CI_DEBIAN_TAR.tmp" "$CI_DEBIAN_TAR"
    rm -rf --one-file-system -- "$rootfs"
    ci_log "built $CI_DEBIAN_TAR ($(du -h "$CI_DEBIAN_TAR" | cut -f1))"
}

# ---------------------------------------------------------------- registry

ci_free_port() {
    "$RL_CI_PYTHON" -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])'
}

# ci_wait_registry PID ADDRESS SECONDS: wait until GET /v2/ answers 200.
ci_wait_registry() {
    local pid="$1" address="$2" seconds="$3"
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        if "$RL_CI_PYTHON" -c '
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/v2/", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)' "$address" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# ci_start_registry USER: Distribution's registry (Debian's docker-registry) as
# USER on 127.0.0.1:<free port>, storage in a temp dir, deletes enabled.
# Sets CI_REGISTRY (host:port), CI_REGISTRY_PID and CI_REGISTRY_DIR; stopped by
# ci_cleanup.
ci_start_registry() {
    local user="$1"
    local attempt port
    CI_REGISTRY_DIR="$(mktemp -d /var/tmp/rl-registry.XXXXXX)"
    CI_CLEANUP_DIRS+=("$CI_REGISTRY_DIR")
    mkdir -p "$CI_REGISTRY_DIR/storage"
    chown -R "$user:$(id -g -- "$user")" "$CI_REGISTRY_DIR"
    for attempt in 1 2 3; do
        port="$(ci_free_port)"
        cat >"$CI_REGISTRY_DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $CI_REGISTRY_DIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
        chmod 0644 "$CI_REGISTRY_DIR/config.yml"
        (cd "$CI_REGISTRY_DIR" && exec setpriv --reuid="$user" --regid="$(id -g -- "$user")" --init-groups \
            env -i HOME="$CI_REGISTRY_DIR" PATH=/usr/bin:/bin \
            docker-registry serve "$CI_REGISTRY_DIR/config.yml" >"$CI_REGISTRY_DIR/registry.log" 2>&1) &
        CI_REGISTRY_PID=$!
        CI_CLEANUP_PIDS+=("$CI_REGISTRY_PID")
        if ci_wait_registry "$CI_REGISTRY_PID" "127.0.0.1:$port" 30; then
            CI_REGISTRY="127.0.0.1:$port"
            ci_log "registry $CI_REGISTRY up (pid $CI_REGISTRY_PID, user $user, log $CI_REGISTRY_DIR/registry.log)"
            return 0
        fi
        ci_log "registry on port $port did not come up (attempt $attempt):"
        tail -n 20 "$CI_REGISTRY_DIR/registry.log" >&2 || true
        kill -TERM "$CI_REGISTRY_PID" 2>/dev/null || true
        wait "$CI_REGISTRY_PID" 2>/dev/null || true
    done
    ci_die "could not start docker-registry"
}

# ---------------------------------------------------------------- scenario filesystems

# ci_scenario_filesystems USER: root-prepared storage conditions for tests/scenarios, each a
# directory owned by USER; unmounted and removed by ci_cleanup. Sets CI_NOXATTR_FS (FUSE, no user
# xattrs: bindfs -o xattr-none), CI_FULL_FS (a 1 MiB tmpfs filled by root) and CI_RO_FS (a
# read-only bind mount). A condition that cannot be made here stays unset (its tests skip).
ci_scenario_filesystems() {
    local user="$1" group base
    group="$(id -g -- "$user")"
    base="$(mktemp -d /var/tmp/rl-scenario-fs.XXXXXX)"
    chmod 0755 "$base"
    CI_CLEANUP_DIRS+=("$base")
    mkdir -p "$base/noxattr-src" "$base/noxattr" "$base/full" "$base/ro"
    chown "$user:$group" "$base/noxattr-src" "$base/noxattr" "$base/full" "$base/ro"
    CI_NOXATTR_FS="" CI_FULL_FS="" CI_RO_FS=""
    if command -v bindfs >/dev/null 2>&1 &&
        bindfs -o xattr-none,allow_other "$base/noxattr-src" "$base/noxattr" 2>/dev/null; then
        CI_CLEANUP_MOUNTS+=("$base/noxattr")
        CI_NOXATTR_FS="$base/noxattr"
    else
        ci_log "bindfs -o xattr-none failed: the no-xattr storage scenarios will skip"
    fi
    if mount -t tmpfs -o size=1m,mode=0755 tmpfs "$base/full"; then
        CI_CLEANUP_MOUNTS+=("$base/full")
        chown "$user:$group" "$base/full"
        dd if=/dev/zero of="$base/full/filler" bs=4k status=none 2>/dev/null || true
        CI_FULL_FS="$base/full"
    fi
    if mount --bind "$base/ro" "$base/ro" && mount -o remount,bind,ro "$base/ro"; then
        CI_CLEANUP_MOUNTS+=("$base/ro")
        CI_RO_FS="$base/ro"
    fi
    ci_log "scenario filesystems: noxattr=${CI_NOXATTR_FS:-none} full=${CI_FULL_FS:-none} ro=${CI_RO_FS:-none}"
}
