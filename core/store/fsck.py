"""fsck: re-hash every blob and manifest of the store; report what is broken, or repair it.

Hashing runs without the store lock (blobs are immutable and content-addressed), so a long check
does not block the store. Every finding is confirmed again under the lock before it is reported;
a repair re-hashes a blob once more before removing it, so a good blob is never deleted.
Repairs: corrupt blobs are removed (a later package or pull brings them back) together with the
bundles that hard-link them; broken bundles are rebuilt; index entries whose manifest is missing or
does not hash to their ID are dropped (their tags with them).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from modelrunner.core.errors import CoreError, InvalidInput
from modelrunner.core.store import media_types
from modelrunner.core.store.bundle import BundleInvalid, parse_bundle
from modelrunner.core.store.housekeeping import read_index, regular_files, store_lock
from modelrunner.core.store.index import Index
from modelrunner.core.store.layout import (
    INCOMPLETE_SUFFIX,
    StoreLayout,
    atomic_write,
    file_digest,
    parse_digest,
    sha256_digest,
)
from modelrunner.core.store.package import parse_manifest

if TYPE_CHECKING:
    from modelrunner.core.store.store import ModelStore

_BY_ROLE_LINKED = frozenset(
    {
        media_types.GGUF,
        media_types.SAFETENSORS,
        media_types.MMPROJ,
        media_types.CHAT_TEMPLATE,
        media_types.DDUF,
    }
)
"""V0.1 layers unpack_bundle hard-links into a bundle (tar layers are extracted instead)."""


@dataclass(frozen=True)
class FsckProblem:
    """One thing fsck found wrong."""

    kind: str
    """"corrupt_blob", "missing_blob", "missing_manifest", "corrupt_manifest", "dangling_tag"
    or "broken_bundle"."""
    subject: str
    """The blob digest, model ID or tag concerned."""
    detail: str
    models: tuple[str, ...] = ()
    """IDs of the models affected (empty for a blob no model lists)."""
    repaired: str | None = None
    """What the repair did, when it did something."""


@dataclass(frozen=True)
class FsckReport:
    """The outcome of one fsck."""

    repair: bool
    blobs_checked: int
    bytes_checked: int
    manifests_checked: int
    problems: tuple[FsckProblem, ...]

    @property
    def ok(self) -> bool:
        """Whether nothing was wrong."""
        return not self.problems

    def to_api(self) -> dict[str, Any]:
        """The JSON of POST /models/fsck."""
        return {
            "ok": self.ok,
            "repair": self.repair,
            "blobs_checked": self.blobs_checked,
            "bytes_checked": self.bytes_checked,
            "manifests_checked": self.manifests_checked,
            "problems": [{**asdict(p), "models": list(p.models)} for p in self.problems],
        }


def _blob_state(layout: StoreLayout, digest: str) -> str | None:
    """None when the blob is present and hashes to its digest, else what is wrong."""
    try:
        path = layout.blob_path(digest)
        algorithm, _ = parse_digest(digest)
        actual = file_digest(path, algorithm)
    except FileNotFoundError:
        return "missing"
    except (OSError, InvalidInput) as error:
        return f"unreadable: {error}"
    return None if actual == digest else f"content hashes to {actual}"


def _manifest_state(layout: StoreLayout, model_id: str) -> str | None:
    try:
        data = layout.manifest_path(model_id).read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable: {error.strerror}"
    actual = sha256_digest(data)
    return None if actual == model_id else f"content hashes to {actual}"


def _all_blobs(layout: StoreLayout) -> list[str]:
    digests: list[str] = []
    with contextlib.suppress(OSError):
        for directory in sorted(layout.blobs_dir.iterdir()):
            for path in sorted(directory.iterdir()) if directory.is_dir() else []:
                if INCOMPLETE_SUFFIX in path.name or not path.is_file():
                    continue
                with contextlib.suppress(InvalidInput):
                    parse_digest(f"{directory.name}:{path.name}")
                    digests.append(f"{directory.name}:{path.name}")
    return digests


def _linked_digests(document: Mapping[str, Any]) -> set[str]:
    """Layers unpack_bundle hard-links into the bundle (so their inode must be the blob's)."""
    layers = [layer for layer in document.get("layers") or [] if isinstance(layer, Mapping)]
    config_type = (document.get("config") or {}).get("mediaType")
    cncf = document.get("artifactType") == media_types.CNCF_MANIFEST_ARTIFACT
    by_role = config_type == media_types.CONFIG_V01 and not cncf
    linked: set[str] = set()
    for layer in layers:
        annotations = layer.get("annotations")
        annotated = isinstance(annotations, Mapping) and isinstance(
            annotations.get(media_types.ANNOTATION_FILEPATH), str
        )
        kind = layer.get("mediaType")
        if (
            by_role and (kind in _BY_ROLE_LINKED or (kind == media_types.MODEL_FILE and annotated))
        ) or (not by_role and annotated):
            linked.add(str(layer["digest"]))
    return linked


def _bundle_state(layout: StoreLayout, model_id: str, bad_blobs: set[str]) -> str | None:
    """None when the model's bundle is absent (built on first use) or sound, else why not."""
    root = layout.bundle_path(model_id)
    if not root.exists():
        return None
    try:
        parse_bundle(root)
        document = parse_manifest(layout.manifest_path(model_id).read_bytes())
    except BundleInvalid as error:
        return f"unusable: {error}"
    except (OSError, CoreError):
        return None  # the manifest problem is reported on its own
    inodes = {(info.st_dev, info.st_ino) for _, info in regular_files(root)}
    for digest in sorted(_linked_digests(document)):
        if digest in bad_blobs:
            return f"it holds the damaged blob {digest}"
        with contextlib.suppress(OSError, InvalidInput):
            info = layout.blob_path(digest).stat()
            if (info.st_dev, info.st_ino) not in inodes:
                return f"no file in it is a hard link to blob {digest}"
    return None


def fsck(store: ModelStore, *, repair: bool) -> FsckReport:
    """Check every blob, manifest, tag and bundle; with repair, fix what can be fixed."""
    layout = store.layout
    lock = store_lock(store)
    with lock.hold(exclusive=False):
        snapshot = read_index(layout)
        digests = sorted(set(_all_blobs(layout)) | {d for e in snapshot.entries for d in e.files})
    suspects: dict[str, str] = {}
    checked = size = 0
    for digest in digests:  # no lock held: hashing a large store takes minutes
        state = _blob_state(layout, digest)
        if state is None:
            checked += 1
            with contextlib.suppress(OSError, InvalidInput):
                size += layout.blob_path(digest).stat().st_size
        else:
            suspects[digest] = state
    with lock.hold(exclusive=repair):
        index = read_index(layout)
        bad = {d: s for d in suspects if (s := _blob_state(layout, d)) is not None}
        problems = _blob_problems(layout, index, bad, repair)
        problems += _manifest_problems(layout, index, repair)
        problems += _bundle_problems(store, index, set(bad), repair)
    return FsckReport(repair, checked, size, len(index.entries), tuple(problems))


def _users(index: Index, digest: str) -> tuple[str, ...]:
    return tuple(entry.id for entry in index.entries if digest in entry.files)


def _blob_problems(
    layout: StoreLayout, index: Index, bad: dict[str, str], repair: bool
) -> list[FsckProblem]:
    problems: list[FsckProblem] = []
    for digest, state in sorted(bad.items()):
        users = _users(index, digest)
        if state == "missing":
            if users:  # an unlisted blob that vanished is no problem
                problems.append(FsckProblem("missing_blob", digest, "the blob is missing", users))
            continue
        done = None
        if repair:
            with contextlib.suppress(OSError, InvalidInput):
                layout.blob_path(digest).unlink()
                for model_id in users:  # their bundles hard-link the damaged bytes
                    shutil.rmtree(layout.bundle_path(model_id), ignore_errors=True)
                done = "removed the blob" + (" and the bundles using it" if users else "")
        problems.append(FsckProblem("corrupt_blob", digest, state, users, done))
    return problems


def _manifest_problems(layout: StoreLayout, index: Index, repair: bool) -> list[FsckProblem]:
    problems: list[FsckProblem] = []
    dropped = False
    for entry in list(index.entries):
        state = _manifest_state(layout, entry.id)
        if state is None:
            continue
        kind = "missing_manifest" if state == "missing" else "corrupt_manifest"
        done = None
        if repair:
            index.remove(entry.id)
            dropped = True
            if kind == "corrupt_manifest":
                layout.manifest_path(entry.id).unlink(missing_ok=True)
            shutil.rmtree(layout.bundle_path(entry.id), ignore_errors=True)
            done = "dropped the model from models.json"
        problems.append(FsckProblem(kind, entry.id, f"the manifest is {state}", (entry.id,), done))
        for tag in entry.tags:
            problems.append(
                FsckProblem("dangling_tag", tag, f"points to {entry.id} whose manifest is {state}",
                            (entry.id,), "removed with the model" if repair else None)
            )  # fmt: skip
    if dropped:
        atomic_write(layout.index_file, index.dump())
    return problems


def _bundle_problems(
    store: ModelStore, index: Index, bad_blobs: set[str], repair: bool
) -> list[FsckProblem]:
    layout = store.layout
    problems: list[FsckProblem] = []
    for entry in index.entries:
        state = _bundle_state(layout, entry.id, bad_blobs)
        if state is None:
            continue
        done = None
        if repair:
            shutil.rmtree(layout.bundle_path(entry.id), ignore_errors=True)
            done = "removed it (rebuilt on first use)"
            if not any(d in bad_blobs or not layout.blob_path(d).is_file() for d in entry.files):
                with contextlib.suppress(CoreError, OSError):
                    store.bundle(entry.id)
                    done = "rebuilt it"
        problems.append(FsckProblem("broken_bundle", entry.id, state, (entry.id,), done))
    return problems
