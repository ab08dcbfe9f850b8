"""Store housekeeping: disk usage with shared-blob accounting, and prune.

`disk_usage` counts every inode once, so a bundle file hard-linked to its blob, or a blob several
models share, is counted once (DMR's `df` walks the store and counts hard links twice).
`prune` frees what no model needs: unreferenced blobs, stale partial downloads, orphaned manifests
and bundles, temp files of interrupted atomic writes. Its preview lists exactly what a real run
removes. `fsck` (re-hash and repair) is in `fsck.py`; update checks are in `updates.py`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrunner.core.errors import CoreError, InvalidInput
from modelrunner.core.store.index import Index
from modelrunner.core.store.layout import (
    INCOMPLETE_SUFFIX,
    STALE_INCOMPLETE_SECONDS,
    StoreLayout,
    StoreLock,
    parse_digest,
)
from modelrunner.core.store.package import index_files, parse_manifest

if TYPE_CHECKING:
    from modelrunner.core.store.store import ModelStore

FRESH_SECONDS = 60.0
"""Partials and temp files touched this recently may belong to a running pull or write: kept."""
TEMP_MARKER = ".tmp-"
"""atomic_write's and unpack_bundle's temp names: `<name>.tmp-<random>`."""

InodeKey = tuple[int, int]


def store_lock(store: ModelStore) -> StoreLock:
    """The store's own lock (re-entrant per process, so ModelStore calls may nest inside it)."""
    lock: StoreLock = store._lock  # a second StoreLock on the same file would deadlock us
    return lock


def read_index(layout: StoreLayout) -> Index:
    """models.json as it is now (an absent file is an empty index)."""
    try:
        return Index.parse(layout.index_file.read_bytes())
    except FileNotFoundError:
        return Index()


def referenced_digests(layout: StoreLayout, index: Index) -> set[str]:
    """Every blob a model needs: its index `files`, and what its manifest lists (if they differ)."""
    digests = {digest for entry in index.entries for digest in entry.files}
    for entry in index.entries:
        with contextlib.suppress(OSError, CoreError, ValueError, KeyError, TypeError):
            digests.update(index_files(parse_manifest(layout.manifest_path(entry.id).read_bytes())))
    return digests


def regular_files(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every regular file under root (symlinks are neither followed nor counted)."""
    if root.is_file() and not root.is_symlink():
        yield root, root.lstat()
        return
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            with contextlib.suppress(OSError):
                info = path.lstat()
                if stat.S_ISREG(info.st_mode):
                    yield path, info


def _key(info: os.stat_result) -> InodeKey:
    return info.st_dev, info.st_ino


def tree_bytes(root: Path) -> int:
    """Bytes of the files under root, each inode once (0 when root does not exist)."""
    sizes = {_key(info): info.st_size for _, info in regular_files(root)}
    return sum(sizes.values())


# -- disk usage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelUsage:
    """One model's share of the store."""

    id: str
    tags: tuple[str, ...]
    size: int
    """Its blobs, manifest and bundle, each inode once."""
    unique: int
    """Bytes no other model uses: what deleting it frees."""
    shared: int
    """Bytes other models use too."""


@dataclass(frozen=True)
class DiskUsage:
    """The store's and the engine's disk usage, each inode counted once."""

    total: int
    """Every file under the store root, each inode once (DMR's models_disk_usage, fixed)."""
    engine: int
    """The llama-server builds (DMR's default_backend_disk_usage)."""
    models: int
    """Files some model uses, each once."""
    models_unique: int
    """Files exactly one model uses."""
    models_shared: int
    """Files several models use, each once."""
    partials: int
    """Partial downloads (`.incomplete` and their range records)."""
    unreferenced: int
    """Blobs no model lists."""
    other: int
    """The rest: index, layout, orphaned manifests and bundles, temp files."""
    apparent: int
    """What DMR would report: every path's size, so hard links count twice."""
    per_model: tuple[ModelUsage, ...] = ()

    def to_api(self) -> dict[str, Any]:
        """GET /engines/df: DMR's two keys exactly, then our breakdown."""
        return {
            "models_disk_usage": self.total,
            "default_backend_disk_usage": self.engine,
            "models_unique": self.models_unique,
            "models_shared": self.models_shared,
            "partials": self.partials,
            "unreferenced": self.unreferenced,
            "other": self.other,
            "apparent_disk_usage": self.apparent,
            "models": [{**asdict(model), "tags": list(model.tags)} for model in self.per_model],
        }


def _is_blob_name(algorithm: str, name: str) -> bool:
    try:
        parse_digest(f"{algorithm}:{name}")
    except InvalidInput:
        return False
    return True


def disk_usage(store: ModelStore, engine_dir: Path | None = None) -> DiskUsage:
    """Measure the store (under its shared lock) and the engine directory."""
    layout = store.layout
    with store_lock(store).hold(exclusive=False):
        index = read_index(layout)
        files = list(regular_files(layout.root))
    sizes: dict[InodeKey, int] = {}
    by_path: dict[Path, InodeKey] = {}
    for path, info in files:
        sizes[_key(info)] = info.st_size
        by_path[path] = _key(info)
    in_bundles: dict[str, set[InodeKey]] = {}
    for path, key in by_path.items():
        if path.is_relative_to(layout.bundles_dir):
            bundle_name = path.relative_to(layout.bundles_dir).parts[0]
            in_bundles.setdefault(bundle_name, set()).add(key)
    owners: dict[InodeKey, int] = {}
    model_keys: list[set[InodeKey]] = []
    for entry in index.entries:
        keys: set[InodeKey] = set()
        for digest in entry.files:
            with contextlib.suppress(InvalidInput):
                keys.update(_keys_at(by_path, layout.blob_path(digest)))
        keys.update(_keys_at(by_path, layout.manifest_path(entry.id)))
        keys.update(in_bundles.get(layout.bundle_path(entry.id).name, ()))
        model_keys.append(keys)
        for key in keys:
            owners[key] = owners.get(key, 0) + 1
    referenced = {digest for entry in index.entries for digest in entry.files}
    partial_keys: set[InodeKey] = set()
    loose_keys: set[InodeKey] = set()
    for path, key in by_path.items():
        if key in owners or path.parent.parent != layout.blobs_dir:
            continue
        if INCOMPLETE_SUFFIX in path.name:
            partial_keys.add(key)
        elif (
            _is_blob_name(path.parent.name, path.name)
            and f"{path.parent.name}:{path.name}" not in referenced
        ):
            loose_keys.add(key)
    loose_keys -= partial_keys
    per_model = tuple(
        ModelUsage(
            id=entry.id,
            tags=tuple(entry.tags),
            size=sum(sizes[key] for key in keys),
            unique=sum(sizes[key] for key in keys if owners[key] == 1),
            shared=sum(sizes[key] for key in keys if owners[key] > 1),
        )
        for entry, keys in zip(index.entries, model_keys, strict=True)
    )
    total = sum(sizes.values())
    models = sum(sizes[key] for key in owners)
    shared = sum(sizes[key] for key, count in owners.items() if count > 1)
    partials = sum(sizes[key] for key in partial_keys)
    unreferenced = sum(sizes[key] for key in loose_keys)
    return DiskUsage(
        total=total,
        engine=tree_bytes(engine_dir) if engine_dir is not None else 0,
        models=models,
        models_unique=models - shared,
        models_shared=shared,
        partials=partials,
        unreferenced=unreferenced,
        other=total - models - partials - unreferenced,
        apparent=sum(info.st_size for _, info in files),
        per_model=per_model,
    )


def _keys_at(by_path: dict[Path, InodeKey], path: Path) -> list[InodeKey]:
    key = by_path.get(path)
    return [key] if key is not None else []


# -- prune ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneItem:
    """One thing prune removes."""

    path: str
    """Relative to the store root, e.g. "blobs/sha256/<hex>.incomplete"."""
    kind: str
    """"blob" (unreferenced), "partial", "manifest" (orphaned), "bundle" (orphaned) or "temp"."""
    size: int
    """Bytes of its files (a directory's summed)."""


@dataclass(frozen=True)
class PruneReport:
    """What a prune removes (dry run: would remove) and the bytes that frees."""

    dry_run: bool
    items: tuple[PruneItem, ...]
    freed: int
    """Bytes returned to the filesystem: inodes whose every link goes (a blob hard-linked from
    outside the store frees nothing)."""
    errors: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        """The JSON of POST /models/prune."""
        return {
            "dry_run": self.dry_run,
            "freed": self.freed,
            "items": [asdict(item) for item in self.items],
            "errors": list(self.errors),
        }


def prune(
    store: ModelStore,
    *,
    dry_run: bool,
    older_than: float | None = None,
    keep: Collection[str] = (),
    fresh_seconds: float = FRESH_SECONDS,
    now: float | None = None,
) -> PruneReport:
    """Remove (or, with dry_run, list) what no model needs, under the exclusive store lock.

    Args:
        older_than: Partials older than this many seconds go (None: DMR's 7 days; 0: all).
        keep: Blob digests to spare (those of pulls under way).
        fresh_seconds: Partials, temp files and unreferenced blobs modified this recently are
            spared whatever older_than says: a pull or a write may be producing them.
        now: The clock, for tests.
    """
    moment = time.time() if now is None else now
    partial_age = STALE_INCOMPLETE_SECONDS if older_than is None else max(0.0, older_than)
    with store_lock(store).hold(exclusive=True):
        plan = _plan(store.layout, keep, moment, partial_age, max(0.0, fresh_seconds))
        freed = _freed_bytes(store.layout.root, plan)
        errors: list[str] = []
        if not dry_run:
            for item in plan:
                target = store.layout.root / item.path
                try:
                    if target.is_dir() and not target.is_symlink():
                        shutil.rmtree(target)
                    else:
                        target.unlink(missing_ok=True)
                except OSError as error:
                    errors.append(f"{item.path}: {error.strerror or error}")
    return PruneReport(dry_run, tuple(plan), freed, tuple(errors))


def _plan(
    layout: StoreLayout, keep: Collection[str], now: float, partial_age: float, fresh: float
) -> list[PruneItem]:
    index = read_index(layout)
    needed = referenced_digests(layout, index) | set(keep)
    ids = {entry.id.removeprefix("sha256:") for entry in index.entries}
    plan: list[PruneItem] = []

    def add(path: Path, kind: str) -> None:
        plan.append(PruneItem(str(path.relative_to(layout.root)), kind, _size_of(path)))

    def age(path: Path) -> float:
        try:
            return now - path.lstat().st_mtime
        except OSError:
            return -1.0

    for path in _children(layout.root):
        if TEMP_MARKER in path.name and age(path) > fresh:
            add(path, "temp")
    for directory in _children(layout.blobs_dir):
        for path in _children(directory):
            name = path.name
            if INCOMPLETE_SUFFIX in name:
                if age(path) > max(partial_age, fresh):
                    add(path, "partial")
            elif TEMP_MARKER in name:
                if age(path) > fresh:
                    add(path, "temp")
            elif (
                _is_blob_name(directory.name, name)
                and f"{directory.name}:{name}" not in needed
                and age(path) > fresh
            ):
                add(path, "blob")
    for path in _children(layout.manifests_dir):
        if TEMP_MARKER in path.name:
            if age(path) > fresh:
                add(path, "temp")
        elif path.name not in ids and _is_blob_name("sha256", path.name):
            add(path, "manifest")
    for path in _children(layout.bundles_dir):
        if TEMP_MARKER in path.name:
            if age(path) > fresh:
                add(path, "temp")
        elif _is_blob_name("sha256", path.name) and (
            path.name not in ids or not (layout.manifests_dir / path.name).is_file()
        ):
            add(path, "bundle")
    return plan


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except OSError:
        return []


def _size_of(path: Path) -> int:
    return sum(info.st_size for _, info in regular_files(path))


def _freed_bytes(root: Path, plan: Sequence[PruneItem]) -> int:
    """Bytes freed by removing the plan: inodes all of whose links are in it."""
    removed: dict[InodeKey, int] = {}
    info_of: dict[InodeKey, os.stat_result] = {}
    seen: set[Path] = set()
    for item in plan:
        for path, info in regular_files(root / item.path):
            if path in seen:
                continue
            seen.add(path)
            removed[_key(info)] = removed.get(_key(info), 0) + 1
            info_of[_key(info)] = info
    return sum(
        info_of[key].st_size for key, links in removed.items() if links >= info_of[key].st_nlink
    )
