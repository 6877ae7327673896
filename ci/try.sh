#!/usr/bin/env bash
# Try rl on this machine in one command.
#
#   sudo ci/try.sh [--shell] [USER]
#
# As root: installs the host packages rl uses (helpers/install-packages.sh),
# makes sure USER (default rltest; created if missing) has subordinate ID
# ranges (helpers/grant-subids.sh), makes /dev/fuse and /dev/net/tun usable
# (helpers/enable-devices.sh), installs rl into a venv USER can read, starts a
# throwaway local registry with a few test images on it, and then, as USER,
# runs what rl can do today. --shell ends in an interactive shell as USER with
# rl on PATH and $RL_TRY_REGISTRY set. Everything it started stops on exit;
# the packages, the user and its ranges stay.
set -euo pipefail

# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
}

want_shell=0
user=""
while (($#)); do
    case "$1" in
        --shell) want_shell=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; exit 2 ;;
        *)
            [[ -z "$user" ]] || { usage >&2; exit 2; }
            user="$1"
            ;;
    esac
    shift
done
user="${user:-rltest}"

trap ci_cleanup EXIT
ci_require_root

ci_step_begin "host packages"
ci_install_packages --with-demo-tools
ci_step_end

ci_step_begin "user $user and devices"
ci_ensure_user "$user" subids
ci_enable_devices
ci_step_end

ci_step_begin "install rl"
ci_stage_checkout "$user" rl-try
ci_make_venv "$user"
ci_step_end

ci_step_begin "local registry"
ci_start_registry "$user"
(cd "$CI_STAGE" && ci_as_user "$user" -- python -m tests.fixtures push "$CI_REGISTRY")
ci_step_end

# try_rl ARGS...: show and run "rl ARGS..." as the user.
try_rl() {
    printf '\n$ rl %s\n' "$*"
    (cd "$(getent passwd "$user" | cut -d: -f6)" && ci_as_user "$user" RL_TRY_REGISTRY="$CI_REGISTRY" -- rl "$@")
}

registry="$CI_REGISTRY"
printf '\n==== rl as %s (registry: %s)\n' "$user" "$registry"

# ---------------------------------------------------------------- what rl can do
# Add lines here as rl grows. The registry holds (see tests/fixtures/images.py):
#   $registry/rltest/busybox:latest   $registry/rltest/multilayer:latest
#   $registry/rltest/multiarch:latest $registry/rltest/busybox:zstd
try_rl version
try_rl system check
try_rl pull "$registry/rltest/busybox:latest"
try_rl images
try_rl run --rm "$registry/rltest/busybox:latest" sh -c 'echo "hello from a container: $(id)"; cat /proc/self/uid_map'
try_rl run --rm --userns=keep-id "$registry/rltest/busybox:latest" id
try_rl run --rm "$registry/rltest/multilayer:latest" 'ls -ln /data'
# ---------------------------------------------------------------- end

if ((want_shell)); then
    if [[ -t 0 ]]; then
        printf '\nShell as %s; rl is on PATH, RL_TRY_REGISTRY=%s. Exit to stop the registry.\n' "$user" "$registry"
        (cd "$(getent passwd "$user" | cut -d: -f6)" &&
            ci_as_user "$user" RL_TRY_REGISTRY="$registry" -- bash -l) || true
    else
        ci_log "--shell needs a terminal; skipped"
    fi
fi
printf '\ntry.sh: done\n'
