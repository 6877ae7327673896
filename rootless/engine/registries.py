"""Where and how to reach registries: plain data the engine makes from the settings.

Kept apart from the pull machinery so that commands which never talk to a registry (``rl run`` of
an image already in the store) import nothing of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.image import reference as refs
from rootless.records import field, record

if TYPE_CHECKING:
    from rootless.image.auth import Credentials
    from rootless.image.registry import RegistryClient


@record
class RegistryOptions:
    """Where and how to reach registries: plain data made from the settings by the engine."""

    search: list[str] = field(default_factory=lambda: [refs.DEFAULT_REGISTRY])
    insecure: list[str] = field(default_factory=list)
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    tls_verify: bool = True
    auth_file: Path | None = None

    def client(self, registry: str, repository: str | None = None, *, pull: bool = True,
               credentials: Credentials | None = None, **kw: Any) -> RegistryClient:
        from rootless.image.auth import CredentialResolver
        from rootless.image.registry import RegistryClient

        insecure = registry in self.insecure or not self.tls_verify
        creds: Any = credentials if credentials is not None else CredentialResolver(
            self.auth_file, repository=repository)
        mirrors = self.mirrors.get(registry, []) if pull else []
        return RegistryClient(registry, insecure=insecure, tls_verify=self.tls_verify, credentials=creds,
                              mirrors=mirrors, **kw)



def mirrors_table(value: Mapping[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in (value or {}).items():
        out[str(k)] = [str(x) for x in (v if isinstance(v, list | tuple) else [v])]
    return out
