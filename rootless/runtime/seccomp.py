"""Compile Docker-format seccomp profiles to classic BPF, without libseccomp.

A profile is the JSON data Docker reads (``defaultAction``, ``defaultErrnoRet``, ``syscalls`` with
``names``, ``action``, ``errnoRet``, ``args`` [{``index``, ``value``, ``valueTwo``, ``op``}],
``includes``/``excludes`` {``caps``, ``arches``, ``minKernel``}). ``compile_profile`` turns it into a
list of ``(code, jt, jf, k)`` instructions that ``Syscalls.seccomp_load`` installs. The program:

1. kills the process for any architecture but the native one;
2. denies x32 system calls (numbers with bit 30 set) with the default action;
3. answers ENOSYS for numbers above the newest call rl knows, so libc falls back to older calls (as runc
   does) instead of failing with EPERM;
4. returns the action of each unconditionally ruled call (a chain of JEQ -> RET);
5. evaluates argument-conditioned rules call by call (rules for one call are OR'd, in profile order; the
   conditions of one rule are AND'd, each a 64-bit comparison done as two 32-bit halves);
6. returns the default action.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from rootless.errors import ConfigError
from rootless.records import record
from rootless.runtime.seccomp_default import DEFAULT_PROFILE, X86_64_SYSCALLS

Instruction = tuple[int, int, int, int]
Program = list[Instruction]

# classic BPF opcodes (linux/bpf_common.h, linux/filter.h)
BPF_LD_W_ABS = 0x20
BPF_ALU_AND_K = 0x54
BPF_JMP_JA = 0x05
BPF_JMP_JEQ_K = 0x15
BPF_JMP_JGT_K = 0x25
BPF_JMP_JGE_K = 0x35
BPF_RET_K = 0x06

# seccomp return values (linux/seccomp.h)
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
EPERM = 1
ENOSYS = 38

# struct seccomp_data
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARGS = 16

BPF_MAXINSNS = 4096


@record(frozen=True)
class Arch:
    audit: int
    names: frozenset[str]  # how profiles name it in includes/excludes "arches" and "architectures"
    syscalls: dict[str, int]


ARCHES: dict[str, Arch] = {
    "x86_64": Arch(AUDIT_ARCH_X86_64, frozenset({"amd64", "x86_64", "SCMP_ARCH_X86_64"}), X86_64_SYSCALLS),
}


def native_arch() -> str:
    return os.uname().machine


def _kernel_version() -> tuple[int, ...]:
    return _version(os.uname().release)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def load_profile(path: str) -> dict[str, Any]:
    """Read a Docker-format JSON profile (``--security-opt seccomp=PATH``)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise ConfigError(f"cannot read seccomp profile {path}: {reason}",
                          "give the path of a docker seccomp JSON file, or --security-opt seccomp=unconfined") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"seccomp profile {path} is not valid JSON: {e.msg.lower()} at line {e.lineno}",
                          "fix the file; docker's default profile is a valid example") from None
    if not isinstance(data, dict):
        raise ConfigError(f"seccomp profile {path}: expected a JSON object",
                          "a docker seccomp profile is an object with defaultAction and syscalls")
    return data


def action_value(action: str, errno: int | None, default_errno: int = EPERM) -> int:
    """The seccomp return value of a Docker action name."""
    match action:
        case "SCMP_ACT_ALLOW":
            return SECCOMP_RET_ALLOW
        case "SCMP_ACT_ERRNO":
            return SECCOMP_RET_ERRNO | ((default_errno if errno is None else errno) & 0xFFFF)
        case "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD":
            return SECCOMP_RET_KILL_THREAD
        case "SCMP_ACT_KILL_PROCESS":
            return SECCOMP_RET_KILL_PROCESS
        case "SCMP_ACT_TRAP":
            return SECCOMP_RET_TRAP
        case "SCMP_ACT_TRACE":
            return SECCOMP_RET_TRACE | ((default_errno if errno is None else errno) & 0xFFFF)
        case "SCMP_ACT_LOG":
            return SECCOMP_RET_LOG
    raise ConfigError(f"seccomp profile: unsupported action {action!r}")


@record(frozen=True)
class Condition:
    index: int
    op: str
    value: int
    value_two: int = 0


@record(frozen=True)
class Rule:
    action: int
    conditions: tuple[Condition, ...]


def _applies(entry: dict[str, Any], caps: set[str], arch: Arch, kernel: tuple[int, ...]) -> bool:
    includes = entry.get("includes") or {}
    excludes = entry.get("excludes") or {}
    if includes.get("caps") and not all(c in caps for c in includes["caps"]):
        return False
    if includes.get("arches") and not arch.names & set(includes["arches"]):
        return False
    if includes.get("minKernel") and kernel < _version(str(includes["minKernel"])):
        return False
    if excludes.get("caps") and any(c in caps for c in excludes["caps"]):
        return False
    return not (excludes.get("arches") and arch.names & set(excludes["arches"]))


def _conditions(entry: dict[str, Any]) -> tuple[Condition, ...]:
    out = []
    for arg in entry.get("args") or []:
        try:
            index = int(arg["index"])
            cond = Condition(index, str(arg["op"]), int(arg.get("value", 0)), int(arg.get("valueTwo", 0)))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"seccomp profile: bad argument condition {arg!r}") from None
        if not 0 <= index < 6:
            raise ConfigError(f"seccomp profile: argument index {index} out of range 0-5")
        if cond.op not in _OPS:
            raise ConfigError(f"seccomp profile: unsupported comparison {cond.op!r}")
        out.append(cond)
    return tuple(out)


def rules_by_syscall(
    profile: dict[str, Any], caps: Iterable[str], arch: Arch, kernel: tuple[int, ...]
) -> dict[int, list[Rule]]:
    """Each known system call number of ``arch`` -> its rules in profile order (unknown names skipped)."""
    capset = {c if c.startswith("CAP_") else f"CAP_{c}" for c in (x.upper() for x in caps)}
    default_errno = int(profile.get("defaultErrnoRet") or EPERM)
    rules: dict[int, list[Rule]] = {}
    for entry in profile.get("syscalls") or []:
        if not _applies(entry, capset, arch, kernel):
            continue
        names = entry.get("names") or ([entry["name"]] if entry.get("name") else [])
        errno = entry.get("errnoRet")
        rule = Rule(action_value(str(entry.get("action")), errno, default_errno), _conditions(entry))
        for name in names:
            number = arch.syscalls.get(name)
            if number is not None:
                rules.setdefault(number, []).append(rule)
    return rules


class _Asm:
    """A tiny assembler: jump targets may be labels, resolved to relative offsets at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int | str, int | str, int | str] | str] = []
        self._n = 0

    def label(self) -> str:
        self._n += 1
        return f"L{self._n}"

    def place(self, label: str) -> None:
        self.items.append(label)

    def op(self, code: int, k: int | str = 0, jt: int | str = 0, jf: int | str = 0) -> None:
        self.items.append((code, jt, jf, k))

    def assemble(self) -> Program:
        positions: dict[str, int] = {}
        pc = 0
        for item in self.items:
            if isinstance(item, str):
                positions[item] = pc
            else:
                pc += 1
        program: Program = []
        for item in self.items:
            if isinstance(item, str):
                continue
            code, jt, jf, k = item
            here = len(program)

            def rel(target: int | str, here: int = here) -> int:
                return positions[target] - here - 1 if isinstance(target, str) else target

            rjt, rjf, rk = rel(jt), rel(jf), rel(k) if code == BPF_JMP_JA else k
            if not (0 <= rjt <= 255 and 0 <= rjf <= 255):
                raise ConfigError("seccomp profile: a rule is too long to compile (jump out of range)")
            assert isinstance(rk, int)
            program.append((code, rjt, rjf, rk & 0xFFFFFFFF))
        return program


_OPS = {"SCMP_CMP_EQ", "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GT", "SCMP_CMP_GE",
        "SCMP_CMP_MASKED_EQ"}


def _emit_condition(asm: _Asm, cond: Condition, fail: str) -> None:
    """Fall through when the 64-bit comparison holds, jump to ``fail`` otherwise."""
    lo_off = OFFSET_ARGS + 8 * cond.index
    hi_off = lo_off + 4
    v_lo, v_hi = cond.value & 0xFFFFFFFF, (cond.value >> 32) & 0xFFFFFFFF
    ok = asm.label()
    match cond.op:
        case "SCMP_CMP_EQ":
            asm.op(BPF_LD_W_ABS, hi_off)
            asm.op(BPF_JMP_JEQ_K, v_hi, 0, fail)
            asm.op(BPF_LD_W_ABS, lo_off)
            asm.op(BPF_JMP_JEQ_K, v_lo, 0, fail)
        case "SCMP_CMP_NE":
            asm.op(BPF_LD_W_ABS, hi_off)
            asm.op(BPF_JMP_JEQ_K, v_hi, 0, ok)
            asm.op(BPF_LD_W_ABS, lo_off)
            asm.op(BPF_JMP_JEQ_K, v_lo, fail, 0)
        case "SCMP_CMP_MASKED_EQ":
            d_lo, d_hi = cond.value_two & 0xFFFFFFFF, (cond.value_two >> 32) & 0xFFFFFFFF
            asm.op(BPF_LD_W_ABS, hi_off)
            asm.op(BPF_ALU_AND_K, v_hi)
            asm.op(BPF_JMP_JEQ_K, d_hi, 0, fail)
            asm.op(BPF_LD_W_ABS, lo_off)
            asm.op(BPF_ALU_AND_K, v_lo)
            asm.op(BPF_JMP_JEQ_K, d_lo, 0, fail)
        case "SCMP_CMP_GT" | "SCMP_CMP_GE":
            # hi > v_hi: true; hi < v_hi: false; equal: compare the low halves
            asm.op(BPF_LD_W_ABS, hi_off)
            asm.op(BPF_JMP_JGT_K, v_hi, ok, 0)
            asm.op(BPF_JMP_JEQ_K, v_hi, 0, fail)
            asm.op(BPF_LD_W_ABS, lo_off)
            asm.op(BPF_JMP_JGT_K if cond.op == "SCMP_CMP_GT" else BPF_JMP_JGE_K, v_lo, 0, fail)
        case "SCMP_CMP_LT" | "SCMP_CMP_LE":
            asm.op(BPF_LD_W_ABS, hi_off)
            asm.op(BPF_JMP_JGT_K, v_hi, fail, 0)
            asm.op(BPF_JMP_JEQ_K, v_hi, 0, ok)
            asm.op(BPF_LD_W_ABS, lo_off)
            # LT fails when lo >= v_lo; LE fails when lo > v_lo
            asm.op(BPF_JMP_JGE_K if cond.op == "SCMP_CMP_LT" else BPF_JMP_JGT_K, v_lo, fail, 0)
        case _:
            raise ConfigError(f"seccomp profile: unsupported comparison {cond.op!r}")
    asm.place(ok)


def _emit_tree(asm: _Asm, ranges: list[tuple[int, int | str]]) -> None:
    """A holds the system call number, within the first range's start and the last range's end:
    jump to the target of the range it falls in (RET an action, or JA to a block)."""
    if len(ranges) == 1:
        target = ranges[0][1]
        if isinstance(target, str):
            asm.op(BPF_JMP_JA, target)
        else:
            asm.op(BPF_RET_K, target)
        return
    middle = len(ranges) // 2
    upper = asm.label()
    asm.op(BPF_JMP_JGE_K, ranges[middle][0], 0, 1)  # number >= the middle range's start: the upper half
    asm.op(BPF_JMP_JA, upper)  # a long jump: JGE's own offsets reach only 255 instructions
    _emit_tree(asm, ranges[:middle])
    asm.place(upper)
    _emit_tree(asm, ranges[middle:])


def compile_profile(
    profile: dict[str, Any],
    caps: Iterable[str] = (),
    arch: str | None = None,
    kernel: tuple[int, ...] | None = None,
) -> Program:
    """Compile ``profile`` for a container holding ``caps`` (names) on ``arch`` (default: this machine)."""
    arch_name = arch or native_arch()
    target = ARCHES.get(arch_name)
    if target is None:
        raise ConfigError(f"seccomp: rl cannot compile profiles for {arch_name} yet",
                          "use --security-opt seccomp=unconfined")
    rules = rules_by_syscall(profile, caps, target, kernel or _kernel_version())
    default = action_value(str(profile.get("defaultAction", "SCMP_ACT_ERRNO")), None,
                           int(profile.get("defaultErrnoRet") or EPERM))
    newest = max(target.syscalls.values())

    asm = _Asm()
    asm.op(BPF_LD_W_ABS, OFFSET_ARCH)
    asm.op(BPF_JMP_JEQ_K, target.audit, 1, 0)
    asm.op(BPF_RET_K, SECCOMP_RET_KILL_PROCESS)
    asm.op(BPF_LD_W_ABS, OFFSET_NR)
    asm.op(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1)
    asm.op(BPF_RET_K, default)
    asm.op(BPF_JMP_JGT_K, newest, 0, 1)
    asm.op(BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS)

    # Every number 0..newest gets a target (an action, or the block of its conditional rules); runs
    # of numbers with the same target become ranges, found by a balanced tree of JGE. A linear chain
    # of ~300 JEQ cost each system call up to 300 instructions, and the kernel runs the filter for
    # every number when it loads it (its allow cache): 1.6 ms of rl run. The tree takes ~18 steps.
    targets: list[int | str] = []
    blocks: list[tuple[str, list[Rule], int]] = []
    for number in range(newest + 1):
        found = rules.get(number)
        if not found:
            targets.append(default)
        elif not found[0].conditions:
            targets.append(found[0].action)
        else:
            leading: list[Rule] = []
            fallback = default
            for rule in found:
                if not rule.conditions:
                    fallback = rule.action
                    break
                leading.append(rule)
            label = asm.label()
            blocks.append((label, leading, fallback))
            targets.append(label)
    ranges: list[tuple[int, int | str]] = []  # (first number, target), in order
    for number, goes_to in enumerate(targets):
        if not ranges or ranges[-1][1] != goes_to:
            ranges.append((number, goes_to))
    _emit_tree(asm, ranges)

    for label, leading, fallback in blocks:
        asm.place(label)
        for rule in leading:
            fail = asm.label()
            for cond in rule.conditions:
                _emit_condition(asm, cond, fail)
            asm.op(BPF_RET_K, rule.action)
            asm.place(fail)
        asm.op(BPF_RET_K, fallback)

    program = asm.assemble()
    if len(program) > BPF_MAXINSNS:
        raise ConfigError(f"seccomp profile compiles to {len(program)} instructions (limit {BPF_MAXINSNS})")
    return program


_DEFAULT_CACHE: dict[tuple[str, ...], Program] = {}


def default_program(caps: Iterable[str]) -> Program:
    """Docker's default profile compiled for ``caps`` (cached per capability set)."""
    key = tuple(sorted(caps))
    program = _DEFAULT_CACHE.get(key)
    if program is None:
        program = _DEFAULT_CACHE[key] = compile_profile(DEFAULT_PROFILE, key)
    return program
