#!/usr/bin/env bash
# The cgroup v2 lane: boot Debian's kernel under qemu (TCG, no KVM needed) with the host's root shared
# read-only over 9p, delegate a cgroup v2 subtree to the test user by hand, and run tests/cgroupvm
# there as that user. For hosts whose own cgroups can't show limits working (v1 or hybrid).
#
#   sudo ci/vm/run-lane.sh --venv VENV_DIR --src SRC_DIR --user rltest [--timeout SECS]
#
# SRC_DIR: a checkout the user can read; VENV_DIR: a venv with rl and pytest, readable by the user.
# Installs qemu-system-x86, linux-image-amd64, busybox-static and cpio with apt when missing.
# Prints the pytest output from the VM, then "cgroupvm: <pytest summary>", and exits with pytest's
# status. When qemu or the kernel can't be had: one "cgroupvm: SKIPPED: why" line, exit 0 — or exit 1
# when CI=true or RL_CI_VM_REQUIRED=1. RL_CI_VM_KEEP=1 keeps the work directory (console log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="" src="" user="" timeout=300

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($#)); do
    case "$1" in
        --venv) venv="$2"; shift 2 ;;
        --src) src="$2"; shift 2 ;;
        --user) user="$2"; shift 2 ;;
        --timeout) timeout="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done

log() { printf '[cgroupvm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'cgroupvm: ERROR: %s\n' "$*" >&2; exit 1; }
skip() {
    if [[ "${CI:-}" == true || "${RL_CI_VM_REQUIRED:-0}" == 1 ]]; then
        printf 'cgroupvm: FAILED: cannot run the VM lane: %s\n' "$*"
        exit 1
    fi
    printf 'cgroupvm: SKIPPED: %s\n' "$*"
    exit 0
}

[[ -n "$venv" && -n "$src" && -n "$user" ]] || { usage >&2; exit 2; }
[[ "$(id -u)" -eq 0 ]] || die "must run as root"
src="$(cd "$src" && pwd)" || die "no such directory: $src"
venv="$(cd "$venv" && pwd)" || die "no such directory: $venv"
[[ -x "$venv/bin/python" ]] || die "$venv/bin/python is missing"
[[ -f "$src/ci/vm/guest.sh" ]] || die "$src is not an rl checkout (no ci/vm/guest.sh)"
id -u -- "$user" >/dev/null 2>&1 || die "no such user: $user"
for path in "$src" "$venv"; do
    [[ "$path" != *[[:space:]]* ]] || die "paths with spaces can't go on the kernel command line: $path"
done
[[ "$timeout" =~ ^[0-9]+$ ]] || die "--timeout takes seconds"
started=$SECONDS

# ---------------------------------------------------------------- packages

newest_kernel() {
    local k ver best=""
    for k in /boot/vmlinuz-*; do
        [[ -e "$k" ]] || continue
        ver="${k#/boot/vmlinuz-}"
        [[ -f "/lib/modules/$ver/modules.dep" ]] || continue
        best="$(printf '%s\n%s\n' "$best" "$ver" | sed '/^$/d' | sort -V | tail -n 1)"
    done
    printf '%s' "$best"
}

need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
[[ -n "$(newest_kernel)" ]] || need+=(linux-image-amd64)
[[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${need[@]}"; } >/tmp/rl-cgroupvm-apt.log 2>&1; then
        tail -n 5 /tmp/rl-cgroupvm-apt.log >&2
        skip "apt-get install ${need[*]} failed (log: /tmp/rl-cgroupvm-apt.log)"
    fi
fi
command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 is not installed"
kver="$(newest_kernel)"
[[ -n "$kver" ]] || skip "no /boot/vmlinuz-* with its /lib/modules/*/modules.dep"
kernel="/boot/vmlinuz-$kver"
[[ -r "$kernel" ]] || skip "$kernel is not readable"

# ---------------------------------------------------------------- initramfs

work="$(mktemp -d /tmp/rl-cgroupvm.XXXXXX)"
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    if [[ "${RL_CI_VM_KEEP:-0}" == 1 ]]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

moddir="/lib/modules/$kver"
declare -A mod_path=() loaded=()
while IFS= read -r line; do
    path="${line%%:*}"
    name="${path##*/}"
    name="${name%%.ko*}"
    mod_path["${name//-/_}"]="$path"
done <"$moddir/modules.dep"
order=()
# add_module NAME: NAME after its dependencies (modules.dep), unless built in.
add_module() {
    local name="${1//-/_}" path deps dep
    [[ -z "${loaded[$name]:-}" ]] || return 0
    loaded[$name]=1
    path="${mod_path[$name]:-}"
    if [[ -z "$path" ]]; then
        grep -q "/${1}.ko" "$moddir/modules.builtin" 2>/dev/null ||
            grep -q "/${name}.ko" "$moddir/modules.builtin" 2>/dev/null ||
            log "module $1: neither in modules.dep nor built in"
        return 0
    fi
    deps="$(grep -m1 "^$path:" "$moddir/modules.dep" | cut -d: -f2-)"
    for dep in $deps; do
        dep="${dep##*/}"
        add_module "${dep%%.ko*}"
    done
    order+=("$path")
}
for m in virtio virtio_ring virtio_pci 9pnet 9pnet_virtio netfs fscache 9p; do
    add_module "$m"
done

root="$work/initramfs"
mkdir -p "$root"/{bin,proc,sys,dev,newroot}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
: >"$root/modules.list"
for path in "${order[@]}"; do
    target="$root/lib/modules/${path%.ko*}.ko"
    mkdir -p "$(dirname "$target")"
    case "$path" in
        *.ko) cp "$moddir/$path" "$target" ;;
        *.ko.xz) xz -dc "$moddir/$path" >"$target" ;;
        *.ko.zst) zstd -qdc "$moddir/$path" >"$target" ;;
        *.ko.gz) gzip -dc "$moddir/$path" >"$target" ;;
        *) die "unknown module format: $path" ;;
    esac
    printf '%s\n' "${path%.ko*}.ko" >>"$root/modules.list"
done
install -m 0755 "$here/init.sh" "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$work/initramfs.gz"
log "kernel $kver, initramfs $(du -h "$work/initramfs.gz" | cut -f1) with ${#order[@]} modules"

# ---------------------------------------------------------------- boot

console="$work/console.log"
append="console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init"
append+=" systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all"
append+=" rl.src=$src rl.venv=$venv rl.user=$user"
log "booting qemu (TCG, 2 CPUs, 2G), timeout ${timeout}s"
boot_started=$SECONDS
qemu_rc=0
timeout --kill-after=10 "$timeout" qemu-system-x86_64 \
    -accel tcg -m 2G -smp 2 -nographic -monitor none -no-reboot -nic none \
    -kernel "$kernel" -initrd "$work/initramfs.gz" -append "$append" \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    </dev/null >"$console" 2>&1 || qemu_rc=$?
vm_seconds=$((SECONDS - boot_started))
tr -d '\r' <"$console" >"$console.txt"

result="$(grep -a -o 'RL-VM-RESULT: rc=[0-9]*' "$console.txt" | tail -n 1 || true)"
init_at="$(grep -a -o 'RL-VM: init started at [0-9.]*s' "$console.txt" | head -n 1 | awk '{print $NF}' || true)"
# The guest's own lines: from init's first line on, minus kernel messages.
sed -n '/RL-VM: init started/,$p' "$console.txt" | sed 's/^.*RL-VM: init started/RL-VM: init started/' |
    grep -av '^\[ *[0-9]*\.[0-9]*\] ' || true
summary="$(grep -aE '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$console.txt" | tail -n 1 |
    sed -E 's/^=+ //; s/ =+$//' || true)"

if [[ -z "$result" ]]; then
    if ((qemu_rc == 124 || qemu_rc == 137)); then
        why="timed out after ${timeout}s"
    else
        why="qemu exited $qemu_rc without a result"
    fi
    log "last console lines:"
    tail -n 40 "$console.txt" >&2
    printf 'cgroupvm: FAILED: %s (VM ran %ss)\n' "$why" "$vm_seconds"
    exit 1
fi
rc="${result##*=}"
printf 'cgroupvm: kernel %s, init after %s, VM %ss, lane %ss\n' \
    "$kver" "${init_at:-?}" "$vm_seconds" "$((SECONDS - started))"
printf 'cgroupvm: %s (rc=%s)\n' "${summary:-no pytest summary}" "$rc"
exit "$rc"
