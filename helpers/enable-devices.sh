#!/usr/bin/env bash
# Make /dev/fuse and /dev/net/tun usable by ordinary users. Run as root.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: sudo helpers/enable-devices.sh

Sets /dev/fuse and /dev/net/tun to mode 0666, as stock distributions ship them.
rl needs them as an ordinary user:
  /dev/fuse     fuse-overlayfs (image storage when the kernel's overlayfs can't
                be used in a user namespace) and bindfs-style FUSE mounts;
  /dev/net/tun  passt/pasta and slirp4netns, which give rootless containers
                network access through a TAP device.
Both devices check permissions per open file and are safe for users: this is
the default on Debian, Ubuntu and Fedora. Some VM and container images ship
them 0600; this script puts them back. Creates /dev/net/tun if it is missing.
The change lasts until reboot (udev or the image recreates the nodes): add a
udev rule or rerun this at boot to keep it.
USAGE
}

if (($#)); then
    case "$1" in
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "enable-devices.sh: must run as root (try: sudo $0)" >&2
    exit 1
fi

ensure_node() {  # PATH MAJOR MINOR
    local path="$1" major="$2" minor="$3"
    if [[ ! -e "$path" ]]; then
        mkdir -p "$(dirname "$path")"
        mknod "$path" c "$major" "$minor"
        echo "enable-devices.sh: created $path"
    fi
    if [[ ! -c "$path" ]]; then
        echo "enable-devices.sh: $path exists but is not a character device" >&2
        return 1
    fi
    local mode
    mode="$(stat -c %a "$path")"
    if [[ "$mode" != 666 ]]; then
        chmod 0666 "$path"
        echo "enable-devices.sh: $path mode $mode -> 666"
    else
        echo "enable-devices.sh: $path already 666"
    fi
}

ensure_node /dev/fuse 10 229
ensure_node /dev/net/tun 10 200
