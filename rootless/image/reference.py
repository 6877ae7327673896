"""Image references, parsed the way docker parses them (distribution/reference's normalized names).

``alpine`` is ``docker.io/library/alpine:latest``; ``user/img`` is ``docker.io/user/img:latest``. The first
path component names a registry when it contains ``.`` or ``:``, is ``localhost``, or has an uppercase
letter (docker's rule: ``Foo/bar`` asks the registry ``Foo``). Repository names are lowercase; a tag is
``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; a digest is ``sha256:`` and 64 lowercase hex digits (rl verifies
content with sha256 only, so other algorithms are refused here with a clear reason).

Short names (no registry) resolve through a search list of registries, ``["docker.io"]`` by default:
:func:`candidates` gives the references to try in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rootless.errors import ImageError
from rootless.records import record

DEFAULT_REGISTRY = "docker.io"
LEGACY_DEFAULT_REGISTRY = "index.docker.io"
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REPOSITORY_PATH = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_NAME}|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST_ANY = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_REPOSITORY_RE = re.compile(rf"^{_REPOSITORY_PATH}$")
_TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
_DIGEST_SYNTAX_RE = re.compile(rf"^{_DIGEST_ANY}$")
SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


@record(frozen=True)
class Reference:
    """A fully qualified image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar_name(self) -> str:
        """Docker's short form of the name: ``alpine``, ``user/img``; other registries in full."""
        if self.registry != DEFAULT_REGISTRY:
            return self.name
        prefix = OFFICIAL_NAMESPACE + "/"
        if self.repository.startswith(prefix) and "/" not in self.repository[len(prefix):]:
            return self.repository[len(prefix):]
        return self.repository

    def familiar(self) -> str:
        """Docker's short form: ``alpine:latest``, ``user/img:1``, ``quay.io/x/y:2``."""
        text = self.familiar_name()
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def for_ref(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        validate_tag(tag)
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        validate_digest(digest, str(self))
        return Reference(self.registry, self.repository, self.tag, digest)


def _fail(text: str, reason: str) -> ImageError:
    return ImageError(
        f"invalid reference format for {text!r}: {reason}",
        "use [registry/]repository[:tag][@sha256:digest] with a lowercase repository, "
        "e.g. docker.io/library/alpine:3.19",
    )


def validate_tag(tag: str, text: str | None = None) -> None:
    if not _TAG_RE.match(tag):
        raise _fail(text if text is not None else tag,
                    f"invalid tag {tag!r} (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')")


def validate_digest(digest: str, text: str | None = None) -> None:
    """Accept ``sha256:`` + 64 lowercase hex digits; name the problem otherwise."""
    if SHA256_RE.match(digest):
        return
    where = text if text is not None else digest
    algorithm, sep, encoded = digest.partition(":")
    if not sep or not _DIGEST_SYNTAX_RE.match(digest):
        raise _fail(where, f"invalid digest {digest!r} (expected sha256: and 64 hex digits)")
    if algorithm != "sha256":
        raise _fail(where, f"unsupported digest algorithm {algorithm!r} (only sha256 is supported)")
    if encoded.lower() != encoded:
        raise _fail(where, "digest hex must be lowercase")
    raise _fail(where, f"sha256 digest must have 64 hex digits, not {len(encoded)}")


def split_domain(name: str) -> tuple[str | None, str]:
    """Docker's rule: the first component is a registry when it has '.' or ':', is localhost, or has uppercase."""
    first, slash, rest = name.partition("/")
    if not slash:
        return None, name
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        return first, rest
    return None, name


def has_registry(text: str) -> bool:
    """Whether ``text`` names its registry (so no search list applies)."""
    name = text.split("@", 1)[0]
    return split_domain(name)[0] is not None


def _split(text: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` into its three parts (syntax checked later)."""
    name, at, digest = text.partition("@")
    if at and not digest:
        raise _fail(text, "empty digest after '@'")
    tag: str | None = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1:]
        if not tag:
            raise _fail(text, "empty tag after ':'")
    return name, tag, (digest if at else None)


def parse(text: str, default_registry: str = DEFAULT_REGISTRY) -> Reference:
    """Parse a reference as docker does; a name without registry goes to ``default_registry``.

    A reference with neither tag nor digest gets the tag ``latest``.
    """
    if not text:
        raise _fail(text, "empty reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise _fail(text, "contains whitespace")
    if _HEX64_RE.match(text):
        raise _fail(text, "a 64-character hex string is an image id, not a repository name")
    name, tag, digest = _split(text)
    domain, remainder = split_domain(name)
    if domain is None:
        domain = default_registry
    if not domain:
        raise _fail(text, "empty registry")
    if domain == LEGACY_DEFAULT_REGISTRY:
        domain = DEFAULT_REGISTRY
    if not _DOMAIN_RE.match(domain):
        raise _fail(text, f"invalid registry {domain!r}")
    if not remainder:
        raise _fail(text, "repository name must have at least one component")
    if remainder.lower() != remainder:
        raise _fail(text, "repository name must be lowercase")
    if domain == DEFAULT_REGISTRY and "/" not in remainder:
        remainder = f"{OFFICIAL_NAMESPACE}/{remainder}"
    if not _REPOSITORY_RE.match(remainder):
        raise _fail(text, f"invalid repository name {remainder!r} "
                          "(lowercase letters, digits and separators '.', '_', '__', '-' between them)")
    if len(domain) + 1 + len(remainder) > NAME_TOTAL_LENGTH_MAX:
        raise _fail(text, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if tag is not None:
        validate_tag(tag, text)
    if digest is not None:
        validate_digest(digest, text)
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain, remainder, tag, digest)


def candidates(text: str, search_registries: Sequence[str] | Iterable[str] = (DEFAULT_REGISTRY,)) -> list[Reference]:
    """The references to try, in order, for what the user typed.

    A reference that names its registry is the only candidate; a short name gets one candidate per
    registry of the search list (``docker.io`` adds ``library/`` to one-component names).
    """
    if has_registry(text):
        return [parse(text)]
    registries = [r for r in search_registries if r]
    if not registries:
        raise ImageError(
            f"cannot resolve short name {text!r}: no registries to search",
            "use a fully qualified reference like docker.io/library/alpine, or configure search registries",
        )
    result: list[Reference] = []
    for registry in registries:
        ref = parse(text, default_registry=registry)
        if ref not in result:
            result.append(ref)
    return result


def is_digest(ref: str) -> bool:
    return bool(SHA256_RE.match(ref))
