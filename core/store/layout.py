"""Paths under the store root (DMR's layout), atomic writes, blob hashing and the store lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from modelrunner.core.errors import InvalidInput, StoreCorrupt
from modelrunner.core.store import go_json

LAYOUT_VERSION = "1.0.0"
INCOMPLETE_SUFFIX = ".incomplete"
STALE_INCOMPLETE_SECONDS = 7 * 24 * 3600
"""DMR deletes partial downloads older than this when the store opens."""
CHUNK_SIZE = 1 << 20

_DIGEST_RE = re.compile(r"^(sha256):([0-9a-f]{64})$|^(sha512):([0-9a-f]{128})$")


def parse_digest(digest: str) -> tuple[str, str]:
    """Split "sha256:<64 hex>" (or "sha512:<128 hex>") into algorithm and hex.

    Raises:
        InvalidInput: Not a lower-case digest of a supported algorithm.
    """
    match = _DIGEST_RE.match(digest)
    if match is None:
        raise InvalidInput(
            f"invalid digest {digest!r}: expected sha256: and 64 lower-case hex digits"
        )
    algorithm = match.group(1) or match.group(3)
    hex_part = match.group(2) or match.group(4)
    return algorithm, hex_part


def model_id_hex(model_id: str) -> str:
    """The hex of a model ID, which DMR only accepts as sha256.

    Raises:
        InvalidInput: Not "sha256:" and 64 lower-case hex digits.
    """
    algorithm, hex_part = parse_digest(model_id)
    if algorithm != "sha256":
        raise InvalidInput(f"invalid model ID {model_id!r}: only sha256 IDs exist")
    return hex_part


def sha256_digest(data: bytes) -> str:
    """ "sha256:<hex>" of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """ "<algorithm>:<hex>" of a file, read in large chunks without loading it whole."""
    with path.open("rb") as stream:
        hasher = hashlib.file_digest(stream, algorithm)
    return f"{algorithm}:{hasher.hexdigest()}"


def fsync_directory(directory: Path) -> None:
    """Make a rename inside directory durable (best effort: some filesystems refuse)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so readers see either the old or the new content, never a part.

    Like DMR: a temp file in the same directory, fsync, chmod 0644, rename over the target.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f"{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    fsync_directory(path.parent)


def copy_stream_verified(
    source: IO[bytes], target: Path, digest: str, size: int | None = None
) -> None:
    """Copy a stream into target via `<target>.incomplete`, checking its digest (and size) first.

    Raises:
        InvalidInput: The content does not match the digest or size; nothing is left behind.
    """
    algorithm, expected_hex = parse_digest(digest)
    hasher = hashlib.new(algorithm)
    partial = target.with_name(target.name + INCOMPLETE_SUFFIX)
    partial.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with partial.open("wb") as stream:
            while chunk := source.read(CHUNK_SIZE):
                hasher.update(chunk)
                stream.write(chunk)
                written += len(chunk)
            stream.flush()
            os.fsync(stream.fileno())
        if hasher.hexdigest() != expected_hex:
            raise InvalidInput(f"content of {digest} does not match its digest")
        if size is not None and written != size:
            raise InvalidInput(f"{digest} is {written} bytes, expected {size}")
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


class StoreLayout:
    """Where everything lives under a DMR store root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.layout_file = root / "layout.json"
        self.index_file = root / "models.json"
        self.lock_file = root / ".lock"
        """Our lock file; DMR ignores files it does not know."""
        self.blobs_dir = root / "blobs"
        self.manifests_dir = root / "manifests" / "sha256"
        self.bundles_dir = root / "bundles" / "sha256"

    def blob_path(self, digest: str) -> Path:
        """blobs/<algorithm>/<hex> for a validated digest."""
        algorithm, hex_part = parse_digest(digest)
        return self.blobs_dir / algorithm / hex_part

    def manifest_path(self, model_id: str) -> Path:
        """manifests/sha256/<hex>: the raw manifest bytes of a model."""
        return self.manifests_dir / model_id_hex(model_id)

    def bundle_path(self, model_id: str) -> Path:
        """bundles/sha256/<hex>: the runtime bundle of a model."""
        return self.bundles_dir / model_id_hex(model_id)

    def initialise(self) -> None:
        """Create the root, layout.json and an empty models.json if missing (as DMR's store does).

        Raises:
            StoreCorrupt: layout.json exists but is not DMR's layout version.
            InvalidInput: The root exists and is not a directory.
        """
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInput(f"model store path {self.root} exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.layout_file.exists():
            self.check_layout_version()
        else:
            atomic_write(self.layout_file, go_json.marshal_indent({"version": LAYOUT_VERSION}))
        if not self.index_file.exists():
            atomic_write(self.index_file, go_json.marshal_indent({"models": []}))
        self.remove_stale_incomplete()

    def check_layout_version(self) -> None:
        """Refuse a store whose layout.json is not version 1.0.0."""
        try:
            version = json.loads(self.layout_file.read_bytes()).get("version")
        except (OSError, ValueError, AttributeError) as error:
            raise StoreCorrupt(f"{self.layout_file} is not valid JSON: {error}") from error
        if version != LAYOUT_VERSION:
            raise StoreCorrupt(
                f"{self.layout_file} has layout version {version!r}; "
                f"only {LAYOUT_VERSION} is supported"
            )

    def remove_stale_incomplete(self) -> None:
        """Delete partial downloads older than a week, like DMR at store start."""
        cutoff = time.time() - STALE_INCOMPLETE_SECONDS
        for partial in self.blobs_dir.glob(f"*/*{INCOMPLETE_SUFFIX}"):
            with contextlib.suppress(OSError):
                if partial.stat().st_mtime < cutoff:
                    partial.unlink()


class StoreLock:
    """An fcntl lock on `<root>/.lock`: shared to read, exclusive to write; re-entrant."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._guard = threading.RLock()
        self._depth = 0
        self._exclusive = False
        self._descriptor: int | None = None

    @contextlib.contextmanager
    def hold(self, *, exclusive: bool) -> Iterator[None]:
        """Hold the lock for the duration of a with-block."""
        with self._guard:
            if self._depth == 0:
                self._acquire(exclusive)
            elif exclusive and not self._exclusive:
                raise RuntimeError("cannot upgrade a shared store lock to an exclusive one")
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self, exclusive: bool) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor
        self._exclusive = exclusive

    def _release(self) -> None:
        if self._descriptor is not None:
            # Closing the descriptor drops the flock.
            os.close(self._descriptor)
            self._descriptor = None
        self._exclusive = False
