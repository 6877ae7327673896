#!/usr/bin/env bash
# Full test run on this host: prepare it as an admin would, then lint, type
# check and run the test suite as an unprivileged user.
#
#   sudo ci/test-host.sh [PYTEST ARGS...]
#
# Needs root (installs packages, creates users, fixes device modes) and a
# Debian/Ubuntu host. Idempotent: run it again and it reuses what is there
# (packages, users, the cached Debian rootfs in /var/cache/rl-ci).
#
# Users: rltest (with subordinate ID ranges) runs the tests; rlnosub (no
# ranges) is handed to tests of single-ID mode. Override with RL_CI_USER and
# RL_CI_NOSUB_USER. Extra arguments go to pytest instead of the default "tests".
# RL_CI_KEEP=1 keeps the staged checkout and registry directory for debugging.
set -euo pipefail

# shellcheck source=ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

test_user="${RL_CI_USER:-rltest}"
nosub_user="${RL_CI_NOSUB_USER:-rlnosub}"
overall=0

pytest_counts=""

# shellcheck disable=SC2317  # run by the EXIT trap
on_exit() {
    local rc=$?
    ci_cleanup
    ci_summary
    if ((rc == 0 && overall == 0)); then
        printf 'ci: PASSED\n'
    else
        printf 'ci: FAILED\n'
    fi
    if [[ -n "$pytest_counts" ]]; then
        printf 'pytest: %s\n' "$pytest_counts"
    fi
}
trap on_exit EXIT

ci_require_root
ci_log "rl CI on $(uname -srm), checkout $RL_CI_ROOT"

ci_step_begin "install packages"
ci_install_packages --with-test-tools
ci_step_end

ci_step_begin "users and devices"
ci_ensure_user "$test_user" subids
ci_ensure_user "$nosub_user" nosubids
ci_enable_devices
ci_step_end

ci_step_begin "stage checkout + venv"
ci_stage_checkout "$test_user" rl-ci
ci_make_venv "$test_user" test
ci_step_end

ci_step_begin "debian rootfs tarball"
ci_debian_tarball
ci_step_end

ci_step_begin "start registry"
ci_start_registry "$test_user"
ci_step_end

ci_step_begin "scenario filesystems"
ci_scenario_filesystems "$test_user"
ci_step_end

cd "$CI_STAGE"

# check NAME COMMAND...: run a check as the test user; record, don't stop.
check() {
    local name="$1"
    shift
    ci_step_begin "$name"
    local rc=0
    ci_as_user "$test_user" -- "$@" || rc=$?
    if ((rc == 0)); then
        ci_step_end ok
    else
        ci_step_end "FAILED (exit $rc)"
        overall=1
    fi
}

check "ruff check" ruff check rootless tests
check "mypy" mypy

pytest_args=("$@")
if ((${#pytest_args[@]} == 0)); then
    pytest_args=(tests)
fi
ci_step_begin "pytest"
pytest_log="$CI_STAGE/pytest.log"
# The rl on PATH is the venv's (installed, non-editable). tests/ is a package,
# so pytest puts the staged checkout on sys.path and "import rootless" in the
# tests reads the same code from there; the report header says which.
set +e
ci_as_user "$test_user" \
    RL_TEST_REGISTRY="$CI_REGISTRY" \
    RL_TEST_DEBIAN_TAR="$CI_DEBIAN_TAR" \
    RL_TEST_NOSUB_USER="$nosub_user" \
    RL_TEST_NOXATTR_FS="$CI_NOXATTR_FS" \
    RL_TEST_FULL_FS="$CI_FULL_FS" \
    RL_TEST_RO_FS="$CI_RO_FS" \
    PYTHONDONTWRITEBYTECODE=1 \
    -- python -m pytest -n auto -p no:cacheprovider -rfEs --durations=10 "${pytest_args[@]}" 2>&1 |
    tee "$pytest_log"
rc="${PIPESTATUS[0]}"
set -e
case "$rc" in
    0) ci_step_end ok ;;
    5) ci_step_end "FAILED (pytest ran no tests)"; overall=1 ;;
    *) ci_step_end "FAILED (pytest exit $rc)"; overall=1 ;;
esac

# Scenario phases (tests/scenarios): the same suite under one host condition each, set up by root
# in namespaces of its own (ci/condition.py) or as the user without subordinate IDs. Only with the
# default arguments: a run for chosen tests skips them.
# scenario NAME USER CONDITION: one phase; its pytest output joins the log.
scenario() {
    local name="$1" user="$2" condition="$3" rc=0
    ci_step_begin "scenario $name"
    local -a CI_USER_WRAP=()
    if [[ "$condition" != none ]]; then
        CI_USER_WRAP=("$RL_CI_PYTHON" "$CI_STAGE/ci/condition.py" "$condition" --)
    fi
    set +e
    ci_as_user "$user" \
        RL_SCENARIO="$name" \
        RL_TEST_REGISTRY="$CI_REGISTRY" \
        PYTHONDONTWRITEBYTECODE=1 \
        -- python -m pytest -p no:cacheprovider -p no:xdist -rfEs tests/scenarios 2>&1 | tee -a "$pytest_log"
    rc="${PIPESTATUS[0]}"
    set -e
    case "$rc" in
        0) ci_step_end ok ;;
        5) ci_step_end "FAILED (no scenario test ran)"; overall=1 ;;
        *) ci_step_end "FAILED (pytest exit $rc)"; overall=1 ;;
    esac
}
if ((${#pytest_args[@]} == 1)) && [[ "${pytest_args[0]}" == tests ]]; then
    scenario nosub "$nosub_user" none
    scenario no-newuidmap "$test_user" no-newuidmap
    scenario newuidmap-not-setuid "$test_user" newuidmap-not-setuid
    scenario userns-limit "$test_user" userns-limit

    # cgroup limits can't be tested on this host's hybrid layout: a qemu VM boots a cgroup v2 kernel
    ci_step_begin "cgroup v2 VM lane"
    if bash "$RL_CI_ROOT/ci/vm/run-lane.sh" --venv "$CI_VENV" --src "$CI_STAGE" --user "$test_user" \
        --timeout 300 2>&1 | tee -a "$pytest_log"; then
        ci_step_end ok
    else
        ci_step_end "FAILED"
        overall=1
    fi
fi

# pytest's counts (every run above), restated as the very last line of the run.
pytest_counts="$(ci_pytest_counts "$pytest_log")"

if ((overall != 0)) && [[ "${RL_CI_KEEP:-0}" != 1 ]]; then
    ci_log "rerun with RL_CI_KEEP=1 to keep $CI_STAGE and the registry log for a look"
fi
exit "$overall"
