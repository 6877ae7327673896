#!/usr/bin/env bash
# Install the host packages rl uses. Run as root (rl itself never needs root).
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: sudo helpers/install-packages.sh [--with-demo-tools | --with-test-tools] [--no-update]

Installs the host packages rl relies on:
  Debian/Ubuntu (apt): uidmap passt slirp4netns nftables fuse-overlayfs fuse3
  RHEL/Fedora   (dnf): shadow-utils passt slirp4netns nftables fuse-overlayfs fuse3

Options:
  --with-demo-tools  Also install what ci/try.sh needs to show rl working:
                     docker-registry busybox-static zstd python3-venv
                     (Debian/Ubuntu only).
  --with-test-tools  Also install what the test suite and CI need
                     (Debian/Ubuntu only): docker-registry busybox-static
                     debootstrap zstd apache2-utils openssl bindfs tmux
                     iperf3 podman runc python3-venv ca-certificates.
  --no-update        Do not run 'apt-get update' first (the caller already did).
  -h, --help         Show this text.

Safe to run again: packages already installed are left as they are.
USAGE
}

with_test_tools=0
with_demo_tools=0
do_update=1
while (($#)); do
    case "$1" in
        --with-test-tools) with_test_tools=1 ;;
        --with-demo-tools) with_demo_tools=1 ;;
        --no-update) do_update=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install-packages.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [[ "$(id -u)" -ne 0 ]]; then
    echo "install-packages.sh: must run as root (try: sudo $0)" >&2
    exit 1
fi

apt_base=(uidmap passt slirp4netns nftables fuse-overlayfs fuse3)
apt_demo=(docker-registry busybox-static zstd python3-venv ca-certificates)
apt_test=(docker-registry busybox-static debootstrap zstd apache2-utils openssl bindfs tmux iperf3
    podman runc python3-venv ca-certificates)
dnf_base=(shadow-utils passt slirp4netns nftables fuse-overlayfs fuse3)

# Stop the system-wide registry service that Debian's docker-registry package starts
# on install: the tests run their own registry as an unprivileged user.
stop_system_registry() {
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/docker-registry ]]; then
        /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
}

# Wait (up to 10 minutes) for another apt/dpkg run to finish instead of failing.
apt_lock_wait=(-o DPkg::Lock::Timeout=600)

apt_update() {
    local try
    for try in 1 2 3 4 5 6; do
        if apt-get "${apt_lock_wait[@]}" update -qq; then
            return 0
        fi
        echo "install-packages.sh: apt-get update failed (try $try), retrying in 10s" >&2
        sleep 10
    done
    return 1
}

if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    packages=("${apt_base[@]}")
    if ((with_test_tools)); then
        packages+=("${apt_test[@]}")
    elif ((with_demo_tools)); then
        packages+=("${apt_demo[@]}")
    fi
    if ((do_update)); then
        echo "install-packages.sh: apt-get update"
        apt_update
    fi
    echo "install-packages.sh: apt-get install ${packages[*]}"
    apt-get "${apt_lock_wait[@]}" install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    if ((with_test_tools || with_demo_tools)); then
        stop_system_registry
    fi
elif command -v dnf >/dev/null 2>&1; then
    if ((with_test_tools || with_demo_tools)); then
        echo "install-packages.sh: --with-test-tools/--with-demo-tools are supported on Debian/Ubuntu only" >&2
        exit 2
    fi
    echo "install-packages.sh: dnf install ${dnf_base[*]}"
    dnf install -y -q "${dnf_base[@]}"
else
    echo "install-packages.sh: neither apt-get nor dnf found; install by hand: ${apt_base[*]}" >&2
    exit 1
fi
echo "install-packages.sh: done"
