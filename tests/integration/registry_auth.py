"""Test helpers: docker-registry processes (plain, htpasswd, token auth), a JWT token issuer, a
fault-injecting proxy, a redirect target, and tiny images built in memory. Everything on 127.0.0.1.

The token issuer signs RS256 JWTs with the ``openssl`` CLI. Distribution v2.8 checks a token's ``iss``
against ``auth.token.issuer``, ``aud`` against ``auth.token.service``, ``exp``/``nbf`` (60 s leeway) and the
signing key: with an ``x5c`` header (base64 DER certificates, leaf first) the chain must verify against the
``rootcertbundle``; we put the self-signed signing certificate itself in the bundle. The granted actions come
from the ``access`` claim: ``[{"type": "repository", "name": ..., "actions": [...]}]``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fixtures.registry_server import write_htpasswd as write_htpasswd  # for the tests (ra.write_htpasswd)
from tests.support import free_port, stop_process

REGISTRY_BIN = shutil.which("docker-registry")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# ------------------------------------------------------------------------------------- registries


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    process: subprocess.Popen[bytes]
    root: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def stop(self) -> None:
        stop_process(self.process)


def _yaml_block(auth: dict[str, dict[str, str]] | None) -> str:
    if not auth:
        return ""
    lines = ["auth:"]
    for kind, opts in auth.items():
        lines.append(f"  {kind}:")
        for k, v in opts.items():
            lines.append(f"    {k}: {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def make_tls_cert(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key)."""
    cert, key = workdir / "tls.crt", workdir / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def start_registry(workdir: Path, auth: dict[str, dict[str, str]] | None = None,
                   tls: tuple[Path, Path] | None = None) -> Registry:
    """Start docker-registry on a free 127.0.0.1 port with filesystem storage under ``workdir``."""
    if REGISTRY_BIN is None:
        raise RuntimeError("docker-registry is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    last_log = ""
    for _ in range(5):
        port = free_port()
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {json.dumps(str(workdir / 'data'))}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: rl-test-secret\n"
            + (f"  tls:\n    certificate: {json.dumps(str(tls[0]))}\n    key: {json.dumps(str(tls[1]))}\n"
               if tls else "")
            + _yaml_block(auth)
        )
        log_path = workdir / "registry.log"
        with open(log_path, "wb") as log:
            env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        reg = Registry(f"127.0.0.1:{port}", proc, workdir, log_path)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/v2/")
                conn.getresponse().read()
                conn.close()
                return reg
            except OSError:
                time.sleep(0.05)
        reg.stop()
        last_log = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"docker-registry did not start: {last_log}")


# ----------------------------------------------------------------------------------- token issuer


class TokenIssuer:
    """An http.server that hands out registry JWTs to users with the right Basic credentials.

    Authenticated users get every action they ask for; anonymous clients get ``pull`` on repositories
    under ``public/`` and nothing else. Every request is recorded in ``requests``.
    """

    def __init__(self, workdir: Path, users: dict[str, str], issuer: str = "rl-test-issuer",
                 service: str = "rl-test-registry", access_token_field: bool = False,
                 refresh_tokens: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.users = users
        self.issuer = issuer
        self.service = service
        self.access_token_field = access_token_field
        self.refresh_tokens = refresh_tokens or {}
        self.requests: list[dict[str, Any]] = []
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
             "-out", str(self.cert), "-days", "2", "-subj", "/CN=rl-test-token-issuer"],
            check=True, capture_output=True,
        )
        pem = self.cert.read_text()
        body = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
        self.x5c = body  # base64 (standard) DER, as x5c wants
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def registry_auth(self) -> dict[str, dict[str, str]]:
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.cert)}}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                parts = one.split(":")
                if len(parts) < 3 or parts[0] != "repository":
                    continue
                name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
                if user is None:
                    actions = [a for a in actions if a == "pull" and name.startswith("public/")]
                access.append({"type": "repository", "name": name, "actions": actions})
        return access

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _issue(self, params: dict[str, list[str]], user: str | None) -> None:
                scopes = params.get("scope", [])
                now = int(time.time())
                claims = {"iss": issuer.issuer, "sub": user or "", "aud": params.get("service", [""])[0],
                          "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(),
                          "access": issuer.grant(user, scopes)}
                token = issuer.sign(claims)
                key = "access_token" if issuer.access_token_field else "token"
                self._reply(200, {key: token, "expires_in": 300})

            def _user(self) -> tuple[bool, str | None]:
                auth = self.headers.get("Authorization", "")
                if not auth:
                    return True, None
                if not auth.startswith("Basic "):
                    return False, None
                try:
                    user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                except ValueError:
                    return False, None
                return issuer.users.get(user) == pw, user

            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(parsed.query)
                ok, user = self._user()
                issuer.requests.append({"method": "GET", "params": params, "user": user, "ok": ok,
                                        "authorization": self.headers.get("Authorization")})
                if not ok:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                self._issue(params, user)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                params = urllib.parse.parse_qs(self.rfile.read(length).decode())
                refresh = params.get("refresh_token", [""])[0]
                user = issuer.refresh_tokens.get(refresh)
                issuer.requests.append({"method": "POST", "params": params, "user": user, "ok": user is not None,
                                        "authorization": self.headers.get("Authorization")})
                if user is None:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad refresh token"}]})
                    return
                scopes = " ".join(params.get("scope", [])).split(" ")
                self._issue({"scope": scopes, "service": params.get("service", [""])}, user)

        return Handler


# ------------------------------------------------------------------------------------ fault proxy


@dataclass
class Fault:
    kind: str  # "status", "truncate", "corrupt", "no-ranges", "redirect"
    match: str  # substring of "METHOD path"
    times: int | None = 1  # None: always
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    location: str = ""
    hits: int = 0


class FaultProxy:
    """A threaded HTTP proxy in front of a registry that injects faults on matching requests.

    Faults apply in the order added, each ``times`` times (None: forever):
    ``status`` answers with ``status`` and ``headers`` instead of forwarding; ``truncate`` forwards but
    sends only the first half of the body, then closes; ``corrupt`` flips one byte in the middle of the
    body; ``no-ranges`` drops the request's Range and the answer's Accept-Ranges; ``redirect`` answers 307
    to ``location``. ``requests`` records (method, path, headers) of everything received.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def add(self, kind: str, match: str, times: int | None = 1, **kw: Any) -> Fault:
        fault = Fault(kind, match, times, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _take(self, method: str, path: str) -> list[Fault]:
        taken = []
        with self.lock:
            for f in self.faults:
                if f.match in f"{method} {path}" and (f.times is None or f.hits < f.times):
                    f.hits += 1
                    taken.append(f)
        return taken

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                method, path = self.command, self.path
                headers = {k: v for k, v in self.headers.items()}
                with proxy.lock:
                    proxy.requests.append((method, path, headers))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                faults = proxy._take(method, path)
                kinds = {f.kind: f for f in faults}
                if "status" in kinds:
                    f = kinds["status"]
                    data = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "injected"}]}).encode()
                    self.send_response(f.status)
                    for k, v in f.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if "redirect" in kinds:
                    self.send_response(307)
                    self.send_header("Location", kinds["redirect"].location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                fwd = {k: v for k, v in headers.items() if k.lower() not in ("connection", "keep-alive")}
                if "no-ranges" in kinds:
                    fwd = {k: v for k, v in fwd.items() if k.lower() != "range"}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    conn.request(method, path, body=body if (body or length) else None, headers=fwd)
                    resp = conn.getresponse()
                    data = resp.read()
                    out_headers = [(k, v) for k, v in resp.getheaders()
                                   if k.lower() not in ("connection", "transfer-encoding", "content-length")]
                finally:
                    conn.close()
                if "no-ranges" in kinds:
                    out_headers = [(k, v) for k, v in out_headers if k.lower() != "accept-ranges"]
                if "corrupt" in kinds and data:
                    mid = len(data) // 2
                    data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1:]
                self.send_response(resp.status, resp.reason)
                for k, v in out_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if "truncate" in kinds:
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        return Handler


class StaticServer:
    """Serves registered bytes at paths (a stand-in for blob storage behind a redirect); records headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                server.requests.append((self.path, {k: v for k, v in self.headers.items()}))
                data = server.files.get(path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ----------------------------------------------------------------------------------- tiny images


@dataclass
class TinyImage:
    config: bytes
    layers: list[bytes]  # compressed
    manifest: bytes
    media_type: str

    @property
    def manifest_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    def blobs(self) -> list[tuple[str, bytes]]:
        return [(_digest(b), b) for b in [*self.layers, self.config]]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    """(gzip-compressed tar, uncompressed tar) holding ``files``; reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), tar_bytes


def make_image(files_per_layer: list[dict[str, bytes]], oci: bool = False, arch: str = "amd64",
               cmd: list[str] | None = None) -> TinyImage:
    layers, diff_ids = [], []
    for files in files_per_layer:
        gz, tar_bytes = make_layer(files)
        layers.append(gz)
        diff_ids.append(_digest(tar_bytes))
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": cmd or ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "rl test"} for _ in layers],
    }, sort_keys=True).encode()
    if oci:
        mt, cmt, lmt = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json",
                        "application/vnd.oci.image.layer.v1.tar+gzip")
    else:
        mt, cmt, lmt = ("application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.container.image.v1+json",
                        "application/vnd.docker.image.rootfs.diff.tar.gzip")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": cmt, "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": lmt, "digest": _digest(b), "size": len(b)} for b in layers],
    }, indent=2).encode()
    return TinyImage(config, layers, manifest, mt)


@contextlib.contextmanager
def running_registry(workdir: Path, auth: dict[str, dict[str, str]] | None = None,
                     tls: tuple[Path, Path] | None = None) -> Iterator[Registry]:
    reg = start_registry(workdir, auth, tls)
    try:
        yield reg
    finally:
        reg.stop()
