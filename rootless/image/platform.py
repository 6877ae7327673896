"""Platforms (os/architecture/variant) named as Go names them, and how an image's platform matches ours.

Normalisation follows containerd: ``x86_64`` is ``amd64``, ``aarch64`` is ``arm64``, ``arm64/v8`` is plain
``arm64``, ``arm`` without a variant is ``arm/v7``. A host ``arm/v8`` (32-bit userland on a 64-bit CPU) also
runs ``arm/v7``, ``arm/v6`` and ``arm/v5`` images, in that order of preference. ``amd64/v1`` is plain ``amd64``;
images for higher amd64 levels (v2..v4) match only when asked for explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

from rootless.errors import UsageError
from rootless.records import record

_MACHINE_TO_ARCH: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "x86": ("386", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "mips64le": ("mips64le", ""),
    "loongarch64": ("loong64", ""),
}

# Go's GOARCH values (what containerd calls known architectures), after normalisation
_KNOWN_ARCHES = frozenset({
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips", "mipsle", "mips64",
    "mips64le", "mips64p32", "mips64p32le", "ppc", "ppc64", "ppc64le", "riscv", "riscv64", "s390", "s390x",
    "sparc", "sparc64", "wasm",
})

T = TypeVar("T")


@record(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def normalized(self) -> Platform:
        return normalize(self.os, self.architecture, self.variant)


def normalize(os_name: str, architecture: str, variant: str = "") -> Platform:
    os_name = os_name.lower()
    architecture = architecture.lower()
    variant = (variant or "").lower()
    if architecture in _MACHINE_TO_ARCH:
        mapped, implied = _MACHINE_TO_ARCH[architecture]
        architecture = mapped
        variant = variant or implied
    if architecture == "arm64":
        if variant in ("8", "v8", "v8.0"):
            variant = ""
    elif architecture == "arm":
        if not variant:
            variant = "v7"
        elif variant in ("5", "6", "7", "8"):
            variant = "v" + variant
    elif architecture == "amd64" and variant == "v1":
        variant = ""
    return Platform(os_name, architecture, variant)


def host_platform(machine: str | None = None) -> Platform:
    """This host's platform: always linux; the architecture from ``uname -m``."""
    machine = (machine if machine is not None else os.uname().machine).lower()
    arch, variant = _MACHINE_TO_ARCH.get(machine, (machine, ""))
    return normalize("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    """Parse ``--platform os/arch[/variant]`` (also ``arch`` alone, which means linux/arch)."""
    parts = text.strip().split("/")
    if any(not p for p in parts) or not 1 <= len(parts) <= 3:
        raise UsageError(
            f"invalid platform {text!r}: expected os/arch[/variant]",
            "use e.g. --platform linux/amd64 or --platform linux/arm/v7",
        )
    if len(parts) == 1:
        if parts[0].lower() in ("linux", "windows", "darwin", "freebsd"):
            raise UsageError(f"invalid platform {text!r}: an architecture is required",
                             "use e.g. --platform linux/amd64")
        plat = normalize("linux", parts[0])
        if plat.architecture not in _KNOWN_ARCHES:
            # containerd is strict about a lone word too: it cannot tell a typo from an architecture
            raise UsageError(f"invalid platform {text!r}: unknown operating system or architecture",
                             "use e.g. --platform linux/amd64 or --platform linux/arm64")
        return plat
    variant = parts[2] if len(parts) == 3 else ""
    return normalize(parts[0], parts[1], variant)


def compatible(want: Platform) -> list[Platform]:
    """The platforms that run on ``want``, best first."""
    want = want.normalized()
    result = [want]
    if want.architecture == "arm":
        order = ["v8", "v7", "v6", "v5"]
        if want.variant in order:
            for v in order[order.index(want.variant) + 1:]:
                result.append(Platform(want.os, "arm", v))
    return result


def matches(candidate: Platform, want: Platform) -> bool:
    return candidate.normalized() in compatible(want)


def best_match(items: Iterable[tuple[Platform, T]], want: Platform) -> T | None:
    """The item whose platform best matches ``want``: the exact platform first, then fallbacks."""
    ranked = compatible(want)
    best: tuple[int, T] | None = None
    for plat, item in items:
        try:
            rank = ranked.index(plat.normalized())
        except ValueError:
            continue
        if best is None or rank < best[0]:
            best = (rank, item)
    return best[1] if best else None


def format_platforms(platforms: Sequence[Platform]) -> str:
    return ", ".join(str(p) for p in platforms)
