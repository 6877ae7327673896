#!/usr/bin/env bash
# Delegate cgroup v2 controllers to ordinary users, so rl can apply --memory, --cpus, --pids-limit...
set -euo pipefail

CONTROLLERS=(cpu cpuset io memory pids)
DROP_IN_DIR=/etc/systemd/system/user@.service.d
DROP_IN="$DROP_IN_DIR/delegate.conf"
CGROUP=/sys/fs/cgroup

usage() {
    cat <<'USAGE'
Usage: sudo helpers/enable-cgroup-delegation.sh [USER]
       sudo helpers/enable-cgroup-delegation.sh --manual USER [PATH]

Lets USER's containers have resource limits. Needs the unified cgroup v2
hierarchy at /sys/fs/cgroup; refuses on cgroup v1 and hybrid hosts.

systemd hosts (default): writes /etc/systemd/system/user@.service.d/delegate.conf
  [Service]
  Delegate=cpu cpuset io memory pids
and runs systemctl daemon-reload. Users log in again (or their user manager
restarts) to get it; rl then asks systemd for a delegated scope. USER is not
needed: the drop-in applies to every user.

--manual USER [PATH] (hosts without systemd, batch systems, CI containers):
creates PATH (default /sys/fs/cgroup/rl-USER) in the unified hierarchy, enables
the controllers in cgroup.subtree_control of every ancestor from the root down,
and chowns PATH and its cgroup.procs, cgroup.subtree_control and cgroup.threads
to USER. USER's processes must then start inside PATH (cgroup v2 lets a user
move processes only between cgroups whose common ancestor is theirs), e.g.
  echo $$ > PATH/cgroup.procs   # as root, in the shell that starts USER's job
The cgroup lasts until reboot; rerun this at boot to keep it.
USAGE
}

die() {
    printf 'enable-cgroup-delegation.sh: %s\n' "$*" >&2
    exit 1
}

say() {
    printf 'enable-cgroup-delegation.sh: %s\n' "$*"
}

# Refuse on v1 and hybrid layouts: delegation needs the unified hierarchy.
check_unified() {
    local fstype
    fstype="$(stat -f -c %T "$CGROUP" 2>/dev/null || true)"
    if [[ "$fstype" == cgroup2fs ]]; then
        return 0
    fi
    local layout="cgroup v1"
    if [[ "$(stat -f -c %T "$CGROUP/unified" 2>/dev/null || true)" == cgroup2fs ]]; then
        layout="hybrid (controllers on cgroup v1 hierarchies, a cgroup2 without them at $CGROUP/unified)"
    elif [[ "$fstype" != tmpfs ]]; then
        layout="no cgroup filesystem ($fstype)"
    fi
    die "this host's cgroup layout is $layout; delegation needs cgroup v2 at $CGROUP: boot the host with" \
        "'systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all' on the kernel command line (e.g. in" \
        "GRUB_CMDLINE_LINUX of /etc/default/grub, then update-grub and reboot), then run this again"
}

systemd_mode() {
    if [[ ! -d /run/systemd/system ]]; then
        die "systemd is not running on this host; use --manual USER [PATH]"
    fi
    install -d -m 0755 "$DROP_IN_DIR"
    local want
    want="$(printf '[Service]\nDelegate=%s\n' "${CONTROLLERS[*]}")"
    if [[ -f "$DROP_IN" && "$(cat "$DROP_IN")" == "$want" ]]; then
        say "$DROP_IN already delegates ${CONTROLLERS[*]}"
    else
        printf '%s\n' "$want" >"$DROP_IN.tmp"
        chmod 0644 "$DROP_IN.tmp"
        mv -f "$DROP_IN.tmp" "$DROP_IN"
        say "wrote $DROP_IN (Delegate=${CONTROLLERS[*]})"
    fi
    systemctl daemon-reload
    say "done; users get the controllers at their next login (or: systemctl restart user@UID.service)"
}

# enable_in DIR: enable the controllers DIR offers in DIR/cgroup.subtree_control.
enable_in() {
    local dir="$1" c
    local -a have
    read -r -a have <"$dir/cgroup.controllers" || true
    for c in "${CONTROLLERS[@]}"; do
        if [[ " ${have[*]} " == *" $c "* ]]; then
            if ! printf '+%s' "$c" >"$dir/cgroup.subtree_control" 2>/dev/null; then
                say "warning: could not enable $c in $dir/cgroup.subtree_control" >&2
            fi
        else
            say "warning: $dir does not offer the $c controller" >&2
        fi
    done
}

manual_mode() {
    local user="$1" path="${2:-}"
    id -u -- "$user" >/dev/null 2>&1 || die "no such user: $user"
    if [[ -z "$path" ]]; then
        path="$CGROUP/rl-$user"
    fi
    [[ "$path" == "$CGROUP"/* ]] || die "PATH must be under $CGROUP: $path"
    [[ "$path" != *..* ]] || die "PATH must not contain '..': $path"
    local gid
    gid="$(id -g -- "$user")"
    # Create it and enable the controllers top-down: each ancestor's subtree_control
    # decides what its children (and finally PATH) get.
    local relative="${path#"$CGROUP"/}" dir="$CGROUP" part
    local -a parts
    IFS=/ read -r -a parts <<<"$relative"
    for part in "${parts[@]}"; do
        [[ -n "$part" ]] || continue
        enable_in "$dir"
        dir="$dir/$part"
        if [[ ! -d "$dir" ]]; then
            mkdir "$dir"
        fi
    done
    chown "$user:$gid" "$path" "$path/cgroup.procs" "$path/cgroup.subtree_control" "$path/cgroup.threads"
    local got
    got="$(cat "$path/cgroup.controllers")"
    say "delegated $path to $user (controllers: ${got:-none})"
    say "start $user's processes inside it: echo PID > $path/cgroup.procs (as root)"
}

manual=0
args=()
while (($#)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --manual) manual=1 ;;
        -*) usage >&2; exit 2 ;;
        *) args+=("$1") ;;
    esac
    shift
done

if [[ "$(id -u)" -ne 0 ]]; then
    die "must run as root (try: sudo $0)"
fi
check_unified
if ((manual)); then
    ((${#args[@]} >= 1 && ${#args[@]} <= 2)) || { usage >&2; exit 2; }
    manual_mode "${args[@]}"
elif [[ -d /run/systemd/system ]]; then
    ((${#args[@]} <= 1)) || { usage >&2; exit 2; }
    systemd_mode
else
    die "systemd is not running on this host; use: $0 --manual USER [PATH]"
fi
