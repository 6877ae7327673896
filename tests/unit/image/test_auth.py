"""Credentials files (rl's, containers', docker's), key normalisation, login/logout, challenge parsing."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from rootless.errors import AuthError, ConfigError, UsageError
from rootless.image import auth
from rootless.image.auth import Credentials, normalize_key, normalize_registry
from rootless.image.registry import parse_www_authenticate


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home), "XDG_RUNTIME_DIR": str(tmp_path / "run")}


@pytest.mark.parametrize(("key", "expected"), [
    ("docker.io", "docker.io"),
    ("https://index.docker.io/v1/", "docker.io"),
    ("index.docker.io", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("http://registry-1.docker.io", "docker.io"),
    ("quay.io", "quay.io"),
    ("https://quay.io", "quay.io"),
    ("https://registry.example.com:5000/v2/", "registry.example.com:5000"),
    ("localhost:5000", "localhost:5000"),
])
def test_normalize_registry(key: str, expected: str) -> None:
    assert normalize_registry(key) == expected
    assert normalize_key(key) == expected


def test_normalize_key_keeps_namespace() -> None:
    assert normalize_key("quay.io/org/app") == "quay.io/org/app"
    assert normalize_key("index.docker.io/user") == "docker.io/user"
    assert normalize_key("https://quay.io/v1/") == "quay.io"


def test_credentials_hide_secrets() -> None:
    c = Credentials("alice", "hunter2-secret", source="/x")
    for text in (repr(c), str(c), f"{c}", f"{c!r}", repr([c]), repr({"k": c})):
        assert "hunter2-secret" not in text
        assert "alice" in text
    t = Credentials("", identity_token="refresh-token-value")
    assert "refresh-token-value" not in repr(t) and "refresh-token-value" not in str(t)
    assert c.basic_header() == "Basic " + b64("alice:hunter2-secret")


def test_read_docker_config(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "config.json", {
        "auths": {
            "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
            "quay.io": {"auth": b64("q:pass:with:colons")},
            "token.example.com": {"auth": b64("<token>:"), "identitytoken": "refresh"},
            "broken.example.com": {"auth": "!!!notbase64"},
            "empty.example.com": {},
            "nocolon.example.com": {"auth": b64("nocolon")},
        },
        "credsStore": "desktop",
        "credHelpers": {"gcr.io": "gcloud"},
    })
    with caplog.at_level(logging.DEBUG, logger="rl"):
        entries = auth.read_auth_file(path)
    assert entries["docker.io"].username == "hubuser" and entries["docker.io"].password == "hubpass"
    assert entries["quay.io"].password == "pass:with:colons"
    assert entries["token.example.com"].identity_token == "refresh"
    assert "broken.example.com" not in entries and "empty.example.com" not in entries
    assert "nocolon.example.com" not in entries
    assert "credsStore" in caplog.text and "credHelpers" in caplog.text
    assert "hubpass" not in caplog.text


def test_username_password_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "auth.json", {"auths": {"r.io": {"username": "u", "password": "p"}}})
    assert auth.read_auth_file(path)["r.io"] == Credentials("u", "p", source=str(path))


def test_missing_and_empty_files(tmp_path: Path) -> None:
    assert auth.read_auth_file(tmp_path / "nope.json") == {}
    (tmp_path / "empty.json").write_text("")
    assert auth.read_auth_file(tmp_path / "empty.json") == {}
    write(tmp_path / "noauths.json", {"credsStore": "x"})
    assert auth.read_auth_file(tmp_path / "noauths.json") == {}


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        auth.read_auth_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match="not an object"):
        auth.read_auth_file(tmp_path / "list.json")


def test_default_sources(env: dict[str, str], tmp_path: Path) -> None:
    rl_file = tmp_path / "rl" / "auth.json"
    home = Path(env["HOME"])
    assert auth.default_sources(rl_file, env) == [
        rl_file,
        Path(env["XDG_RUNTIME_DIR"]) / "containers/auth.json",
        home / ".config/containers/auth.json",
        home / ".docker/config.json",
    ]
    env2 = {**env, "REGISTRY_AUTH_FILE": "/x/auth.json", "DOCKER_CONFIG": "/d", "XDG_CONFIG_HOME": "/c"}
    assert auth.default_sources(None, env2) == [
        Path("/x/auth.json"), Path(env["XDG_RUNTIME_DIR"]) / "containers/auth.json",
        Path("/c/containers/auth.json"), Path("/d/config.json")]


def test_lookup_order(env: dict[str, str], tmp_path: Path) -> None:
    home = Path(env["HOME"])
    rl_file = tmp_path / "rl-auth.json"
    write(home / ".docker/config.json", {"auths": {
        "https://index.docker.io/v1/": {"auth": b64("docker:d")},
        "only-docker.io": {"auth": b64("docker:d")}}})
    write(home / ".config/containers/auth.json", {"auths": {
        "docker.io": {"auth": b64("containers:c")},
        "only-containers.io": {"auth": b64("containers:c")}}})
    write(Path(env["XDG_RUNTIME_DIR"]) / "containers/auth.json", {"auths": {
        "quay.io/org": {"auth": b64("runtime-org:r")},
        "quay.io": {"auth": b64("runtime:r")}}})
    assert auth.lookup("docker.io", rl_auth_file=rl_file, environ=env).username == "containers"  # type: ignore[union-attr]
    assert auth.lookup("registry-1.docker.io", environ=env).username == "containers"  # type: ignore[union-attr]
    assert auth.lookup("only-docker.io", environ=env).username == "docker"  # type: ignore[union-attr]
    assert auth.lookup("quay.io", "org/app", environ=env).username == "runtime-org"  # type: ignore[union-attr]
    assert auth.lookup("quay.io", "other/app", environ=env).username == "runtime"  # type: ignore[union-attr]
    assert auth.lookup("nothing.io", environ=env) is None
    auth.login(rl_file, "docker.io", "mine", "m")
    assert auth.lookup("docker.io", rl_auth_file=rl_file, environ=env).username == "mine"  # type: ignore[union-attr]


def test_lookup_skips_corrupt_foreign_file(env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    home = Path(env["HOME"])
    (home / ".config/containers").mkdir(parents=True)
    (home / ".config/containers/auth.json").write_text("{broken")
    write(home / ".docker/config.json", {"auths": {"r.io": {"auth": b64("u:p")}}})
    with caplog.at_level(logging.WARNING, logger="rl"):
        creds = auth.lookup("r.io", environ=env)
    assert creds is not None and creds.username == "u"
    assert "invalid JSON" in caplog.text


def test_login_logout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sub" / "auth.json"
    with caplog.at_level(logging.DEBUG, logger="rl"):
        auth.login(path, "https://index.docker.io/v1/", "alice", "s3cret")
        auth.login(path, "localhost:5000", "bob", "pw2")
    assert "s3cret" not in caplog.text and "pw2" not in caplog.text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    data = json.loads(path.read_text())
    assert data == {"auths": {"docker.io": {"auth": b64("alice:s3cret")}, "localhost:5000": {"auth": b64("bob:pw2")}}}
    # Re-login under another spelling replaces the entry; other top-level keys survive.
    data["credsStore"] = "keep-me"
    path.write_text(json.dumps(data))
    auth.login(path, "registry-1.docker.io", "alice", "new")
    data = json.loads(path.read_text())
    assert data["auths"]["docker.io"] == {"auth": b64("alice:new")} and data["credsStore"] == "keep-me"
    assert auth.logged_in_registries(path) == ["docker.io", "localhost:5000"]
    assert auth.logout(path, "index.docker.io") is True
    assert auth.logout(path, "docker.io") is False
    assert auth.logout(tmp_path / "none.json", "docker.io") is False
    assert auth.logged_in_registries(path) == ["localhost:5000"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_login_validates(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        auth.login(tmp_path / "a.json", "r.io", "", "p")
    with pytest.raises(UsageError):
        auth.login(tmp_path / "a.json", "r.io", "a:b", "p")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError):
        auth.login(tmp_path / "bad.json", "r.io", "u", "p")
    assert (tmp_path / "bad.json").read_text() == "{"


def test_resolver_caches(env: dict[str, str], tmp_path: Path) -> None:
    rl_file = tmp_path / "rl.json"
    auth.login(rl_file, "r.io", "u", "resolver-secret")
    resolve = auth.CredentialResolver(rl_file, env)
    assert resolve("r.io") == resolve("https://r.io/v1/")
    assert resolve("other.io") is None
    assert "resolver-secret" not in repr(resolve) and "resolver-secret" not in repr(resolve("r.io"))


def test_auth_failed_error() -> None:
    err = auth.auth_failed("r.io", "wrong password")
    assert isinstance(err, AuthError)
    assert err.message == "authentication to r.io failed: wrong password"
    assert err.hint is not None and "rl login r.io" in err.hint


# --------------------------------------------------------------------------------- WWW-Authenticate


def test_parse_bearer() -> None:
    (ch,) = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:samalba/my-app:pull,push"')
    assert ch.scheme == "bearer"
    assert ch.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                         "scope": "repository:samalba/my-app:pull,push"}


def test_parse_variants() -> None:
    (ch,) = parse_www_authenticate('Basic realm="Registry Realm"')
    assert (ch.scheme, ch.realm) == ("basic", "Registry Realm")
    (ch,) = parse_www_authenticate('bearer  realm = "https://x/t" , service=reg,error="insufficient_scope"')
    assert ch.params == {"realm": "https://x/t", "service": "reg", "error": "insufficient_scope"}
    (ch,) = parse_www_authenticate(r'Bearer realm="a \"quoted\" realm, with comma"')
    assert ch.realm == 'a "quoted" realm, with comma'
    chs = parse_www_authenticate('Basic realm="b", Bearer realm="https://t", service="s"')
    assert [(c.scheme, c.params) for c in chs] == [
        ("basic", {"realm": "b"}), ("bearer", {"realm": "https://t", "service": "s"})]
    chs = parse_www_authenticate("Negotiate abc123==, Basic realm=x")
    assert [c.scheme for c in chs] == ["negotiate", "basic"] and chs[1].realm == "x"
    assert parse_www_authenticate("") == [] and parse_www_authenticate(None) == []
    (ch,) = parse_www_authenticate("Bearer")
    assert ch.params == {}


# ------------------------------------------------------------------ registry client transport policy


def test_scheme_policy() -> None:
    from rootless.image.registry import _schemes_for, registry_host

    assert registry_host("docker.io") == "registry-1.docker.io"
    assert registry_host("quay.io") == "quay.io"
    assert _schemes_for("quay.io", insecure=False, tls_verify=True) == [("https", True)]
    assert _schemes_for("quay.io", insecure=False, tls_verify=False) == [("https", False)]
    assert _schemes_for("quay.io", insecure=True, tls_verify=True) == [("https", False), ("http", True)]
    for loopback in ("localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "localhost"):
        assert _schemes_for(loopback, insecure=False, tls_verify=True) == [("http", True), ("https", True)]
    assert _schemes_for("10.0.0.1:5000", insecure=False, tls_verify=True) == [("https", True)]
    assert _schemes_for("m.io", insecure=False, tls_verify=True, explicit="http") == [("http", True)]


def test_mirror_spellings() -> None:
    from rootless.image.registry import RegistryClient

    c = RegistryClient("docker.io", mirrors=["https://mirror.example.com/", "m2.example.com/dockerhub",
                                             "http://m3.example.com/v2/"])
    eps = c._mirrors
    assert [(e.netloc, e.prefix, e.schemes) for e in eps] == [
        ("mirror.example.com", "", [("https", True)]),
        ("m2.example.com", "dockerhub", [("https", True)]),
        ("m3.example.com", "", [("http", True)]),
    ]
    assert eps[1].repo_path("library/alpine") == "dockerhub/library/alpine"
    assert c._main.netloc == "registry-1.docker.io"
    assert "secret" not in repr(RegistryClient("r.io", credentials=Credentials("u", "secret")))


def test_header_helpers() -> None:
    from rootless.image.registry import _content_range_start, _error_text, _next_link, _retry_after

    assert _retry_after("5") == 5.0
    assert _retry_after("") is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _next_link('</v2/x/tags/list?n=2&last=b>; rel="next"') == "/v2/x/tags/list?n=2&last=b"
    assert _next_link("") is None
    assert _content_range_start("bytes 100-199/200") == 100
    assert _content_range_start("items 1-2/3") is None
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}).encode()
    assert _error_text(body) == "MANIFEST_UNKNOWN: manifest unknown"
    assert _error_text(b"<html>\nbad gateway") == "<html>"
