"""Typed errors: what failed, why, a hint for the user or the admin, and docker's exit code.

This module imports nothing from the package, so every layer can raise these and the
one error boundary in ``rootless.cli`` can print them.
"""

from __future__ import annotations

# Exit codes as docker and podman use them (podman libpod/define/exec_codes.go).
EXIT_RL = 125  # rl itself failed
EXIT_CANNOT_INVOKE = 126  # the container command exists but cannot be invoked
EXIT_NOT_FOUND = 127  # the container command was not found


class RLError(Exception):
    """An error rl reports as one line: ``message: hint``."""

    exit_code = EXIT_RL
    default_hint: str | None = None  # the hint when the raiser gives none

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def line(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class UsageError(RLError):
    """The user's arguments are wrong."""


class ConfigError(RLError):
    """A configuration file or setting is invalid."""


class HostError(RLError):
    """The host lacks something rl needs; the hint names the admin's fix."""


class NotFoundError(RLError):
    """No such image, container, volume or network."""


class ConflictError(RLError):
    """The object is in a state that forbids the operation (in use, running, exists)."""


class ImageError(RLError):
    """A reference, manifest, blob or layer is malformed or does not match its digest."""


class RegistryError(RLError):
    """The registry refused, failed, or could not be reached."""


class AuthError(RegistryError):
    """The registry rejected the credentials."""


class StorageError(RLError):
    """The store could not be read or written."""


class RuntimeSetupError(RLError):
    """Setting up the container (namespaces, mounts, security) failed."""


class CannotInvokeError(RLError):
    """The container command exists but cannot be executed (permission denied, not executable)."""

    exit_code = EXIT_CANNOT_INVOKE
    default_hint = "the command must be an executable file in the image (not a directory, mode +x)"


class CommandNotFoundError(RLError):
    """The container command was not found."""

    exit_code = EXIT_NOT_FOUND
    default_hint = "check the command's name, or give its full path in the image"
