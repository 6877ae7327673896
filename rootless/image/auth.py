"""Registry credentials: rl's own auth file, then containers' auth.json, then docker's config.json.

All three files share docker's shape::

    {"auths": {"registry.example.com": {"auth": base64("user:password")}, ...}}

with ``identitytoken`` as an alternative to a password (an OAuth2 refresh token). Keys are normalised:
``https://index.docker.io/v1/``, ``index.docker.io`` and ``registry-1.docker.io`` all mean ``docker.io``;
a scheme or a trailing path (``https://host/v1/``) is dropped. containers' files may also key credentials by
``registry/namespace``; the most specific key wins. Credential helpers (``credsStore``, ``credHelpers``)
are not run; rl says so in a debug line and uses what the files themselves hold.

rl's own file is written atomically with mode 0600 and keys in normalised form. Nothing here logs a secret,
and a :class:`Credentials` shows its password as ``***`` in ``repr`` and ``str``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rootless.errors import AuthError, ConfigError, UsageError
from rootless.log import log
from rootless.records import field, record

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({
    "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com",
})
# The key docker itself uses for Docker Hub in ~/.docker/config.json.
DOCKER_HUB_LEGACY_KEY = "https://index.docker.io/v1/"


@record(frozen=True)
class Credentials:
    """A username and password, or an identity (refresh) token. Never printed in full."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""  # the file it came from, for debug lines

    def __repr__(self) -> str:
        secret = "***" if (self.password or self.identity_token) else ""
        kind = "identity_token" if self.identity_token else "password"
        return f"Credentials(username={self.username!r}, {kind}={secret!r}, source={self.source!r})"

    __str__ = __repr__

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def normalize_registry(key: str) -> str:
    """The registry part of an auth-file key or user argument: no scheme, no path, docker.io for the hub."""
    key = key.strip()
    lowered = key.lower()
    for scheme in ("https://", "http://"):
        if lowered.startswith(scheme):
            key = key[len(scheme):]
            lowered = lowered[len(scheme):]
            break
    host = key.split("/", 1)[0]
    if host.lower() in DOCKER_HUB_ALIASES:
        return DOCKER_HUB
    return host


def normalize_key(key: str) -> str:
    """An auth-file key made comparable: the registry normalised, a ``/namespace`` kept (containers' form).

    A key given as a URL (``https://host/v1/``) names only its host, as docker reads it.
    """
    stripped = key.strip()
    if "://" in stripped:
        return normalize_registry(stripped)
    host, slash, rest = stripped.partition("/")
    registry = normalize_registry(host)
    rest = rest.strip("/")
    return f"{registry}/{rest}" if slash and rest else registry


def _decode_entry(entry: object, key: str, path: Path) -> Credentials | None:
    if not isinstance(entry, dict):
        log.debug("auth file %s: entry for %s is not an object, ignored", path, key)
        return None
    token = entry.get("identitytoken") or ""
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    encoded = entry.get("auth") or ""
    if not isinstance(token, str) or not isinstance(encoded, str):
        log.debug("auth file %s: entry for %s has non-string fields, ignored", path, key)
        return None
    if encoded:
        try:
            decoded = base64.b64decode(encoded, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            log.debug("auth file %s: entry for %s has an undecodable auth field, ignored", path, key)
            return None
        user, sep, pw = decoded.partition(":")
        if not sep:
            log.debug("auth file %s: entry for %s has no ':' in its auth field, ignored", path, key)
            return None
        username, password = user, pw
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    if not (password or token):
        return None
    return Credentials(username=username, password=password, identity_token=token, source=str(path))


def read_auth_file(path: Path) -> dict[str, Credentials]:
    """The credentials of one file keyed by normalised key; {} when it is missing.

    Raises ConfigError when the file exists but is not a JSON object (callers that only look
    credentials up catch it and go on with the next file).
    """
    data = _load(path)
    result: dict[str, Credentials] = {}
    if data.get("credsStore"):
        log.debug("auth file %s names credsStore %r; credential helpers are not used by rl", path,
                  data.get("credsStore"))
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict) and helpers:
        log.debug("auth file %s names credHelpers for %s; credential helpers are not used by rl", path,
                  ", ".join(sorted(str(k) for k in helpers)))
    auths = data.get("auths") or {}
    if not isinstance(auths, dict):
        log.debug("auth file %s: auths is not an object, ignored", path)
        return result
    for key, entry in auths.items():
        creds = _decode_entry(entry, str(key), path)
        if creds is not None:
            result.setdefault(normalize_key(str(key)), creds)
    return result


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read auth file {path}: {getattr(e, 'strerror', None) or e}",
                          "fix its permissions or remove it") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"cannot read auth file {path}: invalid JSON at line {e.lineno} column {e.colno}",
                          "fix the file or remove it and log in again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"cannot read auth file {path}: the JSON is not an object",
                          "fix the file or remove it and log in again")
    return data


def default_sources(rl_auth_file: Path | None, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The files to look credentials up in, in order: rl's, containers', docker's."""
    home = Path(environ.get("HOME") or Path.home())
    paths: list[Path] = []
    if rl_auth_file is not None:
        paths.append(Path(rl_auth_file))
    registry_auth_file = environ.get("REGISTRY_AUTH_FILE")
    if registry_auth_file:
        paths.append(Path(registry_auth_file))
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(Path(runtime) / "containers" / "auth.json")
    config_home = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    paths.append(Path(config_home) / "containers" / "auth.json")
    docker_config = environ.get("DOCKER_CONFIG")
    paths.append(Path(docker_config) / "config.json" if docker_config else home / ".docker" / "config.json")
    unique: list[Path] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def _candidate_keys(registry: str, repository: str | None) -> list[str]:
    registry = normalize_registry(registry)
    keys: list[str] = []
    if repository:
        parts = repository.strip("/").split("/")
        for n in range(len(parts), 0, -1):
            keys.append(f"{registry}/{'/'.join(parts[:n])}")
    keys.append(registry)
    return keys


def lookup(
    registry: str,
    repository: str | None = None,
    *,
    rl_auth_file: Path | None = None,
    sources: list[Path] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Credentials | None:
    """Credentials for ``registry`` (and ``repository``), from the first file that has any."""
    keys = _candidate_keys(registry, repository)
    for path in sources if sources is not None else default_sources(rl_auth_file, environ):
        try:
            entries = read_auth_file(path)
        except ConfigError as e:
            log.warning("%s", e.line())
            continue
        for key in keys:
            creds = entries.get(key)
            if creds is not None:
                log.debug("using credentials for %s from %s (key %s)", registry, path, key)
                return creds
    return None


class CredentialResolver:
    """A callable for RegistryClient: registry host -> Credentials, looked up once per host."""

    def __init__(self, rl_auth_file: Path | None = None, environ: Mapping[str, str] | None = None,
                 repository: str | None = None) -> None:
        self.rl_auth_file = rl_auth_file
        self.environ = dict(environ if environ is not None else os.environ)
        self.repository = repository
        self._cache: dict[str, Credentials | None] = {}

    def __call__(self, registry: str) -> Credentials | None:
        key = normalize_registry(registry)
        if key not in self._cache:
            self._cache[key] = lookup(key, self.repository, rl_auth_file=self.rl_auth_file,
                                      environ=self.environ)
        return self._cache[key]

    def __repr__(self) -> str:
        return f"CredentialResolver(rl_auth_file={self.rl_auth_file!r})"


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked_update(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of an auth file between rl processes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock_fd)


def _check_store_path(store_path: Path) -> Path:
    if not str(store_path):
        raise UsageError("no auth file path given", "pass the path of rl's auth file")
    return Path(store_path)


def login(store_path: Path, registry: str, username: str, password: str) -> None:
    """Store ``username``/``password`` for ``registry`` in rl's auth file (mode 0600, atomic)."""
    store_path = _check_store_path(store_path)
    if not username or not password:
        raise UsageError(f"cannot log in to {registry}: username and password are required",
                         "pass --username and --password or --password-stdin")
    if ":" in username:
        raise UsageError(f"cannot log in to {registry}: the username contains ':'",
                         "docker's auth format cannot store such a name")
    key = normalize_key(registry)
    with _locked_update(store_path):
        data = _load(store_path)
        auths = data.get("auths")
        if not isinstance(auths, dict):
            auths = {}
        # Drop entries that mean the same registry under another spelling.
        for old in [k for k in auths if normalize_key(str(k)) == key]:
            del auths[old]
        auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode("ascii")}
        data["auths"] = auths
        _write_atomic(store_path, data)
    log.debug("stored credentials for %s (user %s) in %s", key, username, store_path)


def logout(store_path: Path, registry: str) -> bool:
    """Remove ``registry``'s credentials from rl's auth file; False when there were none."""
    store_path = _check_store_path(store_path)
    key = normalize_key(registry)
    with _locked_update(store_path):
        data = _load(store_path)
        auths = data.get("auths")
        if not isinstance(auths, dict):
            return False
        found = [k for k in auths if normalize_key(str(k)) == key]
        if not found:
            return False
        for k in found:
            del auths[k]
        _write_atomic(store_path, data)
    log.debug("removed credentials for %s from %s", key, store_path)
    return True


def logged_in_registries(store_path: Path) -> list[str]:
    return sorted(read_auth_file(Path(store_path)))


def auth_failed(registry: str, reason: str) -> AuthError:
    """The AuthError for rejected or missing credentials, with the ``rl login`` hint."""
    return AuthError(f"authentication to {registry} failed: {reason}",
                     f"run 'rl login {registry}' with a valid username and password")
