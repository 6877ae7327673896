"""An OCI distribution (registry v2) client on the standard library: pull, push, auth, mirrors, retries.

Transport. All HTTP goes through :class:`Transport`: one keep-alive connection per (thread, scheme, host),
so layer downloads in parallel threads each use their own connection. A connection whose response was
not read to the end is closed, never reused.

Schemes. A registry is reached over HTTPS with the certificate verified. ``tls_verify=False`` keeps HTTPS
but skips verification. An ``insecure`` registry is tried as docker does: HTTPS without verification, then
plain HTTP. A loopback registry (``localhost``, ``127.0.0.0/8``, ``::1``) is tried over plain HTTP first and
HTTPS second, since local test and cache registries usually speak HTTP. The first ``GET /v2/`` that answers
decides the scheme for the life of the client; its 401 challenge lets later requests authenticate up front.

Auth. On 401 the ``WWW-Authenticate`` challenge decides: ``Bearer`` runs the token flow (GET realm with
service and scope, Basic credentials when known; POST with the refresh token when the credentials are an
identity token), tokens cached per scope until they expire; ``Basic`` sends the credentials directly.

Retries. Connection errors, 5xx and 429 are retried with exponential backoff (``Retry-After`` honoured up to
``max_retry_after``) up to ``max_attempts`` attempts. A broken blob download resumes with ``Range`` when the
registry showed it supports ranges (``Accept-Ranges: bytes`` or a 206), else restarts from zero after telling
the sink to :meth:`BlobSink.restart`. A blob that fails its digest is downloaded once more from zero before
the ImageError. Redirects (blob storage) are followed; ``Authorization`` is not sent to another host.

Mirrors are tried for pulls before the registry itself, with the same repository path (or under the
mirror's path prefix, ``mirror.example.com/dockerhub``); a failure there (after at most two attempts)
falls back to the next mirror, then the registry, with a debug line.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import IO, Protocol, TypeVar

from rootless import __version__
from rootless.errors import AuthError, ImageError, NotFoundError, RegistryError
from rootless.image.auth import Credentials, auth_failed
from rootless.image.manifest import ACCEPT, MANIFEST_TYPES, MAX_MANIFEST_SIZE, sha256_digest
from rootless.image.reference import SHA256_RE
from rootless.log import log
from rootless.records import field, record

T = TypeVar("T")

USER_AGENT = f"rl/{__version__}"
CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
DEFAULT_TOKEN_LIFETIME = 60  # seconds, as the token spec says when expires_in is absent
MIRROR_ATTEMPTS = 2
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)

CredentialSource = Callable[[str], "Credentials | None"]


# --------------------------------------------------------------------------------------------- sinks


class BlobSink(Protocol):
    """Where :meth:`RegistryClient.fetch_blob` writes a blob's bytes."""

    def write(self, data: bytes) -> None: ...

    def restart(self) -> None:
        """Forget everything written so far: the download starts again from byte 0."""


class FileSink:
    """A sink writing to a seekable binary file (restart truncates it to where it started)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.start = f.tell()

    def write(self, data: bytes) -> None:
        self.f.write(data)

    def restart(self) -> None:
        self.f.seek(self.start)
        self.f.truncate()


class BytesSink:
    """A sink collecting the blob in memory (for configs and small blobs)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data

    def restart(self) -> None:
        self.buf.clear()

    def getvalue(self) -> bytes:
        return bytes(self.buf)


class _CallableSink:
    def __init__(self, fn: Callable[[bytes], object]) -> None:
        self.fn = fn

    def write(self, data: bytes) -> None:
        self.fn(data)

    def restart(self) -> None:
        raise _CannotRestart()


class _CannotRestart(Exception):
    pass


# --------------------------------------------------------------------------------- WWW-Authenticate


@record
class Challenge:
    scheme: str  # lowercase: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_www_authenticate(header: str | None) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value (RFC 7235: quoted values may hold commas)."""
    result: list[Challenge] = []
    if not header:
        return result
    s, i, n = header, 0, len(header)
    current: Challenge | None = None

    def skip_ws(j: int) -> int:
        while j < n and s[j] in " \t":
            j += 1
        return j

    while i < n:
        i = skip_ws(i)
        if i < n and s[i] == ",":
            i += 1
            continue
        start = i
        while i < n and s[i] not in " \t,=":
            i += 1
        token = s[start:i]
        if not token:
            i += 1
            continue
        j = skip_ws(i)
        if j < n and s[j] == "=" and current is not None and not (j + 1 < n and s[j + 1] in "=,"):
            j = skip_ws(j + 1)
            if j < n and s[j] == '"':
                j += 1
                value = []
                while j < n and s[j] != '"':
                    if s[j] == "\\" and j + 1 < n:
                        j += 1
                    value.append(s[j])
                    j += 1
                i = j + 1
                current.params[token.lower()] = "".join(value)
            else:
                start = j
                while j < n and s[j] not in " \t,":
                    j += 1
                current.params[token.lower()] = s[start:j]
                i = j
        elif current is not None and j < n and s[j] == "=":
            # token68 (``Basic abc==``): not a parameter; skip it.
            while i < n and s[i] != ",":
                i += 1
        else:
            current = Challenge(token.lower())
            result.append(current)
            i = j
    return result


# --------------------------------------------------------------------------------------- transport


class _Retryable(Exception):
    """A transient failure: retry after ``retry_after`` seconds (None: the backoff's choice)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _is_loopback(host: str) -> bool:
    host = host.lower().strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost")


def _split_netloc(netloc: str) -> tuple[str, int | None]:
    parsed = urllib.parse.urlsplit("//" + netloc)
    try:
        port = parsed.port
    except ValueError:
        port = None
    return parsed.hostname or netloc, port


class Response:
    """An HTTP response whose connection is dropped unless the body was read to the end."""

    def __init__(self, resp: http.client.HTTPResponse, transport: Transport, key: tuple[str, str, bool],
                 conn: http.client.HTTPConnection, url: str) -> None:
        self._resp = resp
        self._transport = transport
        self._key = key
        self._conn = conn
        self.url = url
        self.status = resp.status
        self.reason = resp.reason

    def header(self, name: str, default: str = "") -> str:
        return self._resp.getheader(name, default) or default

    def read(self, amt: int) -> bytes:
        return self._resp.read(amt)

    @property
    def remaining(self) -> int | None:
        """Bytes the Content-Length promised that have not arrived (None without a length)."""
        return self._resp.length

    def read_all(self, limit: int) -> bytes:
        """The body, at most ``limit`` bytes; more raises ImageError."""
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = self._resp.read(min(CHUNK_SIZE, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                self.close()
                raise ImageError(f"response from {self.url} is larger than {limit} bytes",
                                 "the registry sent something that is not what rl asked for")
        if self._resp.length:
            self.close()
            raise _Retryable(f"connection closed with {self._resp.length} bytes of the body missing")
        return b"".join(chunks)

    def drain(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """Read a small body so the connection can be reused; close it when the body is large."""
        try:
            return self.read_all(limit)
        except (ImageError, _Retryable, OSError, http.client.HTTPException):
            self.close()
            return b""

    def close(self) -> None:
        if not self._resp.isclosed():
            self._transport.discard(self._key, self._conn)
        self._resp.close()


class Transport:
    """Keep-alive HTTP(S) connections, one per (thread, scheme, host, verify); thread-safe."""

    def __init__(self, timeout: float = 30.0, user_agent: str = USER_AGENT, ca_files: Sequence[str] = ()) -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self.ca_files = list(ca_files)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: set[http.client.HTTPConnection] = set()
        self._contexts: dict[bool, ssl.SSLContext] = {}

    def _context(self, verify: bool) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(verify)
            if ctx is None:
                ctx = ssl.create_default_context()
                for ca in self.ca_files:
                    ctx.load_verify_locations(cafile=ca)
                if not verify:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                self._contexts[verify] = ctx
            return ctx

    def _pool(self) -> dict[tuple[str, str, bool], http.client.HTTPConnection]:
        pool: dict[tuple[str, str, bool], http.client.HTTPConnection] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = {}
            self._local.pool = pool
        return pool

    def _connect(self, key: tuple[str, str, bool]) -> http.client.HTTPConnection:
        scheme, netloc, verify = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(netloc, timeout=self.timeout, context=self._context(verify),
                                               blocksize=CHUNK_SIZE)
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=CHUNK_SIZE)
        with self._lock:
            self._all.add(conn)
        self._pool()[key] = conn
        return conn

    def discard(self, key: tuple[str, str, bool], conn: http.client.HTTPConnection) -> None:
        pool = self._pool()
        if pool.get(key) is conn:
            del pool[key]
        with self._lock:
            self._all.discard(conn)
        conn.close()

    def request(self, method: str, url: str, headers: dict[str, str], body: object = None,
                verify: bool = True) -> Response:
        """Send one request; raises OSError / http.client.HTTPException on connection trouble."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise RegistryError(f"cannot request {url}: unsupported scheme {scheme!r}",
                                "registries are reached over http or https")
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        key = (scheme, parts.netloc, verify if scheme == "https" else True)
        headers = {"User-Agent": self.user_agent, **headers}
        pool = self._pool()
        conn = pool.get(key)
        reused = conn is not None
        if conn is None:
            conn = self._connect(key)
        rewind = body.tell() if hasattr(body, "tell") and hasattr(body, "seek") else None
        for attempt in (1, 2):
            try:
                conn.request(method, target, body=body, headers=headers)  # type: ignore[arg-type]
                resp = conn.getresponse()
                return Response(resp, self, key, conn, url)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady):
                self.discard(key, conn)
                # A reused keep-alive connection the server had closed: one fresh try.
                if attempt == 1 and reused and (body is None or isinstance(body, bytes) or rewind is not None):
                    if rewind is not None:
                        body.seek(rewind)  # type: ignore[attr-defined]
                    conn = self._connect(key)
                    continue
                raise
            except BaseException:
                self.discard(key, conn)
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, set()
        for c in conns:
            c.close()


# -------------------------------------------------------------------------------------- endpoints


@record
class _Token:
    value: str
    expires: float


class _Endpoint:
    """One host to talk to (the registry or a mirror): scheme, auth state, repository prefix."""

    def __init__(self, name: str, netloc: str, schemes: list[tuple[str, bool]], prefix: str = "",
                 mirror: bool = False) -> None:
        self.name = name
        self.netloc = netloc
        self.schemes = schemes
        self.prefix = prefix
        self.mirror = mirror
        self.base: str | None = None
        self.verify = True
        self.challenge: Challenge | None = None
        self.tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self.lock = threading.RLock()

    def repo_path(self, repository: str) -> str:
        return f"{self.prefix}/{repository}" if self.prefix else repository

    def __repr__(self) -> str:
        return f"_Endpoint({self.name!r}, base={self.base!r})"


def registry_host(registry: str) -> str:
    """The host serving a registry's API: Docker Hub's is registry-1.docker.io."""
    return "registry-1.docker.io" if registry in ("docker.io", "index.docker.io") else registry


def _schemes_for(netloc: str, insecure: bool, tls_verify: bool, explicit: str = "") -> list[tuple[str, bool]]:
    if explicit == "http":
        return [("http", True)]
    if explicit == "https":
        return [("https", tls_verify and not insecure)]
    if insecure:
        return [("https", False), ("http", True)]
    if _is_loopback(_split_netloc(netloc)[0]):
        return [("http", True), ("https", tls_verify)]
    return [("https", tls_verify)]


def _scopes_pull(repo: str) -> list[str]:
    return [f"repository:{repo}:pull"]


def _scopes_push(repo: str) -> list[str]:
    return [f"repository:{repo}:pull,push"]


def _retry_after(value: str) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime  # only for the rare HTTP-date form

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(body: bytes) -> str:
    """The registry's error codes and messages from a JSON error body, else its first line."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("errors"), list):
        parts = []
        for err in data["errors"]:
            if isinstance(err, dict):
                code, msg = err.get("code", ""), err.get("message", "")
                parts.append(f"{code}: {msg}".strip(": ") if code or msg else "")
        text = "; ".join(p for p in parts if p)
        if text:
            return text
    if isinstance(data, dict) and isinstance(data.get("details"), str):
        return data["details"]
    line = body.decode("utf-8", "replace").strip().splitlines()
    return line[0][:200] if line else ""


def _error_codes(body: bytes) -> set[str]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return set()
    if not isinstance(data, dict) or not isinstance(data.get("errors"), list):
        return set()
    return {str(e.get("code")) for e in data["errors"] if isinstance(e, dict)}


def _describe_os_error(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host ({e.strerror})"
    if isinstance(e, http.client.IncompleteRead):
        return f"connection closed with {e.expected} bytes missing"
    if isinstance(e, http.client.HTTPException):
        return f"bad HTTP response ({type(e).__name__}: {e})"[:200]
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


# ----------------------------------------------------------------------------------------- client


class _ProgressReader:
    """A file-like body for uploads: reads at most ``size`` bytes and reports progress."""

    def __init__(self, f: IO[bytes], size: int, progress: Callable[[int, int], None] | None) -> None:
        self.f = f
        self.size = size
        self.done = 0
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.done
        if left <= 0:
            return b""
        data = self.f.read(left if n < 0 else min(n, left))
        self.done += len(data)
        if self.progress is not None and data:
            self.progress(self.done, self.size)
        return data


class RegistryClient:
    """A client for one registry (and its pull mirrors). Thread-safe; share one per pull or push."""

    def __init__(
        self,
        registry: str,
        insecure: bool = False,
        tls_verify: bool = True,
        credentials: CredentialSource | Credentials | None = None,
        mirrors: Sequence[str] = (),
        user_agent: str = USER_AGENT,
        timeout: float = 30.0,
        *,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        ca_files: Sequence[str] = (),
        transport: Transport | None = None,
    ) -> None:
        self.registry = registry
        self.insecure = insecure
        self.tls_verify = tls_verify
        self._credentials = credentials
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.transport = transport or Transport(timeout=timeout, user_agent=user_agent, ca_files=ca_files)
        netloc = registry_host(registry)
        self._main = _Endpoint(registry, netloc, _schemes_for(netloc, insecure, tls_verify))
        self._mirrors = [self._mirror_endpoint(m) for m in mirrors if m]
        self._creds_cache: dict[str, Credentials | None] = {}
        self._creds_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, mirrors={[m.name for m in self._mirrors]})"

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- setup helpers

    def _mirror_endpoint(self, mirror: str) -> _Endpoint:
        explicit = ""
        text = mirror.strip().rstrip("/")
        for scheme in ("http", "https"):
            if text.lower().startswith(scheme + "://"):
                explicit, text = scheme, text[len(scheme) + 3:]
        netloc, _, prefix = text.partition("/")
        prefix = prefix.strip("/")
        if prefix.startswith("v2"):  # "host/v2/" is docker's spelling of no prefix
            prefix = prefix[2:].strip("/")
        return _Endpoint(mirror, netloc, _schemes_for(netloc, self.insecure, self.tls_verify, explicit),
                         prefix=prefix, mirror=True)

    def _creds(self, ep: _Endpoint) -> Credentials | None:
        source = self._credentials
        if source is None or isinstance(source, Credentials):
            return source if not ep.mirror else None
        key = ep.netloc if ep.mirror else self.registry
        with self._creds_lock:
            if key not in self._creds_cache:
                self._creds_cache[key] = source(key)
            return self._creds_cache[key]

    def _pull_endpoints(self) -> list[_Endpoint]:
        return [*self._mirrors, self._main]

    # -------------------------------------------------------------------------------- plumbing

    def _attempts(self, ep: _Endpoint) -> int:
        """Attempts per operation: a mirror gets at most two before rl falls back to the registry."""
        return min(self.max_attempts, MIRROR_ATTEMPTS) if ep.mirror else self.max_attempts

    def _retrying(self, what: str, fn: Callable[[], T], attempts: int | None = None) -> T:
        limit = attempts or self.max_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except _Retryable as e:
                if attempt >= limit:
                    raise RegistryError(
                        f"{what} failed after {attempt} attempts: {e.reason}",
                        "the registry or the network is having trouble; try again later",
                    ) from None
                self._sleep(what, e, attempt, limit)

    def _sleep(self, what: str, e: _Retryable, attempt: int, limit: int) -> None:
        delay = min(self.backoff * (2 ** (attempt - 1)), self.max_backoff)
        if e.retry_after is not None:
            delay = min(e.retry_after, self.max_retry_after)
        log.debug("%s: %s; retry %d of %d in %.1fs", what, e.reason, attempt, limit - 1, delay)
        if delay > 0:
            time.sleep(delay)

    def _send(self, method: str, url: str, headers: dict[str, str], body: object, verify: bool) -> Response:
        try:
            return self.transport.request(method, url, headers, body, verify=verify)
        except ssl.SSLCertVerificationError as e:
            host = urllib.parse.urlsplit(url).netloc
            raise RegistryError(
                f"tls verification of {host} failed: {_describe_os_error(e)}",
                "install the registry's CA certificate, or use --tls-verify=false if you trust the network",
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Retryable(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {_describe_os_error(e)}") from None

    def _base(self, ep: _Endpoint) -> str:
        """The endpoint's ``scheme://host``, found by pinging /v2/ over each allowed scheme in turn."""
        if ep.base is not None:
            return ep.base
        with ep.lock:
            if ep.base is not None:
                return ep.base
            failures: list[str] = []
            tls_error: ssl.SSLCertVerificationError | None = None
            for scheme, verify in ep.schemes:
                url = f"{scheme}://{ep.netloc}/v2/"
                try:
                    resp = self.transport.request("GET", url, {}, None, verify=verify)
                except ssl.SSLCertVerificationError as e:
                    tls_error = e
                    failures.append(f"{scheme}: {_describe_os_error(e)}")
                    continue
                except (OSError, http.client.HTTPException) as e:
                    failures.append(f"{scheme}: {_describe_os_error(e)}")
                    continue
                body = resp.drain()
                if resp.status == 400 and b"HTTPS" in body:
                    failures.append(f"{scheme}: the server speaks https")
                    continue
                if resp.status == 401:
                    found = parse_www_authenticate(resp.header("WWW-Authenticate"))
                    ep.challenge = found[0] if found else None
                log.debug("registry %s: using %s (GET /v2/ answered %d)", ep.name, url, resp.status)
                ep.base = f"{scheme}://{ep.netloc}"
                ep.verify = verify
                return ep.base
            if tls_error is not None:
                # Not transient: retrying cannot make the certificate valid.
                raise RegistryError(
                    f"tls verification of {ep.netloc} failed: {_describe_os_error(tls_error)}",
                    "install the registry's CA certificate, or use --tls-verify=false if you trust the network",
                )
            raise _Retryable(f"cannot reach {ep.name}: {'; '.join(failures)}")

    def _url(self, ep: _Endpoint, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self._base(ep) + path_or_url

    def _auth_header(self, ep: _Endpoint, scopes: list[str]) -> str | None:
        ch = ep.challenge
        if ch is None:
            return None
        if ch.scheme == "bearer":
            return "Bearer " + self._token(ep, ch, scopes)
        if ch.scheme == "basic":
            creds = self._creds(ep)
            if creds is not None and creds.password:
                return creds.basic_header()
        return None

    def _token(self, ep: _Endpoint, ch: Challenge, scopes: list[str]) -> str:
        realm = ch.realm
        if not realm.startswith(("http://", "https://")):
            raise RegistryError(f"registry {ep.name} sent an unusable auth realm {realm!r}",
                                "the registry's token service is misconfigured; tell its admin")
        wanted = list(scopes)
        extra = ch.params.get("scope", "")
        for s in extra.split(" "):
            if s and s not in wanted:
                wanted.append(s)
        service = ch.params.get("service", "")
        key = (realm, service, tuple(sorted(wanted)))
        with ep.lock:
            tok = ep.tokens.get(key)
            if tok is not None and tok.expires > time.time() + 5:
                return tok.value
            creds = self._creds(ep)
            params: list[tuple[str, str]] = []
            if service:
                params.append(("service", service))
            headers: dict[str, str] = {}
            body: bytes | None = None
            if creds is not None and creds.identity_token:
                method, url = "POST", realm
                form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                        ("client_id", "rl"), *params, ("scope", " ".join(wanted))]
                body = urllib.parse.urlencode(form).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                method = "GET"
                params += [("scope", s) for s in wanted]
                url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
                if creds is not None and creds.password:
                    headers["Authorization"] = creds.basic_header()
            verify = self.tls_verify and not self.insecure
            resp = self._send(method, url, headers, body, verify)
            data = resp.drain(1024 * 1024)
            who = f"user {creds.username!r}" if creds is not None and creds.username else "anonymous"
            log.debug("token for %s from %s (%s, scope %s): %d", ep.name, realm, who, " ".join(wanted),
                      resp.status)
            if resp.status in (401, 403):
                if creds is None:
                    raise auth_failed(ep.name, "the registry requires credentials")
                raise auth_failed(ep.name, f"the token service rejected the credentials of {who}")
            if resp.status in RETRY_STATUSES:
                raise _Retryable(f"token service {realm} answered {resp.status}",
                                 _retry_after(resp.header("Retry-After")))
            if resp.status != 200:
                raise RegistryError(f"token service of {ep.name} answered {resp.status}: {_error_text(data)}",
                                    "the registry's token service failed; try again later")
            try:
                answer = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                answer = None
            value = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
            if not isinstance(value, str) or not value:
                raise RegistryError(f"token service of {ep.name} sent no token",
                                    "the registry's token service is misconfigured; tell its admin")
            assert isinstance(answer, dict)
            lifetime = answer.get("expires_in")
            if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
                lifetime = DEFAULT_TOKEN_LIFETIME
            ep.tokens[key] = _Token(value, time.time() + float(lifetime))
            return value

    def _drop_token(self, ep: _Endpoint, sent: str | None) -> None:
        if not sent or not sent.startswith("Bearer "):
            return
        value = sent[len("Bearer "):]
        with ep.lock:
            for k in [k for k, t in ep.tokens.items() if t.value == value]:
                del ep.tokens[k]

    def _open(self, ep: _Endpoint, method: str, path_or_url: str, scopes: list[str],
              headers: dict[str, str] | None = None, body: object = None) -> Response:
        """One request with auth (one 401 round) and redirects; raises _Retryable on connection trouble."""
        url = self._url(ep, path_or_url)
        rewind = body.tell() if hasattr(body, "tell") and hasattr(body, "seek") else None
        resp: Response | None = None
        sent: str | None = None
        for auth_round in (0, 1):
            hdrs = dict(headers or {})
            sent = self._auth_header(ep, scopes)
            if sent:
                hdrs["Authorization"] = sent
            resp = self._send(method, url, hdrs, body, ep.verify)
            if resp.status != 401 or auth_round == 1:
                break
            found = parse_www_authenticate(resp.header("WWW-Authenticate"))
            resp.drain()
            usable = [c for c in found if c.scheme in ("bearer", "basic")]
            if not usable:
                break
            new = usable[0]
            if new.scheme == "basic" and (self._creds(ep) is None or (sent or "").startswith("Basic ")):
                ep.challenge = new
                break
            self._drop_token(ep, sent)
            ep.challenge = new
            if body is not None and not isinstance(body, bytes):
                if rewind is None:
                    break
                body.seek(rewind)  # type: ignore[attr-defined]
        assert resp is not None
        if resp.status == 401:
            resp.drain()
            raise self._unauthorized(ep, scopes)
        hops = 0
        origin = urllib.parse.urlsplit(url).netloc
        while resp.status in REDIRECT_STATUSES and method in ("GET", "HEAD"):
            location = resp.header("Location")
            resp.drain()
            if not location or hops >= MAX_REDIRECTS:
                raise RegistryError(f"{ep.name} redirected {method} {url} too often or nowhere",
                                    "the registry is misconfigured; tell its admin")
            hops += 1
            url = urllib.parse.urljoin(url, location)
            hdrs = dict(headers or {})
            same_host = urllib.parse.urlsplit(url).netloc == origin
            if same_host and sent:
                hdrs["Authorization"] = sent
            log.debug("following redirect to %s%s", url.split("?", 1)[0],
                      "" if same_host else " (without credentials)")
            verify = ep.verify if same_host else (self.tls_verify and not self.insecure)
            resp = self._send(method, url, hdrs, None, verify)
        return resp

    def _unauthorized(self, ep: _Endpoint, scopes: list[str]) -> AuthError:
        creds = self._creds(ep)
        what = ", ".join(s.split(":", 1)[1] if ":" in s else s for s in scopes)
        if creds is None:
            return auth_failed(ep.name, f"access to {what} needs credentials, or the repository does not exist")
        who = f"user {creds.username!r}" if creds.username else "the identity token"
        return auth_failed(ep.name, f"the registry rejected {who} for {what}")

    def _check(self, ep: _Endpoint, resp: Response, what: str) -> None:
        """Raise the right error for a non-success status (retryable ones as _Retryable)."""
        body = resp.drain()
        if resp.status in RETRY_STATUSES:
            raise _Retryable(f"{ep.name} answered {resp.status} {resp.reason}".strip(),
                             _retry_after(resp.header("Retry-After")))
        detail = _error_text(body) or resp.reason
        if resp.status == 403:
            raise AuthError(f"{what} was denied: {detail}",
                            f"check that your account may do this; run 'rl login {ep.name}' to change it")
        if resp.status == 404:
            raise NotFoundError(f"{what} failed: not found ({detail})",
                                "check the repository name, tag and digest")
        raise RegistryError(f"{what} failed: {resp.status} {detail}".strip(),
                            "the registry refused the request; check the reference and try again")

    def _on_endpoints(self, what: str, fn: Callable[[_Endpoint], T]) -> T:
        """Try the mirrors, then the registry; failures on a mirror fall back with a debug line."""
        for ep in self._pull_endpoints():
            if not ep.mirror:
                return self._retrying(what, functools.partial(fn, ep))
            try:
                return self._retrying(f"{what} (mirror {ep.name})", functools.partial(fn, ep), self._attempts(ep))
            except (RegistryError, NotFoundError, ImageError) as e:
                log.debug("mirror %s failed for %s: %s; falling back", ep.name, what, e.message)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------------------------- pulling

    def ping(self) -> None:
        """Check that the registry answers (and learn its auth challenge)."""
        self._retrying(f"contacting {self.registry}", lambda: self._base(self._main))

    def get_manifest(self, repo: str, ref: str, accept: Sequence[str] | str | None = None,
                     ) -> tuple[bytes, str, str]:
        """The manifest ``repo:ref`` (tag or digest): (body, media type, sha256 digest of the body).

        The body is verified against ``ref`` when it is a digest and against the registry's
        Docker-Content-Digest when it sent one.
        """
        accept_value = ", ".join(accept) if isinstance(accept, list | tuple) else (accept or ACCEPT)
        assert isinstance(accept_value, str)
        where = f"{self.registry}/{repo}{'@' if SHA256_RE.match(ref) else ':'}{ref}"

        def attempt(ep: _Endpoint) -> tuple[bytes, str, str]:
            path = f"/v2/{ep.repo_path(repo)}/manifests/{ref}"
            resp = self._open(ep, "GET", path, _scopes_pull(ep.repo_path(repo)), {"Accept": accept_value})
            if resp.status == 404:
                body = resp.drain()
                raise NotFoundError(f"manifest for {where} not found: {_error_text(body) or 'manifest unknown'}",
                                    "check the image name and tag")
            if resp.status != 200:
                self._check(ep, resp, f"getting the manifest of {where}")
            try:
                body = resp.read_all(MAX_MANIFEST_SIZE)
            except (OSError, http.client.HTTPException) as e:
                resp.close()
                raise _Retryable(f"reading the manifest from {ep.name}: {_describe_os_error(e)}") from None
            digest = sha256_digest(body)
            if SHA256_RE.match(ref) and digest != ref:
                raise ImageError(f"manifest {ref} from {ep.name} does not match its digest: got {digest}",
                                 "the registry or a proxy returned different content; try again")
            sent_digest = resp.header("Docker-Content-Digest")
            if sent_digest.startswith("sha256:") and sent_digest != digest:
                raise ImageError(
                    f"manifest for {where} from {ep.name} does not match the registry's digest "
                    f"{sent_digest}: got {digest}",
                    "the registry or a proxy returned different content; try again")
            media_type = resp.header("Content-Type").split(";", 1)[0].strip()
            if media_type not in MANIFEST_TYPES:
                try:
                    sniffed = json.loads(body).get("mediaType")
                except (ValueError, UnicodeDecodeError, AttributeError):
                    sniffed = None
                if isinstance(sniffed, str) and sniffed:
                    media_type = sniffed
            return body, media_type, digest

        return self._on_endpoints(f"getting the manifest of {where}", attempt)

    def head_manifest(self, repo: str, ref: str, accept: str = ACCEPT) -> tuple[str, str, int] | None:
        """(digest, media type, size) of ``repo:ref`` without its body, or None when it does not exist."""
        where = f"{self.registry}/{repo}:{ref}"

        def attempt(ep: _Endpoint) -> tuple[str, str, int] | None:
            path = f"/v2/{ep.repo_path(repo)}/manifests/{ref}"
            resp = self._open(ep, "HEAD", path, _scopes_pull(ep.repo_path(repo)), {"Accept": accept})
            if resp.status == 404:
                resp.drain()
                return None
            if resp.status != 200:
                self._check(ep, resp, f"checking the manifest of {where}")
            digest = resp.header("Docker-Content-Digest")
            length = resp.header("Content-Length")
            resp.drain()
            media_type = resp.header("Content-Type").split(";", 1)[0].strip()
            return digest, media_type, int(length) if length.isdigit() else -1

        return self._on_endpoints(f"checking the manifest of {where}", attempt)

    def fetch_blob(self, repo: str, digest: str, size: int, sink: BlobSink | Callable[[bytes], object],
                   progress: Callable[[int, int], None] | None = None) -> None:
        """Stream blob ``digest`` of ``size`` bytes into ``sink``, verifying size and digest.

        ``sink`` is a :class:`BlobSink` (``write`` and ``restart``) or a plain callable taking bytes;
        a plain callable cannot be restarted, so a broken transfer then resumes only where the registry
        supports ranges. ``progress(done, total)`` is called after each chunk.
        """
        if not SHA256_RE.match(digest):
            raise ImageError(f"cannot fetch blob {digest!r} from {self.registry}/{repo}: not a sha256 digest",
                             "only sha256 digests are supported")
        restartable = hasattr(sink, "write") and hasattr(sink, "restart")
        target: BlobSink = sink if restartable else _CallableSink(sink)  # type: ignore[assignment,arg-type]
        state = _BlobState(size=size)
        last: Exception | None = None
        for ep in self._pull_endpoints():
            try:
                self._fetch_blob_from(ep, repo, digest, target, state, progress)
                return
            except (RegistryError, NotFoundError, ImageError) as e:
                if not ep.mirror:
                    raise
                log.debug("mirror %s failed for blob %s: %s; falling back", ep.name, digest, e.message)
                last = e
        raise AssertionError(f"unreachable {last}")

    def _fetch_blob_from(self, ep: _Endpoint, repo: str, digest: str, sink: BlobSink, state: _BlobState,
                         progress: Callable[[int, int], None] | None) -> None:
        path = f"/v2/{ep.repo_path(repo)}/blobs/{digest}"
        scopes = _scopes_pull(ep.repo_path(repo))
        what = f"downloading blob {digest} from {ep.name}/{ep.repo_path(repo)}"
        state.range_ok = False
        attempt = 0
        refetched_for_digest = False
        while True:
            attempt += 1
            try:
                headers: dict[str, str] = {}
                if state.offset and state.range_ok:
                    headers["Range"] = f"bytes={state.offset}-"
                elif state.offset:
                    self._restart(state, sink, what)
                resp = self._open(ep, "GET", path, scopes, headers)
                if resp.status == 206 and state.offset:
                    start = _content_range_start(resp.header("Content-Range"))
                    if start != state.offset:
                        resp.close()
                        state.range_ok = False
                        raise _Retryable(f"the registry resumed at byte {start}, not {state.offset}")
                    log.debug("%s: resuming at byte %d", what, state.offset)
                elif resp.status in (200, 206):
                    if state.offset:
                        log.debug("%s: the registry ignored the range; starting over", what)
                        self._restart(state, sink, what)
                elif resp.status == 404:
                    body = resp.drain()
                    raise NotFoundError(f"blob {digest} not found in {ep.name}/{ep.repo_path(repo)}: "
                                        f"{_error_text(body) or 'blob unknown'}",
                                        "the image is incomplete in the registry; ask its publisher to push it again")
                else:
                    self._check(ep, resp, what)
                if resp.status == 206 or resp.header("Accept-Ranges").lower() == "bytes":
                    state.range_ok = True
                self._stream(resp, sink, state, digest, ep, progress)
                got = "sha256:" + state.hasher.hexdigest()
                if got == digest:
                    return
                if not refetched_for_digest and self._can_restart(sink):
                    refetched_for_digest = True
                    log.debug("%s: content digest %s does not match; downloading it again", what, got)
                    self._restart(state, sink, what)
                    continue
                raise ImageError(
                    f"blob {digest} from {ep.name}/{ep.repo_path(repo)} does not match its digest: "
                    f"expected {digest}, got {got}",
                    "the registry or a proxy corrupted it; pull again, or tell the registry's admin",
                )
            except _Retryable as e:
                if attempt >= self._attempts(ep):
                    raise RegistryError(f"{what} failed after {attempt} attempts: {e.reason}",
                                        "the registry or the network is having trouble; try again later") from None
                self._sleep(what, e, attempt, self._attempts(ep))

    @staticmethod
    def _can_restart(sink: BlobSink) -> bool:
        return not isinstance(sink, _CallableSink)

    @staticmethod
    def _restart(state: _BlobState, sink: BlobSink, what: str) -> None:
        if state.offset == 0:
            return
        try:
            sink.restart()
        except _CannotRestart:
            raise RegistryError(f"{what} broke after {state.offset} bytes and cannot be resumed",
                                "the registry does not support ranges; pull again") from None
        state.offset = 0
        state.hasher = hashlib.sha256()

    def _stream(self, resp: Response, sink: BlobSink, state: _BlobState, digest: str, ep: _Endpoint,
                progress: Callable[[int, int], None] | None) -> None:
        try:
            while True:
                chunk = resp.read(CHUNK_SIZE)
                if not chunk:
                    break
                if state.size >= 0 and state.offset + len(chunk) > state.size:
                    resp.close()
                    raise ImageError(
                        f"blob {digest} from {ep.name} is larger than its size: expected {state.size} bytes, "
                        f"got more than {state.offset + len(chunk) - 1}",
                        "the registry or a proxy returned different content; pull again",
                    )
                state.hasher.update(chunk)
                sink.write(chunk)
                state.offset += len(chunk)
                if progress is not None:
                    progress(state.offset, state.size)
        except (OSError, http.client.HTTPException) as e:
            resp.close()
            raise _Retryable(f"transfer broke at byte {state.offset}: {_describe_os_error(e)}") from None
        if resp.remaining:
            resp.close()
            raise _Retryable(f"transfer broke at byte {state.offset}: {resp.remaining} bytes missing")
        if state.size >= 0 and state.offset < state.size:
            # The registry sent a complete body, just a shorter one: not a broken transfer.
            raise ImageError(
                f"blob {digest} from {ep.name} is smaller than its size: expected {state.size} bytes, "
                f"got {state.offset}",
                "the registry or a proxy returned different content; pull again",
            )

    def fetch_blob_bytes(self, repo: str, digest: str, size: int, max_size: int = 8 * 1024 * 1024) -> bytes:
        """A small blob (an image config) in memory, verified."""
        if size > max_size:
            raise ImageError(f"blob {digest} in {self.registry}/{repo} is too large: {size} bytes (limit {max_size})",
                             "the image config is not what rl expects")
        sink = BytesSink()
        self.fetch_blob(repo, digest, size, sink)
        return sink.getvalue()

    def list_tags(self, repo: str, page_size: int = 1000) -> list[str]:
        """Every tag of ``repo`` (following Link pagination)."""
        tags: list[str] = []
        ep = self._main
        path: str | None = f"/v2/{repo}/tags/list?n={page_size}"
        while path:
            page_path = path

            def attempt(p: str = page_path) -> tuple[list[str], str | None]:
                resp = self._open(ep, "GET", p, _scopes_pull(repo))
                if resp.status != 200:
                    self._check(ep, resp, f"listing tags of {self.registry}/{repo}")
                body = resp.read_all(16 * 1024 * 1024)
                try:
                    data = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    data = None
                if not isinstance(data, dict):
                    raise RegistryError(f"tag list of {self.registry}/{repo} is not JSON",
                                        "the registry answered nonsense; try again later")
                return [t for t in data.get("tags") or [] if isinstance(t, str)], _next_link(resp.header("Link"))

            page, path = self._retrying(f"listing tags of {self.registry}/{repo}", attempt)
            tags.extend(page)
        return tags

    # ---------------------------------------------------------------------------------- pushing

    def blob_exists(self, repo: str, digest: str, push: bool = True) -> bool:
        """Whether the registry has blob ``digest`` in ``repo`` (HEAD)."""
        ep = self._main
        scopes = _scopes_push(repo) if push else _scopes_pull(repo)

        def attempt() -> bool:
            resp = self._open(ep, "HEAD", f"/v2/{repo}/blobs/{digest}", scopes)
            resp.drain()
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            self._check(ep, resp, f"checking blob {digest} in {self.registry}/{repo}")
            return False

        return self._retrying(f"checking blob {digest} in {self.registry}/{repo}", attempt)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Mount blob ``digest`` from ``from_repo`` into ``repo`` without uploading; False when not possible."""
        ep = self._main
        scopes = [*_scopes_push(repo), *_scopes_pull(from_repo)]
        query = urllib.parse.urlencode({"mount": digest, "from": from_repo})

        def attempt() -> bool:
            resp = self._open(ep, "POST", f"/v2/{repo}/blobs/uploads/?{query}", scopes,
                              {"Content-Length": "0"}, b"")
            if resp.status == 201:
                resp.drain()
                return True
            if resp.status == 202:
                location = resp.header("Location")
                resp.drain()
                if location:  # the registry opened an upload session instead; cancel it
                    try:
                        self._open(ep, "DELETE", urllib.parse.urljoin(self._base(ep), location), scopes).drain()
                    except (RegistryError, _Retryable) as e:
                        log.debug("cancelling upload session after a refused mount: %s", e)
                return False
            self._check(ep, resp, f"mounting blob {digest} from {from_repo} into {self.registry}/{repo}")
            return False

        return self._retrying(f"mounting blob {digest} into {self.registry}/{repo}", attempt)

    def upload_blob(self, repo: str, digest: str, fileobj: IO[bytes], size: int,
                    progress: Callable[[int, int], None] | None = None, chunk_size: int | None = None) -> None:
        """Upload ``size`` bytes of ``fileobj`` as blob ``digest``: one PUT, or PATCH chunks of ``chunk_size``.

        A failed upload is retried from the start when ``fileobj`` is seekable.
        """
        if not SHA256_RE.match(digest):
            raise ImageError(f"cannot upload blob {digest!r}: not a sha256 digest", "only sha256 is supported")
        ep = self._main
        scopes = _scopes_push(repo)
        try:
            start: int | None = fileobj.tell() if fileobj.seekable() else None
        except (OSError, AttributeError):
            start = None
        what = f"uploading blob {digest} to {self.registry}/{repo}"
        tries = 0

        def attempt() -> None:
            nonlocal tries
            tries += 1
            if tries > 1:
                if start is None:
                    raise RegistryError(f"{what} failed and the source cannot be rewound",
                                        "try the push again")
                fileobj.seek(start)
            resp = self._open(ep, "POST", f"/v2/{repo}/blobs/uploads/", scopes, {"Content-Length": "0"}, b"")
            if resp.status != 202:
                self._check(ep, resp, what)
            location = resp.header("Location")
            resp.drain()
            if not location:
                raise RegistryError(f"{what} failed: the registry gave no upload location",
                                    "the registry is misbehaving; tell its admin")
            url = urllib.parse.urljoin(self._base(ep) + "/", location)
            if chunk_size:
                offset = 0
                while offset < size:
                    data = fileobj.read(min(chunk_size, size - offset))
                    if not data:
                        raise ImageError(f"{what} failed: the source ended at byte {offset} of {size}",
                                         "the layer file changed or is truncated")
                    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                               "Content-Range": f"{offset}-{offset + len(data) - 1}"}
                    resp = self._open(ep, "PATCH", url, scopes, headers, data)
                    if resp.status != 202:
                        self._check(ep, resp, what)
                    url = urllib.parse.urljoin(url, resp.header("Location") or url)
                    resp.drain()
                    offset += len(data)
                    if progress is not None:
                        progress(offset, size)
                body: object = b""
                length = 0
            else:
                body = _ProgressReader(fileobj, size, progress)
                length = size
            sep = "&" if urllib.parse.urlsplit(url).query else "?"
            put_url = f"{url}{sep}{urllib.parse.urlencode({'digest': digest})}"
            resp = self._open(ep, "PUT", put_url, scopes,
                              {"Content-Type": "application/octet-stream", "Content-Length": str(length)}, body)
            if resp.status in (400,):
                data = resp.drain()
                if "DIGEST_INVALID" in _error_codes(data) or "SIZE_INVALID" in _error_codes(data):
                    raise ImageError(f"{what} failed: the registry says the content does not match {digest}",
                                     "the local layer is corrupt; pull or build the image again")
                raise RegistryError(f"{what} failed: 400 {_error_text(data)}",
                                    "the registry refused the upload")
            if resp.status != 201:
                self._check(ep, resp, what)
            sent = resp.header("Docker-Content-Digest")
            resp.drain()
            if sent and sent != digest:
                raise ImageError(f"{what} failed: the registry stored it as {sent}",
                                 "the local layer is corrupt; pull or build the image again")

        self._retrying(what, attempt)

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """Upload a manifest as ``repo:ref``; returns its sha256 digest."""
        ep = self._main
        digest = sha256_digest(body)
        if SHA256_RE.match(ref) and ref != digest:
            raise ImageError(f"cannot push manifest as {ref}: its content has digest {digest}",
                             "push it by tag, or by its own digest")
        what = f"pushing the manifest {self.registry}/{repo}:{ref}"

        def attempt() -> str:
            resp = self._open(ep, "PUT", f"/v2/{repo}/manifests/{ref}", _scopes_push(repo),
                              {"Content-Type": media_type, "Content-Length": str(len(body))}, body)
            if resp.status not in (200, 201, 202):
                self._check(ep, resp, what)
            sent = resp.header("Docker-Content-Digest")
            resp.drain()
            if sent and sent.startswith("sha256:") and sent != digest:
                raise ImageError(f"{what} failed: the registry stored it as {sent}, not {digest}",
                                 "the registry rewrote the manifest; tell its admin")
            return digest

        return self._retrying(what, attempt)

    def delete_manifest(self, repo: str, digest: str) -> None:
        ep = self._main

        def attempt() -> None:
            resp = self._open(ep, "DELETE", f"/v2/{repo}/manifests/{digest}", _scopes_push(repo))
            if resp.status not in (200, 202):
                self._check(ep, resp, f"deleting {self.registry}/{repo}@{digest}")
            resp.drain()

        self._retrying(f"deleting {self.registry}/{repo}@{digest}", attempt)


@record
class _BlobState:
    size: int
    offset: int = 0
    range_ok: bool = False
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        unit, _, spec = value.strip().partition(" ")
        if unit.lower() != "bytes":
            return None
        return int(spec.split("-", 1)[0])
    except ValueError:
        return None


def _next_link(value: str) -> str | None:
    # </v2/x/tags/list?n=2&last=b>; rel="next"
    for part in value.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                return part[start + 1:end]
    return None
