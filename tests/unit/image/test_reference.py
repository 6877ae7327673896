"""Reference parsing matches docker's (distribution/reference normalized names)."""

from __future__ import annotations

import pytest

from rootless.errors import ImageError, UsageError
from rootless.image.platform import (
    Platform,
    best_match,
    compatible,
    host_platform,
    matches,
    normalize,
    parse_platform,
)
from rootless.image.reference import Reference, candidates, has_registry, parse

D = "sha256:" + "a" * 64
D2 = "sha256:" + "0123456789abcdef" * 4

VALID = [
    # text, registry, repository, tag, digest
    ("alpine", "docker.io", "library/alpine", "latest", None),
    ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
    ("library/alpine", "docker.io", "library/alpine", "latest", None),
    ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
    ("docker.io/library/alpine:edge", "docker.io", "library/alpine", "edge", None),
    ("index.docker.io/library/alpine", "docker.io", "library/alpine", "latest", None),
    ("index.docker.io/user/img", "docker.io", "user/img", "latest", None),
    ("user/img", "docker.io", "user/img", "latest", None),
    ("user/img:v1.2-rc_3", "docker.io", "user/img", "v1.2-rc_3", None),
    ("user/deep/path/img", "docker.io", "user/deep/path/img", "latest", None),
    ("host:5000/a/b:tag", "host:5000", "a/b", "tag", None),
    ("quay.io/org/app", "quay.io", "org/app", "latest", None),
    ("example.com/a/b/c/d:1", "example.com", "a/b/c/d", "1", None),
    ("localhost/x", "localhost", "x", "latest", None),
    ("localhost:5000/x", "localhost:5000", "x", "latest", None),
    ("localhost:5000/x:y", "localhost:5000", "x", "y", None),
    ("localhost", "docker.io", "library/localhost", "latest", None),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),
    ("127.0.0.1:5000/x:1.0", "127.0.0.1:5000", "x", "1.0", None),
    ("[::1]:5000/foo", "[::1]:5000", "foo", "latest", None),
    ("[2001:db8::1]/foo", "[2001:db8::1]", "foo", "latest", None),
    ("Foo/bar", "Foo", "bar", "latest", None),  # docker: an uppercase first component is a registry
    ("my-registry.local/team/app", "my-registry.local", "team/app", "latest", None),
    (f"alpine@{D}", "docker.io", "library/alpine", None, D),
    (f"alpine:3@{D}", "docker.io", "library/alpine", "3", D),
    (f"host:5000/a/b@{D2}", "host:5000", "a/b", None, D2),
    (f"host:5000/a/b:t@{D2}", "host:5000", "a/b", "t", D2),
    ("ab-c_d__e/f.g--h", "docker.io", "ab-c_d__e/f.g--h", "latest", None),
    ("a.b/c", "a.b", "c", "latest", None),  # a dot in the first component makes it a registry
    ("x/y:" + "t" * 128, "docker.io", "x/y", "t" * 128, None),
    ("x:_under", "docker.io", "library/x", "_under", None),
    ("x:UPPER_tag", "docker.io", "library/x", "UPPER_tag", None),
    ("a0/b1", "docker.io", "a0/b1", "latest", None),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), VALID)
def test_valid(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    ref = parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert parse(str(ref)) == ref


INVALID = [
    ("", "empty"),
    ("Alpine", "lowercase"),
    ("user/Img", "lowercase"),
    ("docker.io/User/img", "lowercase"),
    ("alpine:", "empty tag"),
    ("alpine@", "empty digest"),
    ("alpine:-tag", "invalid tag"),
    ("alpine:.tag", "invalid tag"),
    ("alpine:a/b", "invalid registry"),  # ':' in the first component makes 'alpine:a' a registry
    ("x:" + "t" * 129, "invalid tag"),
    ("x:tag!", "invalid tag"),
    ("alpine@sha256:abc", "64 hex"),
    ("alpine@sha256:" + "A" * 64, "lowercase"),
    ("alpine@sha256:" + "g" * 64, "invalid digest"),
    ("alpine@sha512:" + "a" * 128, "unsupported digest algorithm"),
    ("alpine@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("alpine@" + "a" * 64, "invalid digest"),
    (" alpine", "whitespace"),
    ("alp ine", "whitespace"),
    ("a" * 64, "image id"),
    ("foo//bar", "invalid repository"),
    ("foo/", "invalid repository"),
    ("/foo", "invalid repository"),
    ("-foo", "invalid repository"),
    ("foo-/bar", "invalid repository"),
    ("foo..bar", "invalid repository"),
    ("foo___bar", "invalid repository"),
    ("foo_-bar", "invalid repository"),
    ("host:port/a", "invalid registry"),
    ("-host.com/a", "invalid registry"),
    ("host.com:/a", "invalid registry"),
    ("localhost:5000/", "at least one component"),
    ("a/" + "b" * 260, "255"),
    ("a:b:c", "invalid repository"),
    ("a@b@" + D, "invalid digest"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(ImageError) as info:
        parse(text)
    assert info.value.hint
    assert "\n" not in info.value.message
    assert reason in info.value.message


def test_str_familiar_for_ref() -> None:
    ref = parse("alpine")
    assert str(ref) == "docker.io/library/alpine:latest"
    assert ref.familiar() == "alpine:latest"
    assert ref.for_ref() == "latest"
    assert ref.name == "docker.io/library/alpine"
    assert parse("user/img:1").familiar() == "user/img:1"
    assert parse("library/a/b").familiar() == "library/a/b:latest"
    assert parse("quay.io/x/y:2").familiar() == "quay.io/x/y:2"
    pinned = parse(f"alpine:3@{D}")
    assert str(pinned) == f"docker.io/library/alpine:3@{D}"
    assert pinned.familiar() == f"alpine:3@{D}"
    assert pinned.for_ref() == D
    assert parse(f"localhost:5000/x@{D}").for_ref() == D
    assert str(parse(f"localhost:5000/x@{D}")) == f"localhost:5000/x@{D}"


def test_with_tag_and_digest() -> None:
    ref = parse("alpine")
    assert str(ref.with_tag("edge")) == "docker.io/library/alpine:edge"
    assert ref.with_digest(D).digest == D
    with pytest.raises(ImageError):
        ref.with_tag("-x")
    with pytest.raises(ImageError):
        ref.with_digest("sha256:1")


def test_candidates_search_list() -> None:
    assert candidates("alpine") == [Reference("docker.io", "library/alpine", "latest")]
    assert [str(r) for r in candidates("alpine:1", ["quay.io", "docker.io"])] == [
        "quay.io/alpine:1", "docker.io/library/alpine:1"]
    assert [str(r) for r in candidates("org/app", ["registry.example.com:5000", "docker.io"])] == [
        "registry.example.com:5000/org/app:latest", "docker.io/org/app:latest"]
    # A qualified name ignores the search list.
    assert [str(r) for r in candidates("quay.io/x/y", ["a.io", "b.io"])] == ["quay.io/x/y:latest"]
    assert [str(r) for r in candidates("localhost/x", ["a.io"])] == ["localhost/x:latest"]
    # Duplicates collapse.
    assert len(candidates("alpine", ["docker.io", "index.docker.io"])) == 1
    with pytest.raises(ImageError, match="no registries"):
        candidates("alpine", [])


def test_has_registry() -> None:
    assert has_registry("quay.io/a")
    assert has_registry("localhost/a")
    assert has_registry(f"localhost:5000/a@{D}")
    assert not has_registry("alpine")
    assert not has_registry("user/img")
    assert not has_registry("localhost")


# ------------------------------------------------------------------------------------ platforms


@pytest.mark.parametrize(("machine", "expected"), [
    ("x86_64", "linux/amd64"),
    ("aarch64", "linux/arm64"),
    ("arm64", "linux/arm64"),
    ("armv7l", "linux/arm/v7"),
    ("armv6l", "linux/arm/v6"),
    ("armv8l", "linux/arm/v8"),
    ("i686", "linux/386"),
    ("ppc64le", "linux/ppc64le"),
    ("s390x", "linux/s390x"),
    ("riscv64", "linux/riscv64"),
])
def test_host_platform(machine: str, expected: str) -> None:
    assert str(host_platform(machine)) == expected


def test_host_platform_default_is_linux() -> None:
    assert host_platform().os == "linux"


@pytest.mark.parametrize(("text", "expected"), [
    ("linux/amd64", "linux/amd64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/arm64", "linux/arm64"),
    ("linux/arm64/v8", "linux/arm64"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/arm", "linux/arm/v7"),
    ("linux/arm/7", "linux/arm/v7"),
    ("linux/arm/v6", "linux/arm/v6"),
    ("Linux/AMD64", "linux/amd64"),
    ("arm64", "linux/arm64"),
    ("linux/amd64/v1", "linux/amd64"),
    ("linux/amd64/v3", "linux/amd64/v3"),
])
def test_parse_platform(text: str, expected: str) -> None:
    assert str(parse_platform(text)) == expected


@pytest.mark.parametrize("text", ["", "linux/", "/amd64", "linux/arm/v7/x", "linux", "a//b", "nonsense"])
def test_parse_platform_invalid(text: str) -> None:
    with pytest.raises(UsageError):
        parse_platform(text)


def test_matching() -> None:
    assert matches(Platform("linux", "arm64", "v8"), Platform("linux", "arm64"))
    assert matches(Platform("linux", "arm64"), normalize("linux", "arm64", "v8"))
    assert not matches(Platform("linux", "amd64"), Platform("linux", "arm64"))
    assert not matches(Platform("windows", "amd64"), Platform("linux", "amd64"))
    assert matches(Platform("linux", "arm", "v6"), Platform("linux", "arm", "v7"))
    assert not matches(Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"))
    assert [str(p) for p in compatible(Platform("linux", "arm", "v8"))] == [
        "linux/arm/v8", "linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    items = [(Platform("linux", "arm", "v6"), "v6"), (Platform("linux", "arm", "v7"), "v7"),
             (Platform("linux", "amd64"), "amd")]
    assert best_match(items, Platform("linux", "arm", "v8")) == "v7"
    assert best_match(items, Platform("linux", "arm", "v6")) == "v6"
    assert best_match(items, Platform("linux", "s390x")) is None
