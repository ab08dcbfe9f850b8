"""Housekeeping on real stores: df's inode accounting, prune's preview and safety, fsck, repair."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from modelrunner.core.store.fsck import fsck
from modelrunner.core.store.housekeeping import disk_usage, prune
from modelrunner.core.store.layout import file_digest
from modelrunner.core.store.store import ModelStore, StoredModel

DAY = 24 * 3600.0


def _two_sharing(store: ModelStore, gguf: Path) -> tuple[StoredModel, StoredModel, str]:
    """Two models over one GGUF blob (their configs differ); returns them and the GGUF digest."""
    first = store.package_gguf(gguf, "ai/first:v1")
    second = store.package_gguf(gguf, "ai/second:v1", context_size=1024)
    assert first.id != second.id
    weights = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    return first, second, weights


def _files(root: Path) -> dict[str, os.stat_result]:
    return {
        str(path.relative_to(root)): path.lstat()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


def _age(path: Path, seconds: float) -> Path:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))
    return path


def _write(path: Path, size: int, *, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return _age(path, age)


def test_df_counts_a_shared_blob_and_a_hard_link_once(store: ModelStore, tiny_gguf: Path) -> None:
    first, second, weights = _two_sharing(store, tiny_gguf)
    store.bundle(first.id)  # model/model.gguf is a hard link to the weights blob
    weight_size = store.blob_path(weights).stat().st_size

    usage = disk_usage(store)

    apparent = sum(info.st_size for info in _files(store.root).values())
    assert usage.apparent == apparent
    assert usage.total == apparent - weight_size  # the bundle's link is not counted again
    assert usage.models_shared == weight_size
    by_id = {model.id: model for model in usage.per_model}
    assert by_id[first.id].shared == by_id[second.id].shared == weight_size
    assert by_id[first.id].unique == by_id[first.id].size - weight_size
    assert usage.models == by_id[first.id].size + by_id[second.id].unique
    assert usage.models_unique == usage.models - weight_size
    assert usage.partials == usage.unreferenced == 0
    api = usage.to_api()
    assert api["models_disk_usage"] == usage.total
    assert api["default_backend_disk_usage"] == 0


def test_df_reports_partials_unreferenced_blobs_and_the_engine(
    store: ModelStore, tiny_gguf: Path, tmp_path: Path
) -> None:
    store.package_gguf(tiny_gguf, "ai/first:v1")
    blobs = store.layout.blobs_dir / "sha256"
    _write(blobs / ("a" * 64 + ".incomplete"), 1000)
    _write(blobs / ("a" * 64 + ".incomplete.ranges"), 24)
    _write(blobs / ("b" * 64), 500)
    engine = tmp_path / "cache" / "llama-server"
    binary = _write(engine / "b1" / "bin" / "llama-server", 3000)
    os.link(binary, engine / "b1" / "bin" / "llama-server-link")

    usage = disk_usage(store, engine)

    assert usage.partials == 1024
    assert usage.unreferenced == 500
    assert usage.engine == 3000
    assert usage.total == usage.models + usage.partials + usage.unreferenced + usage.other


def _messy_store(store: ModelStore, gguf: Path) -> dict[str, Path]:
    """A store with one live model and every kind of leftover prune knows."""
    first, second, weights = _two_sharing(store, gguf)
    store.bundle(first.id)
    store.bundle(second.id)
    second_bundle = store.layout.bundle_path(second.id)
    store.remove("ai/second:v1")  # its config goes; the shared weights stay
    blobs = store.layout.blobs_dir / "sha256"
    orphan_bundle = store.layout.bundles_dir / ("c" * 64)
    (orphan_bundle / "model").mkdir(parents=True)
    os.link(store.blob_path(weights), orphan_bundle / "model" / "model.gguf")  # frees nothing
    _write(orphan_bundle / "config.json", 40)
    assert not second_bundle.exists()
    return {
        "loose": _write(blobs / ("d" * 64), 700, age=DAY),
        "stale": _write(blobs / ("e" * 64 + ".incomplete"), 900, age=8 * DAY),
        "stale_ranges": _write(blobs / ("e" * 64 + ".incomplete.ranges"), 30, age=8 * DAY),
        "recent": _write(blobs / ("f" * 64 + ".incomplete"), 800, age=2 * DAY),
        "fresh": _write(blobs / ("1" * 64 + ".incomplete"), 600),
        "fresh_loose": _write(blobs / ("2" * 64), 650),
        "manifest": _write(store.layout.manifests_dir / ("3" * 64), 300, age=DAY),
        "temp": _write(store.root / "models.json.tmp-123", 50, age=DAY),
        "fresh_temp": _write(store.root / "models.json.tmp-456", 50),
        "bundle": orphan_bundle,
        "weights": store.blob_path(weights),
    }


def test_prune_preview_is_exactly_what_prune_frees(store: ModelStore, tiny_gguf: Path) -> None:
    paths = _messy_store(store, tiny_gguf)
    root = store.root
    needed = {digest for model in store.list() for digest in _index_files(store, model.id)}
    before = _files(root)

    preview = prune(store, dry_run=True)

    assert _files(root).keys() == before.keys()  # a preview touches nothing
    listed = {item.path: item.kind for item in preview.items}
    expected = {
        str(paths[name].relative_to(root)): kind
        for name, kind in [
            ("loose", "blob"),
            ("stale", "partial"),
            ("stale_ranges", "partial"),
            ("manifest", "manifest"),
            ("temp", "temp"),
            ("bundle", "bundle"),
        ]
    }
    assert listed == expected
    assert preview.freed == 700 + 900 + 30 + 300 + 50 + 40  # the linked weights stay on disk

    done = prune(store, dry_run=False)

    assert done.items == preview.items
    assert done.freed == preview.freed
    assert not done.errors
    after = _files(root)
    gone = before.keys() - after.keys()
    assert all(any(path == item or path.startswith(item + "/") for item in listed) for path in gone)
    freed = {
        (info.st_dev, info.st_ino): info.st_size for path, info in before.items() if path in gone
    }
    still = {(info.st_dev, info.st_ino) for info in after.values()}
    assert sum(size for key, size in freed.items() if key not in still) == done.freed
    for name in ("recent", "fresh", "fresh_loose", "fresh_temp", "weights"):
        assert paths[name].exists(), name
    for digest in needed:  # every referenced blob is intact
        assert file_digest(store.blob_path(digest)) == digest
    assert store.bundle("ai/first:v1").gguf.is_file()
    assert prune(store, dry_run=True).items == ()


def test_prune_all_partials_still_spares_fresh_ones_unless_told(
    store: ModelStore, tiny_gguf: Path
) -> None:
    paths = _messy_store(store, tiny_gguf)

    report = prune(store, dry_run=False, older_than=0)

    assert not paths["recent"].exists()
    assert not paths["stale"].exists()
    assert paths["fresh"].exists()
    assert paths["fresh_loose"].exists()
    report = prune(store, dry_run=False, older_than=0, fresh_seconds=0)
    kinds = {item.path.rsplit("/", 1)[-1]: item.kind for item in report.items}
    assert kinds == {paths["fresh"].name: "partial", paths["fresh_loose"].name: "blob",
                     paths["fresh_temp"].name: "temp"}  # fmt: skip
    assert paths["weights"].exists()


def test_prune_keeps_blobs_of_pulls_under_way(store: ModelStore, tiny_gguf: Path) -> None:
    store.package_gguf(tiny_gguf, "ai/first:v1")
    loose = _write(store.layout.blobs_dir / "sha256" / ("d" * 64), 10, age=DAY)

    assert prune(store, dry_run=False, keep={"sha256:" + "d" * 64}).items == ()
    assert loose.exists()


def _index_files(store: ModelStore, model_id: str) -> list[str]:
    from modelrunner.core.store.package import index_files, parse_manifest

    return index_files(parse_manifest(store.manifest_bytes(model_id)))


def _flip_a_byte(path: Path) -> None:
    with path.open("r+b") as stream:
        stream.seek(1000)
        byte = stream.read(1)
        stream.seek(1000)
        stream.write(bytes([byte[0] ^ 0xFF]))


def test_fsck_finds_a_flipped_byte_and_a_deleted_blob_and_repair_lets_package_restore(
    store: ModelStore, tiny_gguf: Path, other_gguf: Path, tmp_path: Path
) -> None:
    pristine = tmp_path / "pristine.gguf"
    shutil.copyfile(tiny_gguf, pristine)  # the blob is a hard link to tiny_gguf: keep the bytes
    first = store.package_gguf(tiny_gguf, "ai/first:v1")
    other = store.package_gguf(other_gguf, "ai/other:v1")
    store.bundle(first.id)
    assert fsck(store, repair=False).ok
    weights = _index_files(store, first.id)[0]
    other_weights = _index_files(store, other.id)[0]
    _flip_a_byte(store.blob_path(weights))
    store.blob_path(other_weights).unlink()

    report = fsck(store, repair=False)

    found = {(p.kind, p.subject): p for p in report.problems}
    assert found["corrupt_blob", weights].models == (first.id,)
    assert found["missing_blob", other_weights].models == (other.id,)
    assert found["broken_bundle", first.id].detail.startswith("it holds the damaged blob")
    assert all(p.repaired is None for p in report.problems)
    assert store.blob_path(weights).exists()
    good = {d: store.blob_path(d).read_bytes() for d in _index_files(store, other.id)[1:]}

    repaired = fsck(store, repair=True)

    assert {(p.kind, p.subject) for p in repaired.problems} >= {
        ("corrupt_blob", weights),
        ("missing_blob", other_weights),
    }
    assert not store.blob_path(weights).exists()
    assert not store.layout.bundle_path(first.id).exists()
    for digest, data in good.items():  # good blobs are never deleted
        assert store.blob_path(digest).read_bytes() == data
    assert [m.id for m in store.list()] == [first.id, other.id]  # tags kept for a re-pull

    store.package_gguf(pristine, "ai/first:v1")  # the same layer blobs come back
    store.package_gguf(other_gguf, "ai/other:v1")
    assert fsck(store, repair=False).ok  # the first two models are whole again
    assert store.bundle("ai/first:v1").gguf.read_bytes() == pristine.read_bytes()


def test_fsck_drops_entries_without_manifests_and_rebuilds_copied_bundles(
    store: ModelStore, tiny_gguf: Path, other_gguf: Path
) -> None:
    first = store.package_gguf(tiny_gguf, "ai/first:v1")
    other = store.package_gguf(other_gguf, "ai/other:v1")
    gguf = store.bundle(first.id).gguf
    copy = gguf.with_name("copy")
    shutil.copyfile(gguf, copy)
    copy.replace(gguf)  # same bytes, no longer a hard link to the blob
    store.layout.manifest_path(other.id).unlink()

    report = fsck(store, repair=False)

    kinds = {(p.kind, p.subject) for p in report.problems}
    assert kinds == {
        ("broken_bundle", first.id),
        ("missing_manifest", other.id),
        ("dangling_tag", "docker.io/ai/other:v1"),
    }

    repaired = fsck(store, repair=True)

    assert all(p.repaired for p in repaired.problems)
    assert [m.id for m in store.list()] == [first.id]
    weights = store.blob_path(_index_files(store, first.id)[0]).stat()
    rebuilt = store.layout.bundle_path(first.id) / "model" / "model.gguf"
    assert (rebuilt.stat().st_ino, rebuilt.stat().st_dev) == (weights.st_ino, weights.st_dev)
    assert fsck(store, repair=False).ok
