"""The seccomp compiler, checked by running its BPF programs in a tiny interpreter on synthetic calls."""

from __future__ import annotations

import errno
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import ConfigError
from rootless.runtime import seccomp
from rootless.runtime.capabilities import DEFAULT_CAPABILITIES
from rootless.runtime.seccomp import (
    AUDIT_ARCH_X86_64,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_KILL_PROCESS,
    Program,
    compile_profile,
)
from rootless.runtime.seccomp_default import DEFAULT_PROFILE, X86_64_SYSCALLS

NR = X86_64_SYSCALLS
EPERM = SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = SECCOMP_RET_ERRNO | errno.ENOSYS
CLONE_NEWUSER = 0x10000000
CLONE_THREAD_FLAGS = 0x3D0F00  # what pthread_create passes
CLONE_FORK_FLAGS = 0x01200011  # what fork() passes: CHILD_SETTID|CHILD_CLEARTID|SIGCHLD


def run_bpf(program: Program, nr: int, args: tuple[int, ...] = (), arch: int = AUDIT_ARCH_X86_64,
            counted: list[int] | None = None) -> int:
    """Evaluate a classic BPF seccomp program on one system call (``counted`` gets the steps taken)."""
    padded = (list(args) + [0] * 6)[:6]
    data = struct.pack("<IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *padded)
    a = 0
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps < 100_000, "loop"
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20:  # LD W ABS
            a = struct.unpack_from("<I", data, k)[0]
        elif code == 0x54:  # ALU AND K
            a &= k
        elif code == 0x05:  # JA
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):
            taken = {0x15: a == k, 0x25: a > k, 0x35: a >= k, 0x45: bool(a & k)}[code]
            pc += jt if taken else jf
        elif code == 0x06:  # RET K
            if counted is not None:
                counted.append(steps)
            return k
        else:
            raise AssertionError(f"unknown opcode {code:#x}")
        assert 0 <= pc < len(program), "jumped out of the program"


@pytest.fixture(scope="module")
def default() -> Program:
    return compile_profile(DEFAULT_PROFILE, DEFAULT_CAPABILITIES, arch="x86_64", kernel=(6, 18))


def test_program_is_well_formed(default: Program) -> None:
    assert 0 < len(default) <= seccomp.BPF_MAXINSNS
    for code, jt, jf, k in default:
        assert 0 <= jt <= 255 and 0 <= jf <= 255 and 0 <= k <= 0xFFFFFFFF
        assert code in (0x20, 0x54, 0x05, 0x15, 0x25, 0x35, 0x06)


@pytest.mark.parametrize("name", ["read", "write", "openat", "execve", "exit_group", "mmap", "wait4",
                                  "rt_sigaction", "fchmodat2", "setresuid", "capset", "prctl", "arch_prctl",
                                  "chroot", "ptrace", "process_vm_readv"])
def test_ordinary_calls_allowed(default: Program, name: str) -> None:
    assert run_bpf(default, NR[name]) == SECCOMP_RET_ALLOW


@pytest.mark.parametrize("name", ["keyctl", "add_key", "request_key", "mount", "umount2", "unshare", "setns",
                                  "sethostname", "bpf", "perf_event_open", "reboot", "init_module",
                                  "kexec_load", "open_by_handle_at", "settimeofday", "syslog", "pivot_root",
                                  "fsopen", "move_mount", "iopl", "acct", "swapon"])
def test_privileged_calls_get_eperm(default: Program, name: str) -> None:
    assert run_bpf(default, NR[name]) == EPERM


def test_cap_sys_admin_unlocks_its_group() -> None:
    program = compile_profile(DEFAULT_PROFILE, [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], "x86_64", (6, 18))
    for name in ("mount", "unshare", "setns", "sethostname", "umount2"):
        assert run_bpf(program, NR[name]) == SECCOMP_RET_ALLOW
    assert run_bpf(program, NR["clone"], (CLONE_NEWUSER,)) == SECCOMP_RET_ALLOW
    assert run_bpf(program, NR["clone3"]) == SECCOMP_RET_ALLOW
    assert run_bpf(program, NR["keyctl"]) == EPERM


def test_capability_gated_groups() -> None:
    def verdict(caps: list[str], name: str) -> int:
        return run_bpf(compile_profile(DEFAULT_PROFILE, caps, "x86_64", (6, 18)), NR[name])

    assert verdict([], "chroot") == EPERM
    assert verdict(["CAP_SYS_CHROOT"], "chroot") == SECCOMP_RET_ALLOW
    assert verdict(["SYS_TIME"], "settimeofday") == SECCOMP_RET_ALLOW  # names without CAP_ work too
    assert verdict(["CAP_SYS_PTRACE"], "kcmp") == SECCOMP_RET_ALLOW
    assert verdict([], "kcmp") == EPERM
    assert verdict(["CAP_SYS_NICE"], "mbind") == SECCOMP_RET_ALLOW
    assert verdict(["CAP_SYSLOG"], "syslog") == SECCOMP_RET_ALLOW
    assert verdict(["CAP_DAC_READ_SEARCH"], "open_by_handle_at") == SECCOMP_RET_ALLOW


def test_clone_without_namespace_flags_only(default: Program) -> None:
    assert run_bpf(default, NR["clone"], (CLONE_FORK_FLAGS,)) == SECCOMP_RET_ALLOW
    assert run_bpf(default, NR["clone"], (CLONE_THREAD_FLAGS,)) == SECCOMP_RET_ALLOW
    assert run_bpf(default, NR["clone"], (CLONE_NEWUSER | 0x11,)) == EPERM
    assert run_bpf(default, NR["clone"], (0x20000000,)) == EPERM  # CLONE_NEWPID
    assert run_bpf(default, NR["clone3"]) == ENOSYS  # libc falls back to clone


def test_personality_values(default: Program) -> None:
    for value in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert run_bpf(default, NR["personality"], (value,)) == SECCOMP_RET_ALLOW
    assert run_bpf(default, NR["personality"], (0x0040000,)) == EPERM  # ADDR_NO_RANDOMIZE
    assert run_bpf(default, NR["personality"], (0x1_0000_0000,)) == EPERM  # high half compared too


def test_socket_families(default: Program) -> None:
    assert run_bpf(default, NR["socket"], (2, 1, 0)) == SECCOMP_RET_ALLOW  # AF_INET
    assert run_bpf(default, NR["socket"], (1, 5, 0)) == SECCOMP_RET_ALLOW  # AF_UNIX
    assert run_bpf(default, NR["socket"], (40, 1, 0)) == EPERM  # AF_VSOCK


def test_architecture_and_number_guards(default: Program) -> None:
    assert run_bpf(default, NR["read"], arch=0x40000003) == SECCOMP_RET_KILL_PROCESS  # i386
    assert run_bpf(default, 0x40000000 | NR["read"]) == EPERM  # x32 ABI
    assert run_bpf(default, max(NR.values()) + 1) == ENOSYS  # newer than rl knows: let libc fall back
    assert run_bpf(default, 0xFFFFFFFF) == EPERM  # nr -1 has bit 30 set: default action


def test_min_kernel_and_arches() -> None:
    old = compile_profile(DEFAULT_PROFILE, [], "x86_64", (4, 4))
    assert run_bpf(old, NR["ptrace"]) == EPERM
    assert run_bpf(old, NR["arch_prctl"]) == SECCOMP_RET_ALLOW
    assert run_bpf(old, NR["modify_ldt"]) == SECCOMP_RET_ALLOW


def profile(*rules: dict[str, Any], default: str = "SCMP_ACT_ERRNO", **extra: Any) -> dict[str, Any]:
    return {"defaultAction": default, "syscalls": list(rules), **extra}


@pytest.mark.parametrize(
    ("op", "value", "passing", "failing"),
    [
        ("SCMP_CMP_EQ", 5, [5], [4, 6, 5 | 1 << 32]),
        ("SCMP_CMP_NE", 5, [4, 6, 5 | 1 << 32], [5]),
        ("SCMP_CMP_LT", 1 << 32 | 5, [0, 1 << 32, 1 << 32 | 4, 0xFFFFFFFF], [1 << 32 | 5, 1 << 33, 2 << 32]),
        ("SCMP_CMP_LE", 1 << 32 | 5, [1 << 32 | 5, 3], [1 << 32 | 6, 2 << 32]),
        ("SCMP_CMP_GT", 1 << 32 | 5, [1 << 32 | 6, 2 << 32], [1 << 32 | 5, 0xFFFFFFFF, 5]),
        ("SCMP_CMP_GE", 1 << 32 | 5, [1 << 32 | 5, 2 << 32 | 1], [1 << 32 | 4, 5]),
    ],
)
def test_comparisons_are_64_bit(op: str, value: int, passing: list[int], failing: list[int]) -> None:
    program = compile_profile(
        profile({"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": value, "op": op}]}),
        arch="x86_64",
    )
    for arg in passing:
        assert run_bpf(program, NR["ioctl"], (0, arg)) == SECCOMP_RET_ALLOW, hex(arg)
    for arg in failing:
        assert run_bpf(program, NR["ioctl"], (0, arg)) == EPERM, hex(arg)


def test_masked_eq_and_multiple_conditions() -> None:
    rule = {"names": ["fcntl"], "action": "SCMP_ACT_ALLOW", "args": [
        {"index": 0, "value": 0xF0, "valueTwo": 0x30, "op": "SCMP_CMP_MASKED_EQ"},
        {"index": 2, "value": 7, "op": "SCMP_CMP_EQ"},
    ]}
    program = compile_profile(profile(rule), arch="x86_64")
    assert run_bpf(program, NR["fcntl"], (0x3F, 0, 7)) == SECCOMP_RET_ALLOW
    assert run_bpf(program, NR["fcntl"], (0x4F, 0, 7)) == EPERM
    assert run_bpf(program, NR["fcntl"], (0x3F, 0, 8)) == EPERM


def test_rules_for_one_call_are_ored_in_order() -> None:
    program = compile_profile(profile(
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "args": [{"index": 1, "value": 9,
                                                                                   "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_LOG"},
    ), arch="x86_64")
    assert run_bpf(program, NR["kill"], (1, 9)) == SECCOMP_RET_ERRNO | 13
    assert run_bpf(program, NR["kill"], (1, 15)) == SECCOMP_RET_ALLOW
    assert run_bpf(program, NR["kill"], (1, 2)) == seccomp.SECCOMP_RET_LOG


def test_default_allow_profile_with_denials() -> None:
    program = compile_profile(profile(
        {"names": ["mkdir", "mkdirat", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 30},
        {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
        default="SCMP_ACT_ALLOW",
    ), arch="x86_64")
    assert run_bpf(program, NR["mkdir"]) == SECCOMP_RET_ERRNO | 30
    assert run_bpf(program, NR["kill"]) == SECCOMP_RET_KILL_PROCESS
    assert run_bpf(program, NR["read"]) == SECCOMP_RET_ALLOW


def test_default_errno_ret() -> None:
    program = compile_profile(profile(defaultErrnoRet=38), arch="x86_64")
    assert run_bpf(program, NR["read"]) == ENOSYS


def test_large_allow_list_spans_several_chains() -> None:
    names = sorted(NR, key=NR.__getitem__)
    program = compile_profile(profile({"names": names, "action": "SCMP_ACT_ALLOW"}), arch="x86_64")
    assert all(run_bpf(program, NR[n]) == SECCOMP_RET_ALLOW for n in names)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (profile(default="SCMP_ACT_NOTIFY"), "unsupported action"),
        (profile({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1,
                                                                           "op": "SCMP_CMP_EQ"}]}), "index 7"),
        (profile({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1,
                                                                           "op": "SCMP_CMP_XX"}]}), "comparison"),
        (profile({"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"value": 1}]}), "bad argument"),
    ],
)
def test_bad_profiles(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compile_profile(bad, arch="x86_64")


def test_unsupported_arch() -> None:
    with pytest.raises(ConfigError, match="cannot compile profiles for riscv64"):
        compile_profile(DEFAULT_PROFILE, arch="riscv64")


def test_load_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(DEFAULT_PROFILE))
    assert seccomp.load_profile(str(path)) == json.loads(json.dumps(DEFAULT_PROFILE))
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        seccomp.load_profile(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        seccomp.load_profile(str(tmp_path / "missing.json"))


def test_default_program_is_cached() -> None:
    assert seccomp.default_program(["CAP_CHOWN"]) is seccomp.default_program(["CAP_CHOWN"])


def test_every_number_decided_as_the_rules_say_in_few_steps(default: Program) -> None:
    """The program is a balanced tree over number ranges: each call is decided as its unconditional
    rule (or the default) says, in a few dozen instructions, not a scan of every allowed number
    (the kernel also runs the filter for each number when it loads it)."""
    arch = seccomp.ARCHES["x86_64"]
    rules = seccomp.rules_by_syscall(DEFAULT_PROFILE, DEFAULT_CAPABILITIES, arch, (6, 18))
    default_action = seccomp.action_value(str(DEFAULT_PROFILE["defaultAction"]), None, errno.EPERM)
    steps: list[int] = []
    for number in range(max(arch.syscalls.values()) + 1):
        found = rules.get(number)
        result = run_bpf(default, number, counted=steps)
        if not found:
            assert result == default_action, number
        elif not found[0].conditions:
            assert result == found[0].action, number
    assert max(steps) <= 40, max(steps)
