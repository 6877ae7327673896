"""Builders of layer tarballs for the unpack, store and archive tests: ordinary ones and hostile ones.

``E(...)`` describes one member; ``tar_of([...])`` makes the tar bytes.  ``HOSTILE`` maps a case
name to a builder taking the sentinel directory (outside the extraction root) and returning
``(tar bytes, expected error regex or None when the member must be neutralised instead)``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class E:
    name: str
    kind: str = "file"  # file, dir, symlink, hardlink, fifo, chr, blk
    data: bytes = b""
    mode: int | None = None
    link: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = 1_600_000_000
    pax: dict[str, str] = field(default_factory=dict)
    dev: tuple[int, int] = (0, 0)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


def tar_of(entries: Sequence[E], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _TYPES[e.kind]
            ti.mode = e.mode if e.mode is not None else (0o755 if e.kind == "dir" else 0o644)
            ti.uid, ti.gid = e.uid, e.gid
            ti.mtime = e.mtime
            ti.linkname = e.link
            ti.devmajor, ti.devminor = e.dev
            if e.pax:
                ti.pax_headers = dict(e.pax)
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


# ---- hostile cases -----------------------------------------------------------------------------

Case = Callable[[str], tuple[bytes, "str | None"]]


def _dotdot(_s: str) -> tuple[bytes, str | None]:
    return tar_of([E("../escape", data=b"x")]), r"member '\.\./escape' escapes the layer: refused"


def _absolute(_s: str) -> tuple[bytes, str | None]:
    # Neutralised: extracted as abs/path inside the layer.
    return tar_of([E("/abs/path", data=b"inside")]), None


def _absolute_to_sentinel(s: str) -> tuple[bytes, str | None]:
    # The sentinel's own absolute path: must land inside dest, not in the sentinel.
    return tar_of([E(f"{s}/pwn", data=b"pwned")]), None


def _inner_dotdot(_s: str) -> tuple[bytes, str | None]:
    return tar_of([E("a/", kind="dir"), E("a/../../x", data=b"x")]), r"escapes the layer: refused"


def _pax_dotdot(_s: str) -> tuple[bytes, str | None]:
    return tar_of([E("innocent", data=b"x", pax={"path": "../../pax-escape"})]), r"escapes the layer"


def _gnu_long_dotdot(_s: str) -> tuple[bytes, str | None]:
    name = "../" * 40 + "long-escape"
    return tar_of([E(name, data=b"x")], fmt=tarfile.GNU_FORMAT), r"escapes the layer"


def _symlink_abs_then_write(s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("evil", kind="symlink", link=s), E("evil/pwn", data=b"pwned")]),
        r"member 'evil/pwn' would be written through symlink 'evil': refused",
    )


def _symlink_dotdot_then_write(_s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("up", kind="symlink", link=".."), E("up/outside/pwn", data=b"pwned")]),
        r"through symlink 'up': refused",
    )


def _symlink_chain(s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("b", kind="symlink", link=s), E("a", kind="symlink", link="b"), E("a/pwn", data=b"x")]),
        r"through symlink 'a'",
    )


def _symlink_nested(s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("d/", kind="dir"), E("d/evil", kind="symlink", link=s), E("d/evil/sub/pwn", data=b"x")]),
        r"through symlink 'd/evil'",
    )


def _hardlink_etc_passwd(_s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("passwd", kind="hardlink", link="/etc/passwd")]),
        r"hard link 'passwd' points to '/etc/passwd', which is not in the layer: refused",
    )


def _hardlink_dotdot(_s: str) -> tuple[bytes, str | None]:
    return tar_of([E("h", kind="hardlink", link="../x")]), r"points to '\.\./x', outside the layer: refused"


def _hardlink_through_symlink(s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("evil", kind="symlink", link=s), E("h", kind="hardlink", link="evil/secret")]),
        r"which is not in the layer",
    )


def _devices(_s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("dev/", kind="dir"), E("dev/sda", kind="blk", dev=(8, 0)), E("dev/null", kind="chr", dev=(1, 3))]),
        None,
    )


def _dir_replaced_by_symlink(s: str) -> tuple[bytes, str | None]:
    return (
        tar_of([E("d/", kind="dir"), E("d/f", data=b"ok"), E("d", kind="symlink", link=s), E("d/pwn", data=b"x")]),
        r"through symlink 'd'",
    )


def _symlink_replaced_by_file(s: str) -> tuple[bytes, str | None]:
    # Writing a regular file where a symlink to the outside was must replace the link.
    return tar_of([E("evil", kind="symlink", link=f"{s}/victim"), E("evil", data=b"replaced")]), None


def _whiteout_through_symlink(s: str) -> tuple[bytes, str | None]:
    return tar_of([E("evil", kind="symlink", link=s), E("evil/.wh.victim")]), r"through symlink 'evil'"


def _opaque_through_symlink(s: str) -> tuple[bytes, str | None]:
    return tar_of([E("evil", kind="symlink", link=s), E("evil/.wh..wh..opq")]), r"through symlink 'evil'"


def _whiteout_dotdot(_s: str) -> tuple[bytes, str | None]:
    return tar_of([E(".wh..")]), r"names no entry: refused"


def _root_replaced(s: str) -> tuple[bytes, str | None]:
    return tar_of([E(".", kind="symlink", link=s)]), r"replace the layer root"


def _overlay_xattr(_s: str) -> tuple[bytes, str | None]:
    # A layer must not smuggle overlay metadata (redirects, opaque) through PAX xattrs.
    return tar_of([E("d/", kind="dir", pax={"SCHILY.xattr.user.overlay.redirect": "/etc"})]), None


HOSTILE: dict[str, Case] = {
    "dotdot": _dotdot,
    "absolute": _absolute,
    "absolute-to-sentinel": _absolute_to_sentinel,
    "inner-dotdot": _inner_dotdot,
    "pax-dotdot": _pax_dotdot,
    "gnu-long-dotdot": _gnu_long_dotdot,
    "symlink-abs-then-write": _symlink_abs_then_write,
    "symlink-dotdot-then-write": _symlink_dotdot_then_write,
    "symlink-chain": _symlink_chain,
    "symlink-nested": _symlink_nested,
    "hardlink-etc-passwd": _hardlink_etc_passwd,
    "hardlink-dotdot": _hardlink_dotdot,
    "hardlink-through-symlink": _hardlink_through_symlink,
    "devices": _devices,
    "dir-replaced-by-symlink": _dir_replaced_by_symlink,
    "symlink-replaced-by-file": _symlink_replaced_by_file,
    "whiteout-through-symlink": _whiteout_through_symlink,
    "opaque-through-symlink": _opaque_through_symlink,
    "whiteout-dotdot": _whiteout_dotdot,
    "root-replaced": _root_replaced,
    "overlay-xattr": _overlay_xattr,
}


# ---- tiny images in a store ----------------------------------------------------------------------


def build_image(
    store: Any,
    layers: Sequence[Sequence[E]],
    names: Sequence[str] = (),
    compress: bool = True,
    created: str = "2024-01-01T00:00:00Z",
    extra_config: dict[str, Any] | None = None,
) -> Any:
    """Put an image made of ``layers`` into ``store`` the way a pull would; returns the record."""
    from rootless.image.store import ImageRecord

    descs = []
    diff_ids = []
    for entries in layers:
        tar = tar_of(entries)
        blob = gz(tar) if compress else tar
        digest = store.put_blob(blob)
        diff_id = sha256(tar)
        store.add_layer_from_blob(diff_id, digest, label=f"test layer {diff_id[:19]}")
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
        diff_ids.append(diff_id)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Cmd": ["/bin/sh"], **(extra_config or {})},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    raw_config = json.dumps(config, sort_keys=True).encode()
    config_digest = store.put_blob(raw_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(raw_config),
        },
        "layers": descs,
    }
    raw_manifest = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = store.put_blob(raw_manifest)
    record = ImageRecord(
        id=config_digest,
        manifest_digest=manifest_digest,
        manifest_media_type=manifest["mediaType"],
        config_digest=config_digest,
        layers=descs,
        diff_ids=diff_ids,
        platform={"os": "linux", "architecture": "amd64"},
        created=created,
    )
    return store.put_image(record, list(names))
