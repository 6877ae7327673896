#!/usr/bin/env bash
# Give a user subordinate UID and GID ranges so rl can map a full ID range
# (through newuidmap/newgidmap from the uidmap package). Run as root.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: sudo helpers/grant-subids.sh USER [COUNT]

Gives USER a range of COUNT (default 65536) subordinate UIDs in /etc/subuid and
GIDs in /etc/subgid. The new range starts at or above 100000 and overlaps no
range already listed in either file. A file in which USER (by name or UID)
already has a range is left alone, so running this again changes nothing.
Uses 'usermod --add-subuids/--add-subgids' when available, else appends a line.
USAGE
}

if (($# < 1 || $# > 2)) || [[ "$1" == -h || "$1" == --help ]]; then
    usage
    (($# >= 1)) && [[ "$1" == -h || "$1" == --help ]] && exit 0
    exit 2
fi
user="$1"
count="${2:-65536}"
if ! [[ "$count" =~ ^[1-9][0-9]*$ ]]; then
    echo "grant-subids.sh: COUNT must be a positive integer, got '$count'" >&2
    exit 2
fi
if [[ "$(id -u)" -ne 0 ]]; then
    echo "grant-subids.sh: must run as root (try: sudo $0 $*)" >&2
    exit 1
fi
if ! uid="$(id -u -- "$user" 2>/dev/null)"; then
    echo "grant-subids.sh: no such user: $user" >&2
    exit 1
fi

for file in /etc/subuid /etc/subgid; do
    if [[ ! -e "$file" ]]; then
        install -m 0644 /dev/null "$file"
    fi
done

# First free start (>= 100000) above every range in both files, so one start
# serves both and nothing overlaps.
next_start="$(awk -F: '
    BEGIN { next_free = 100000 }
    NF >= 3 && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ {
        end = $2 + $3
        if (end > next_free) next_free = end
    }
    END { printf "%d\n", next_free }
' /etc/subuid /etc/subgid)"
last=$((next_start + count - 1))

has_range() {  # FILE: does the user already own a range there?
    awk -F: -v name="$user" -v uid="$uid" '($1 == name || $1 == uid) { found = 1 } END { exit !found }' "$1"
}

usermod_supports() {  # OPTION
    local help
    help="$(usermod --help 2>&1 || true)"
    [[ "$help" == *"$1"* ]]
}

grant() {  # FILE OPTION
    local file="$1" option="$2"
    if has_range "$file"; then
        echo "grant-subids.sh: $user already has a range in $file: $(grep -E "^($user|$uid):" "$file" | head -n 1)"
        return
    fi
    if usermod_supports "$option"; then
        usermod "$option" "${next_start}-${last}" "$user"
    else
        printf '%s:%d:%d\n' "$user" "$next_start" "$count" >>"$file"
    fi
    echo "grant-subids.sh: gave $user $file range $next_start-$last ($count IDs)"
}

grant /etc/subuid --add-subuids
grant /etc/subgid --add-subgids
