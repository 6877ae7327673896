"""The image store: verified blobs, atomic layers, names, refcounted removal, crash consistency."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from rootless.errors import ConflictError, ImageError, NotFoundError, StorageError, UsageError
from rootless.image.store import ImageRecord, Store
from tests.unit.image.hostile import E, build_image, gz, sha256, tar_of

BASE = [E("bin/", kind="dir"), E("bin/sh", data=b"shell", mode=0o755), E("ro/", kind="dir", mode=0o555), E("ro/f")]
APP = [E("app/", kind="dir"), E("app/run", data=b"run", mode=0o755)]
OTHER = [E("other", data=b"other")]


def layer_digests(rec: ImageRecord) -> list[str]:
    return [d["digest"] for d in rec.layers]


# ---- blobs -------------------------------------------------------------------------------------------


def test_blob_writer_verifies(tmp_path: Path) -> None:
    store = Store(tmp_path)
    data = b"hello blob"
    with store.blob_writer(sha256(data), len(data)) as w:
        w.write(data[:4])
        w.write(data[4:])
    assert store.has_blob(sha256(data))
    assert store.read_blob(sha256(data)) == data
    with pytest.raises(ImageError, match="does not match its digest") as ei, store.blob_writer(sha256(b"other")) as w:
        w.write(b"something else")
    assert "\n" not in ei.value.line()
    assert not store.has_blob(sha256(b"other"))
    assert os.listdir(store.tmp_dir) == []


def test_blob_writer_size_limit(tmp_path: Path) -> None:
    store = Store(tmp_path)
    w = store.blob_writer(sha256(b"abc"), 3)
    with pytest.raises(ImageError, match="larger than"):
        w.write(b"abcd")
    w.abort()
    assert os.listdir(store.tmp_dir) == []


def test_blob_writer_reset_and_resume(tmp_path: Path) -> None:
    store = Store(tmp_path)
    data = os.urandom(300_000)
    w = store.blob_writer(sha256(data), len(data))
    w.write(b"garbage from a first attempt")
    w.reset()
    w.write(data[:100_000])
    w.write(b"x" * 5000)  # a corrupt tail: resume from 100_000
    w.truncate_to(100_000)
    assert w.tell() == 100_000
    w.write(data[100_000:])
    path = w.commit()
    assert path.read_bytes() == data
    assert os.listdir(store.tmp_dir) == []


# ---- layers ------------------------------------------------------------------------------------------


def test_layer_writer_publishes_atomically(tmp_path: Path) -> None:
    store = Store(tmp_path)
    tar = tar_of(BASE)
    diff_id = sha256(tar)
    assert not store.layer_present(diff_id)
    with store.layer_writer(diff_id, label="layer x") as lw:
        lw.unpack(io.BytesIO(gz(tar)))
        assert not store.layer_present(diff_id)  # invisible until the writer is done
    assert store.layer_present(diff_id)
    info = store.layer_info(diff_id)
    assert info is not None and info.size == len(tar) and info.diff_id == diff_id
    assert (store.layer_dir(diff_id) / "bin/sh").read_bytes() == b"shell"
    meta = json.loads((store.layer_path(diff_id) / "layer.json").read_text())
    assert set(meta) >= {"diff_id", "size", "created", "flattened"}
    assert os.listdir(store.tmp_dir) == []


def test_layer_writer_failure_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path)
    tar = tar_of([*BASE, E("../evil")])
    with pytest.raises(ImageError, match="escapes the layer"), store.layer_writer(sha256(tar)) as lw:
        lw.unpack(io.BytesIO(tar))
    assert not store.layer_present(sha256(tar))
    assert os.listdir(store.tmp_dir) == []
    assert os.listdir(store.layers_dir) == []
    # A wrong diff id is refused too.
    with pytest.raises(ImageError, match="the image config says"):
        store.add_layer("sha256:" + "1" * 64, io.BytesIO(tar_of(BASE)))
    assert store.check() == []


def _add_and_put(root: str, barrier: Any, result: Any) -> None:
    try:
        store = Store(root)
        barrier.wait()
        rec = build_image(store, [BASE, APP], names=["example.com/app:1"])
        result.put(("ok", rec.id))
    except BaseException as e:  # pragma: no cover - reported to the parent
        result.put(("error", repr(e)))


def test_concurrent_pulls_of_one_image(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(3)
    result = ctx.Queue()
    procs = [ctx.Process(target=_add_and_put, args=(str(tmp_path), barrier, result)) for _ in range(3)]
    for p in procs:
        p.start()
    outcomes = [result.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert [o[0] for o in outcomes] == ["ok"] * 3, outcomes
    assert len({o[1] for o in outcomes}) == 1
    store = Store(tmp_path)
    assert store.check() == []
    assert len(store.list_images()) == 1
    assert os.listdir(store.tmp_dir) == []


def _slow_unpack(root: str, ready: str) -> None:
    store = Store(root)
    r, w = os.pipe()
    tar = tar_of([E(f"f{i}", data=os.urandom(500)) for i in range(50)])
    assert len(tar) // 2 < 60_000  # fits in the pipe
    os.write(w, tar[: len(tar) // 2])  # half a layer, then the writer "hangs" mid-download
    with store.layer_writer(sha256(tar)) as lw:
        Path(ready).write_text("go")
        with os.fdopen(r, "rb") as stream:
            lw.unpack(stream)  # blocks forever on the pipe


def test_killed_writer_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ready = tmp_path / "ready"
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_slow_unpack, args=(str(root), str(ready)))
    p.start()
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    store = Store(root)
    # While it runs, its work is in progress, not a problem.
    assert store.check() == []
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert store.list_layers() == []
    problems = store.check()
    assert [pr.kind for pr in problems] == ["tmp-stale"], problems
    fixed = store.repair()
    assert [pr.kind for pr in fixed] == ["tmp-stale"]
    assert store.check() == []
    assert os.listdir(store.tmp_dir) == []


def test_other_process_published_first(tmp_path: Path) -> None:
    store = Store(tmp_path)
    tar = tar_of(BASE)
    with store.layer_writer(sha256(tar)) as first:
        first.unpack(io.BytesIO(tar))
        with store.layer_writer(sha256(tar)) as second:
            second.unpack(io.BytesIO(tar))
    assert second.reused is False and first.reused is True
    assert store.layer_present(sha256(tar))
    assert os.listdir(store.tmp_dir) == []
    assert store.check() == []


# ---- images and names ------------------------------------------------------------------------------------


def test_put_resolve_tag_untag(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rec = build_image(
        store, [BASE], names=["docker.io/library/base:latest", f"docker.io/library/base@{'sha256:' + 'a' * 64}"]
    )
    assert rec.repo_tags == ["docker.io/library/base:latest"]
    assert store.resolve("docker.io/library/base").id == rec.id
    assert store.resolve("docker.io/library/base:latest").id == rec.id
    assert store.resolve(f"docker.io/library/base@sha256:{'a' * 64}").id == rec.id
    assert store.resolve(rec.id).id == rec.id
    assert store.resolve(rec.id[7:19]).id == rec.id
    assert store.resolve(rec.id[:12]).id == rec.id  # "sha256:abcde"
    with pytest.raises(NotFoundError, match="no such image: nope"):
        store.resolve("nope:1")
    store.tag(rec.short_id, "example.com/x:2")
    assert store.get_image(rec.id).repo_tags == ["docker.io/library/base:latest", "example.com/x:2"]
    assert store.untag("example.com/x:2") == rec.id
    with pytest.raises(UsageError, match="invalid image name"):
        store.tag(rec.id, "no tag here")
    assert rec.size == store.layer_info(rec.diff_ids[0]).size  # type: ignore[union-attr]


def test_ambiguous_prefix(tmp_path: Path) -> None:
    store = Store(tmp_path)
    ids = [build_image(store, [BASE], created=f"2024-01-0{i}T00:00:00Z").id for i in range(1, 10)]
    first_chars = [i[7] for i in ids]
    dup = next((c for c in first_chars if first_chars.count(c) > 1), None)
    if dup is None:
        pytest.skip("no shared first hex digit among the ids")
    with pytest.raises(UsageError, match="ambiguous"):
        store.resolve(dup)


def test_put_image_refuses_missing_parts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rec = build_image(store, [BASE])
    broken = ImageRecord.from_json({**rec.to_json(), "diff_ids": ["sha256:" + "2" * 64]})
    with pytest.raises(StorageError, match="is missing"):
        store.put_image(broken)


# ---- removal -------------------------------------------------------------------------------------------


def test_rmi_refcounts_layers_and_blobs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a = build_image(store, [BASE, APP], names=["x/a:1"])
    b = build_image(store, [BASE, OTHER], names=["x/b:1"])
    shared, only_a = a.diff_ids
    res = store.remove_image("x/a:1")
    assert res.untagged == ["x/a:1"] and res.deleted == [a.id]
    assert res.layers_removed == [only_a]
    assert store.layer_present(shared) and not store.layer_present(only_a)
    assert not store.has_blob(layer_digests(a)[1]) and store.has_blob(layer_digests(a)[0])
    assert not store.has_blob(a.manifest_digest) and not store.has_blob(a.config_digest)
    assert store.check() == []
    store.remove_image(b.id)
    assert store.list_layers() == [] and os.listdir(store.blobs_dir) == []
    assert store.check() == [] and os.listdir(store.tmp_dir) == []


def test_rmi_by_name_only_untags_when_other_tags_remain(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rec = build_image(store, [BASE], names=["x/a:1", "x/a:2"])
    res = store.remove_image("x/a:1")
    assert res.untagged == ["x/a:1"] and res.deleted == []
    with pytest.raises(NotFoundError):
        store.resolve("x/a:1")
    store.tag(rec.id, "y/b:1")
    with pytest.raises(ConflictError, match="referenced by 2 names"):
        store.remove_image(rec.id)
    res = store.remove_image(rec.id, force=True)
    assert sorted(res.untagged) == ["x/a:2", "y/b:1"] and res.deleted == [rec.id]


def test_rmi_in_use(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rec = build_image(store, [BASE], names=["x/a:1"])
    used = {rec.id}
    with pytest.raises(ConflictError, match="a container uses image"):
        store.remove_image("x/a:1", in_use=used.__contains__)
    assert store.resolve("x/a:1").id == rec.id
    res = store.remove_image("x/a:1", force=True, in_use=used.__contains__)
    assert res.untagged == ["x/a:1"] and res.deleted == []
    assert store.get_image(rec.id).repo_tags == []  # stays for its container, dangling
    assert store.layer_present(rec.diff_ids[0])


def test_prune(tmp_path: Path) -> None:
    store = Store(tmp_path)
    tagged = build_image(store, [BASE], names=["x/a:1"])
    dangling = build_image(store, [BASE, OTHER])
    used = build_image(store, [APP])
    res = store.prune(in_use={used.id}.__contains__)
    assert res.deleted == [dangling.id]
    assert store.layer_present(tagged.diff_ids[0])
    res = store.prune(dangling_only=False, in_use={used.id}.__contains__)
    assert res.deleted == [tagged.id]
    assert [r.id for r in store.list_images()] == [used.id]
    assert store.check() == []


def test_prune_orphans_after_interrupted_pull(tmp_path: Path) -> None:
    store = Store(tmp_path)
    tar = tar_of(OTHER)
    store.add_layer(sha256(tar), io.BytesIO(tar))
    store.put_blob(b"orphan")
    assert store.prune().layers_removed == []  # young: may belong to a pull in progress
    res = store.prune(orphans_older_than=0)
    assert res.layers_removed == [sha256(tar)] and res.blobs_removed == [sha256(b"orphan")]


def test_df(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a = build_image(store, [BASE, APP], names=["x/a:1"])
    build_image(store, [BASE, OTHER], names=["x/b:1"])
    usage = store.df(in_use={a.id}.__contains__)
    base_size = store.layer_info(a.diff_ids[0]).size  # type: ignore[union-attr]
    assert usage.layers == 3
    assert usage.layers_shared_size == base_size
    ua = next(u for u in usage.images if u.id == a.id)
    assert ua.shared_size == base_size and ua.in_use
    assert usage.blobs == 2 * 2 + 3 and usage.blobs_size > 0


# ---- check and repair ------------------------------------------------------------------------------------


def test_check_and_repair_find_damage(tmp_path: Path) -> None:
    store = Store(tmp_path)
    good = build_image(store, [BASE], names=["x/good:1"])
    bad = build_image(store, [APP], names=["x/bad:1"])
    assert store.check() == []
    # A blob whose content changed, a layer without layer.json, a tag to nowhere, tmp junk.
    store.blob_path(layer_digests(bad)[0]).write_bytes(b"bit rot")
    (store.layers_dir / ("3" * 64) / "diff").mkdir(parents=True)
    repos = json.loads(store.repos_path.read_text())
    repos["x/ghost:1"] = "sha256:" + "4" * 64
    store.repos_path.write_text(json.dumps(repos))
    (store.tmp_dir / "layer-99999-dead").mkdir()
    (store.root / ".repositories.json.tmp-1-abcd").write_text("{")
    os.unlink(store.layer_path(bad.diff_ids[0]) / "layer.json")
    kinds = sorted(pr.kind for pr in store.check())
    assert kinds == sorted(
        [
            "blob-corrupt",
            "layer-incomplete",
            "layer-incomplete",
            "image-missing-layer",
            "tag-dangling",
            "tmp-stale",
            "temp-file",
        ]
    ), kinds
    store.repair()
    assert store.check() == []
    assert [r.id for r in store.list_images()] == [good.id]
    assert (store.layer_dir(good.diff_ids[0]) / "bin/sh").read_bytes() == b"shell"


def test_corrupt_record_is_reported_not_fatal(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rec = build_image(store, [BASE], names=["x/a:1"])
    (store.images_dir / rec.id[7:] / "image.json").write_text("{not json")
    assert store.list_images() == []
    with pytest.raises(StorageError, match="corrupt") as ei:
        store.resolve("x/a:1")
    assert "\n" not in ei.value.line()
    assert {pr.kind for pr in store.check()} == {"image-corrupt", "tag-dangling"}
    store.repair()
    assert store.check() == []
