"""The image use cases: pull, list, inspect, tag, remove, push, save, load, import, prune, disk use,
login, and ``ensure_image`` for ``rl run``'s ``--pull`` policy.

:class:`ImageEngine` wires the image store, the registry client and the user namespace together;
the commands build one with :meth:`ImageEngine.from_settings` and call one method. Nothing here
prints: results are data, progress goes to a :class:`~rootless.engine.progress.Reporter`.

Names in the store are full references (``docker.io/library/alpine:latest``,
``127.0.0.1:5000/rltest/busybox@sha256:...``); what users type is resolved through the search
registries, then as an image id or id prefix. Commands that write layers or delete files owned by
subordinate ids (pull, load, import, rmi, prune) first join rl's user namespace; read-only ones
(images, inspect, tag, save, login) never do, so they stay fast.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from rootless.engine import progress as pr
from rootless.engine.registries import RegistryOptions, mirrors_table
from rootless.errors import ImageError, NotFoundError, RLError, UsageError
from rootless.image import reference as refs
from rootless.image.platform import Platform, matches, normalize
from rootless.log import log
from rootless.records import record

if TYPE_CHECKING:
    from datetime import datetime

    from rootless.config.dirs import Dirs
    from rootless.config.settings import Settings
    from rootless.engine.pull import PullResult, PushResult
    from rootless.image.archive import LoadedImage
    from rootless.image.manifest import ImageConfig
    from rootless.image.store import DiskUsage, ImageRecord, RemoveResult, Store
    from rootless.runtime.userns import NamespaceInfo


PULL_POLICIES = ("missing", "always", "never", "newer")
NONE = "<none>"


def default_auth_file(environ: Mapping[str, str] = os.environ) -> Path:
    """rl's own credentials file: ``$XDG_CONFIG_HOME/rl/auth.json`` (``~/.config/rl/auth.json``)."""
    base = environ.get("XDG_CONFIG_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(environ.get("HOME") or str(Path.home()), ".config")
    return Path(base) / "rl" / "auth.json"


def familiar(name: str) -> str:
    """A stored name in docker's short form (``docker.io/library/alpine:1`` -> ``alpine:1``)."""
    try:
        return refs.parse(name).familiar()
    except ImageError:
        return name


def split_name(name: str) -> tuple[str, str]:
    """A stored ``name:tag`` or ``name@digest`` as (familiar repository, tag or digest)."""
    try:
        ref = refs.parse(name)
    except ImageError:
        repo, _, tag = name.rpartition(":")
        return repo, tag
    return ref.familiar_name(), ref.digest or ref.tag or ""


def parse_created(text: str) -> datetime | None:
    """An RFC 3339 time as images carry it (nanoseconds allowed), or None."""
    from datetime import UTC, datetime  # here: rl run never needs it

    if not text:
        return None
    t = text.strip().replace("Z", "+00:00")
    if "." in t:
        head, _, rest = t.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        t = f"{head}.{digits[:6]}{zone}"
    try:
        value = datetime.fromisoformat(t)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@record
class ImageRow:
    """One line of ``rl images``: an image under one of its names (or none)."""

    id: str
    repository: str
    tag: str
    digest: str
    created: datetime | None
    size: int
    containers: int
    record: ImageRecord


def parse_changes(changes: Sequence[str]) -> dict[str, Any]:
    """Dockerfile-like instructions (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME,
    STOPSIGNAL) as the "config" section of an image config."""
    config: dict[str, Any] = {}
    for change in changes:
        word, _, rest = change.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        if not rest:
            raise UsageError(f"invalid --change {change!r}: {word or 'the instruction'} needs a value",
                             'use e.g. --change \'CMD ["/bin/sh"]\' or --change "ENV KEY=value"')
        if word in ("CMD", "ENTRYPOINT"):
            key = "Cmd" if word == "CMD" else "Entrypoint"
            config[key] = _exec_form(rest, change)
        elif word == "ENV":
            env = list(config.get("Env", []))
            for k, v in _key_values(rest, change):
                env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
            config["Env"] = env
        elif word == "LABEL":
            labels = dict(config.get("Labels", {}))
            labels.update(_key_values(rest, change))
            config["Labels"] = labels
        elif word == "WORKDIR":
            config["WorkingDir"] = rest
        elif word == "USER":
            config["User"] = rest
        elif word == "STOPSIGNAL":
            config["StopSignal"] = rest
        elif word == "EXPOSE":
            ports = dict(config.get("ExposedPorts", {}))
            for p in rest.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            config["ExposedPorts"] = ports
        elif word == "VOLUME":
            vols = dict(config.get("Volumes", {}))
            items = _exec_form(rest, change) if rest.startswith("[") else rest.split()
            for v in items:
                vols[v] = {}
            config["Volumes"] = vols
        else:
            raise UsageError(f"invalid --change {change!r}: {word} is not supported",
                             "use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR")
    return config


def _exec_form(text: str, change: str) -> list[str]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise UsageError(f"invalid --change {change!r}: not a JSON array of strings",
                             'write it as CMD ["prog", "arg"]') from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"invalid --change {change!r}: not a JSON array of strings",
                             'write it as CMD ["prog", "arg"]')
        return value
    return ["/bin/sh", "-c", text]


def _key_values(text: str, change: str) -> list[tuple[str, str]]:
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise UsageError(f"invalid --change {change!r}: {e}", "check the quoting") from None
    if words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]  # the old "ENV KEY value" form
    out = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise UsageError(f"invalid --change {change!r}: {w!r} is not KEY=value", "write KEY=value")
        out.append((k, v))
    return out


class ImageEngine:
    """The image use cases over one store root, runtime directory and registry configuration."""

    def __init__(self, storage: Path, runroot: Path, registries: RegistryOptions | None = None) -> None:
        self.storage = Path(storage)
        self.runroot = Path(runroot)
        self.registries = registries or RegistryOptions()
        self._store: Store | None = None
        self._ns: NamespaceInfo | None = None

    @classmethod
    def from_settings(cls, settings: Settings, dirs: Dirs, *, tls_verify: bool | None = None,
                      environ: Mapping[str, str] = os.environ) -> ImageEngine:
        opts = RegistryOptions(
            search=[str(s) for s in settings["registries.search"]],
            insecure=[str(s) for s in settings["registries.insecure"]],
            mirrors=mirrors_table(settings["registries.mirrors"]),
            tls_verify=True if tls_verify is None else tls_verify,
            auth_file=default_auth_file(environ),
        )
        return cls(dirs.storage, dirs.runroot, opts)

    # ---- plumbing --------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            from rootless.image.store import Store

            self._store = Store(self.storage)
        return self._store

    def enter_namespace(self) -> NamespaceInfo:
        """Join rl's user namespace (before any thread starts): layers get the image's own owners."""
        if self._ns is None:
            from rootless.runtime import pause

            self._ns = pause.enter(self.runroot)
        return self._ns

    def _in_use(self) -> Callable[[str], bool]:
        from rootless.state.containers import ContainerStore

        used: set[str] | None = None

        def in_use(image_id: str) -> bool:
            nonlocal used
            if used is None:
                used = {c.image_id for c in ContainerStore(self.storage).list()}
            return image_id in used

        return in_use

    def _container_counts(self) -> dict[str, int]:
        from rootless.state.containers import ContainerStore

        counts: dict[str, int] = {}
        with contextlib.suppress(RLError, OSError):
            for c in ContainerStore(self.storage).list():
                counts[c.image_id] = counts.get(c.image_id, 0) + 1
        return counts

    def _warn_flattened(self, what: str) -> None:
        reason = ""
        if self._ns is not None and self._ns.single_id:
            reason = self._ns.single_reason or "the user namespace maps only your own id"
        log.warning("%s: file owners were flattened to root: %s", what,
                    reason or "the storage refused to change file owners")

    # ---- finding images --------------------------------------------------------------------------

    def _name_keys(self, text: str) -> list[str]:
        """The store names ``text`` may mean, best first (empty when it is no valid reference)."""
        keys: list[str] = []
        with contextlib.suppress(ImageError):
            for ref in [*refs.candidates(text, self.registries.search), refs.parse(text)]:
                if str(ref) not in keys:
                    keys.append(str(ref))
        return keys

    def _store_key(self, text: str) -> tuple[str, bool]:
        """(the store name ``text`` means, True) or (``text`` as an id, False)."""
        names = self.store.names()
        for key in self._name_keys(text):
            if key in names:
                return key, True
        return text.strip(), False

    def find(self, text: str) -> ImageRecord:
        """The local image ``text`` names: a reference (short names through the search list), an id
        or an id prefix. NotFoundError otherwise."""
        key, is_name = self._store_key(text)
        if not is_name and not _could_be_id(key):
            self._check_reference(text)
            raise NotFoundError(f"no such image: {text}", "list images with 'rl images', or pull it")
        try:
            return self.store.resolve(key)
        except NotFoundError:
            raise NotFoundError(f"no such image: {text}", "list images with 'rl images', or pull it") from None

    @staticmethod
    def _check_reference(text: str) -> None:
        if not _could_be_id(text):
            refs.parse(text)  # raises the reference-format error for malformed input

    def exists(self, text: str) -> bool:
        try:
            self.find(text)
        except NotFoundError:
            return False
        return True

    # ---- pull ------------------------------------------------------------------------------------

    def pull(self, text: str, *, platform: Platform | None = None, reporter: pr.Reporter = pr.NULL) -> PullResult:
        from rootless.engine.pull import pull_image

        refs.candidates(text, self.registries.search)  # a malformed reference fails before the namespace
        self.enter_namespace()
        result = pull_image(self.store, text, self.registries, platform=platform, reporter=reporter)
        if result.flattened:
            self._warn_flattened(result.reference.familiar())
        return result

    def ensure_image(self, text: str, policy: str = "missing", platform: Platform | None = None,
                     reporter: pr.Reporter = pr.NULL) -> ImageRecord:
        """The image ``rl run`` / ``rl create`` use, pulled according to ``--pull``:
        ``missing`` (pull when not in the store, or not for ``platform``), ``always``/``newer``
        (ask the registry; cheap when nothing changed), ``never`` (local only)."""
        if policy not in PULL_POLICIES:
            raise UsageError(f"invalid pull policy {policy!r}", f"use one of: {', '.join(PULL_POLICIES)}")
        if policy in ("missing", "never"):
            try:
                rec = self.find(text)
            except NotFoundError:
                if policy == "never":
                    raise NotFoundError(f"image {text} is not in the store and the pull policy is never",
                                        f"run 'rl pull {text}' first, or use --pull missing") from None
            else:
                if platform is None or _record_matches(rec, platform) or policy == "never":
                    return rec
        return self.pull(text, platform=platform, reporter=reporter).record

    def image_config(self, rec: ImageRecord) -> ImageConfig:
        """The parsed, validated config of a stored image."""
        from rootless.image.manifest import parse_config

        return parse_config(self.store.read_blob(rec.config_digest), rec.repo_tags[0] if rec.repo_tags else rec.id,
                            len(rec.layers))

    # ---- list, inspect ---------------------------------------------------------------------------

    def list_images(self, filters: Sequence[str] = (), repository: str | None = None,
                    all_images: bool = False) -> list[ImageRow]:
        """``rl images``: one row per name (an untagged image gets one row of <none>)."""
        del all_images  # rl keeps no intermediate images: -a lists the same
        parsed = _parse_filters(filters)
        records = self.store.list_images()
        by_id = {r.id: r for r in records}
        counts = self._container_counts()
        bound: dict[str, datetime | None] = {}
        for key in ("before", "since"):
            if key in parsed:
                ref = self.find(parsed[key][-1])
                bound[key] = parse_created(by_id.get(ref.id, ref).created)
        rows: list[ImageRow] = []
        for rec in records:
            created = parse_created(rec.created)
            if "dangling" in parsed:
                want = parsed["dangling"][-1].lower() in ("true", "1")
                if bool(rec.repo_tags) == want:
                    continue
            if "label" in parsed and not self._labels_match(rec, parsed["label"]):
                continue
            if "before" in bound and not (created and bound["before"] and created < bound["before"]):
                continue
            if "since" in bound and not (created and bound["since"] and created > bound["since"]):
                continue
            digests = {split_name(d)[0]: split_name(d)[1] for d in rec.repo_digests}
            names = [split_name(t) for t in rec.repo_tags]
            if not names:
                repos = sorted(digests) if digests else [NONE]
                names = [(r, NONE) for r in repos]
            for repo, tag in names:
                if "reference" in parsed and not any(_ref_match(p, repo, tag) for p in parsed["reference"]):
                    continue
                if repository and not _ref_match(repository, repo, tag, exact=True):
                    continue
                rows.append(ImageRow(rec.id, repo, tag, digests.get(repo, NONE), created, rec.size,
                                     counts.get(rec.id, 0), rec))
        from datetime import UTC, datetime

        rows.sort(key=lambda r: (r.created or datetime.min.replace(tzinfo=UTC), r.record.added), reverse=True)
        return rows

    def _config(self, rec: ImageRecord) -> dict[str, Any]:
        try:
            data = json.loads(self.store.read_blob(rec.config_digest))
        except (ValueError, RLError):
            return {}
        return data if isinstance(data, dict) else {}

    def _labels_match(self, rec: ImageRecord, wanted: Iterable[str]) -> bool:
        labels = (self._config(rec).get("config") or {}).get("Labels") or {}
        for w in wanted:
            k, eq, v = w.partition("=")
            if k not in labels or (eq and str(labels[k]) != v):
                return False
        return True

    def inspect(self, text: str) -> dict[str, Any]:
        """Docker's ``image inspect`` document for one image."""
        rec = self.find(text)
        return self.inspect_record(rec)

    def inspect_record(self, rec: ImageRecord) -> dict[str, Any]:
        cfg = self._config(rec)
        c = cfg.get("config") or {}
        config = {
            "Hostname": "",
            "Domainname": "",
            "User": c.get("User", ""),
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "ExposedPorts": c.get("ExposedPorts") or None,
            "Tty": False,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": c.get("Env"),
            "Cmd": c.get("Cmd"),
            "Image": "",
            "Volumes": c.get("Volumes") or None,
            "WorkingDir": c.get("WorkingDir", ""),
            "Entrypoint": c.get("Entrypoint"),
            "OnBuild": c.get("OnBuild"),
            "Labels": c.get("Labels") or None,
        }
        if c.get("StopSignal"):
            config["StopSignal"] = c["StopSignal"]
        if c.get("Healthcheck"):
            config["Healthcheck"] = c["Healthcheck"]
        data: dict[str, Any] = {
            "Id": rec.id,
            "RepoTags": [familiar(t) for t in rec.repo_tags],
            "RepoDigests": [familiar(d) for d in rec.repo_digests],
            "Parent": "",
            "Comment": cfg.get("comment", ""),
            "Created": rec.created or cfg.get("created", ""),
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": config,
            "Architecture": cfg.get("architecture", rec.platform.get("architecture", "")),
            "Os": cfg.get("os", rec.platform.get("os", "linux")),
            "Size": rec.size,
            "RootFS": {"Type": "layers", "Layers": list(rec.diff_ids)},
            "Metadata": {"LastTagTime": rec.added or "0001-01-01T00:00:00Z"},
            "Digest": rec.manifest_digest,
            "ManifestMediaType": rec.manifest_media_type,
            "History": cfg.get("history") or [],
        }
        variant = cfg.get("variant") or rec.platform.get("variant")
        if variant:
            data["Variant"] = variant
        order = ["Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "DockerVersion", "Author",
                 "Config", "Architecture", "Variant", "Os", "Size", "RootFS", "Metadata"]
        return {k: data[k] for k in [*order, *data] if k in data}

    # ---- names -------------------------------------------------------------------------------------

    def tag(self, source: str, target: str) -> ImageRecord:
        ref = refs.parse(target)
        if ref.digest:
            raise UsageError(f"cannot tag {source} as {target}: a tag cannot contain a digest",
                             "use name:tag as the target")
        rec = self.find(source)
        return self.store.tag(rec.id, str(ref))

    def remove(self, text: str, force: bool = False) -> RemoveResult:
        """``rl rmi``: untag by name, delete when no name is left (refused for an image a container
        uses, unless ``force``, which then only untags)."""
        key, is_name = self._store_key(text)
        if not is_name:
            self.find(text)  # the not-found / malformed-reference error in the user's words
        self.enter_namespace()
        try:
            return self.store.remove_image(key, force=force, in_use=self._in_use())
        except NotFoundError:
            raise NotFoundError(f"no such image: {text}", "list images with 'rl images'") from None

    def prune(self, all_images: bool = False) -> RemoveResult:
        self.enter_namespace()
        return self.store.prune(dangling_only=not all_images, in_use=self._in_use())

    def disk_usage(self) -> DiskUsage:
        return self.store.df(in_use=self._in_use())

    def container_summary(self) -> tuple[int, int]:
        """(containers, running containers) for ``rl system df``."""
        from rootless.state.containers import ContainerStore

        try:
            records = ContainerStore(self.storage).list()
        except (RLError, OSError):
            return 0, 0
        return len(records), sum(1 for r in records if r.running)

    # ---- push --------------------------------------------------------------------------------------

    def push(self, text: str, dest: str | None = None, reporter: pr.Reporter = pr.NULL) -> PushResult:
        key, is_name = self._store_key(text)
        rec = self.find(text)
        if dest:
            target = refs.parse(dest)
        elif is_name:
            target = refs.parse(key)
        else:
            raise UsageError(f"cannot push {text}: an image id has no repository to push to",
                             "give the destination: rl push IMAGE REGISTRY/REPOSITORY:TAG")
        from rootless.engine.pull import push_image

        return push_image(self.store, rec, target, self.registries, reporter=reporter)

    # ---- save, load, import --------------------------------------------------------------------------

    def save(self, texts: Sequence[str], out: BinaryIO | str, fmt: str = "docker-archive") -> list[ImageRecord]:
        """Write the images to ``out``: a stream, or a path that appears only when saving succeeds."""
        from rootless.image import archive

        if fmt not in archive.FORMATS:
            raise UsageError(f"unknown archive format {fmt!r}", f"use one of: {', '.join(archive.FORMATS)}")
        chosen: list[tuple[ImageRecord, list[str]]] = []
        for text in texts:
            key, is_name = self._store_key(text)
            rec = self.find(text)
            names = [key] if is_name and "@" not in key else []
            if fmt == archive.DOCKER_ARCHIVE:
                names = [familiar(n) for n in names]
            for prev, prev_names in chosen:
                if prev.id == rec.id:
                    prev_names.extend(n for n in names if n not in prev_names)
                    break
            else:
                chosen.append((rec, names))
        if isinstance(out, str):
            try:
                with archive.saving_to(out) as f:
                    archive.save_archive(self.store, chosen, f, fmt)
            except OSError as e:
                if e.errno is None:  # not the file system: a failure inside the archive writer
                    raise
                raise UsageError(f"cannot write {out}: {e.strerror or e}",
                                 "check that its directory exists and is writable") from None
        else:
            archive.save_archive(self.store, chosen, out, fmt)
        return [rec for rec, _ in chosen]

    def load(self, source: str | os.PathLike[str] | IO[bytes],
             progress: Callable[[str], None] | None = None) -> list[LoadedImage]:
        """Load a docker-archive or oci-archive (a path, or a stream that is spooled to S/tmp first)."""
        from rootless.image import archive

        self.enter_namespace()
        store = self.store

        def normalize_name(name: str) -> str:
            try:
                return str(refs.parse(name))
            except ImageError:
                raise UsageError(f"invalid name {name!r} in the archive") from None

        if isinstance(source, str | os.PathLike):
            return archive.load_archive(store, source, normalize=normalize_name, progress=progress)
        with _spooled(store.tmp_dir, source) as spool:
            return archive.load_archive(store, spool, normalize=normalize_name, progress=progress)

    def import_rootfs(self, source: BinaryIO, name: str | None = None, changes: Sequence[str] = (),
                      message: str = "") -> ImageRecord:
        """``rl import``: a rootfs tarball (plain, gzip or zstd) becomes a one-layer image."""
        from rootless.image import archive

        config_section = parse_changes(changes)
        names = []
        if name:
            ref = refs.parse(name)
            if ref.digest:
                raise UsageError(f"cannot import as {name}: give a name with a tag, not a digest")
            names.append(str(ref))
        self.enter_namespace()
        return archive.import_rootfs(self.store, source, names, config_section, message=message)

    # ---- credentials -----------------------------------------------------------------------------------

    def login(self, registry: str, username: str, password: str) -> Path:
        """Check the credentials with the registry, then store them in rl's auth file; returns its path."""
        from rootless.image import auth

        host = auth.normalize_registry(registry)
        if not host:
            raise UsageError("cannot log in: no registry given", "use rl login REGISTRY")
        if not username or not password:
            raise UsageError(f"cannot log in to {host}: username and password are required",
                             "pass --username and --password or --password-stdin")
        from rootless.engine.pull import check_login

        check_login(self.registries, host, username, password)
        path = self.registries.auth_file or default_auth_file()
        auth.login(path, registry, username, password)
        return path

    def logout(self, registry: str) -> bool:
        from rootless.image import auth

        return auth.logout(self.registries.auth_file or default_auth_file(), registry)


def _could_be_id(text: str) -> bool:
    t = text.strip().removeprefix("sha256:")
    return bool(t) and len(t) <= 64 and all(c in "0123456789abcdef" for c in t)


def _record_matches(rec: ImageRecord, want: Platform) -> bool:
    p = rec.platform
    if not p.get("architecture"):
        return True
    return matches(normalize(p.get("os", "linux"), p["architecture"], p.get("variant", "")), want)


_FILTERS = ("dangling", "reference", "label", "before", "since")


def _parse_filters(filters: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in filters:
        key, eq, value = f.partition("=")
        key = key.strip().lower()
        if not eq or key not in _FILTERS:
            raise UsageError(f"invalid filter {f!r}", f"use KEY=VALUE with KEY one of: {', '.join(_FILTERS)}")
        if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid filter {f!r}: dangling is true or false")
        out.setdefault(key, []).append(value)
    return out


def _ref_match(pattern: str, repo: str, tag: str, exact: bool = False) -> bool:
    """Docker's reference filter: the pattern against the familiar ``repo`` or ``repo:tag``."""
    full = f"{repo}:{tag}"
    candidates = {repo, full}
    with contextlib.suppress(ImageError):
        long = refs.parse(full if tag != NONE else repo)
        candidates |= {long.name, str(long)}
    if exact:
        return pattern in candidates or (":" not in pattern.rsplit("/", 1)[-1] and pattern == repo)
    return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)


@contextlib.contextmanager
def _spooled(tmp_dir: Path, stream: IO[bytes]) -> Iterator[Path]:
    """A stream (stdin) copied to a work item in the store's tmp/ (archives need random access).

    The item follows the store's convention, NAME plus a flocked NAME.lock, so that a concurrent
    clean_tmp leaves it alone and a crash leaves something the store knows to remove.
    """
    import secrets
    import shutil

    from rootless.state.locks import FileLock

    name = f"load-{os.getpid()}-{secrets.token_hex(6)}"
    path = tmp_dir / name
    lock = FileLock(tmp_dir / f"{name}.lock", timeout=0)
    lock.acquire()
    try:
        with open(path, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.unlink(lock.path)
        lock.release()


class _TextReporter(pr.Reporter):
    """A Reporter for callers that take progress as lines of text (``rl run``)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit
        self._last: dict[str, str] = {}

    def start(self, text: str) -> None:
        self.emit(text)

    def note(self, text: str) -> None:
        self.emit(text)

    def layer(self, layer_id: str, status: str, done: int = 0, total: int = 0) -> None:
        if status in (pr.DOWNLOADING, pr.PUSHING) or self._last.get(layer_id) == status:
            return
        self._last[layer_id] = status
        self.emit(f"{layer_id}: {status}")


def ensure_image_config(env: Any, image: str, policy: str = "missing", platform: str | Platform | None = None, *,
                        tls_verify: bool = True, progress: Callable[[str], None] | None = None,
                        reporter: pr.Reporter | None = None) -> tuple[ImageRecord, ImageConfig]:
    """For ``rl run`` / ``rl create``: the image (pulled per ``policy``) and its parsed config.

    ``env`` is anything with ``storage``, ``runroot``, ``search``, ``insecure`` and ``mirrors``
    (rootless.engine.env.EngineEnv). The caller has joined the user namespace already or not: this
    joins it when a pull is needed.
    """
    from rootless.image.platform import parse_platform

    opts = RegistryOptions(
        search=list(env.search),
        insecure=list(env.insecure),
        mirrors=mirrors_table(env.mirrors),
        tls_verify=tls_verify,
        auth_file=default_auth_file(),
    )
    engine = ImageEngine(env.storage, env.runroot, opts)
    want = parse_platform(platform) if isinstance(platform, str) and platform else (
        platform if isinstance(platform, Platform) else None)
    rep = reporter or (_TextReporter(progress) if progress is not None else pr.NULL)
    rec = engine.ensure_image(image, policy, want, rep)
    return rec, engine.image_config(rec)
