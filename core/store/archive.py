"""DMR's export/load tarball: blobs/sha256/<hex> for layers and config, then manifest.json."""

from __future__ import annotations

import io
import re
import tarfile
import time
from collections.abc import Callable
from typing import IO, BinaryIO

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store.layout import parse_digest
from modelrunner.core.store.package import Artifact

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
"""A manifest is a few KB; refuse absurd ones instead of reading them into memory."""

_BLOB_NAME_RE = re.compile(r"^blobs/(sha256|sha512)/([0-9a-f]+)$")

BlobSink = Callable[[str, IO[bytes], int], None]
"""Receives (digest, stream, size) for every blob entry of an archive being loaded."""


def _directory(name: str, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = mtime
    return info


def _file(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o666
    info.mtime = mtime
    return info


def write_archive(artifact: Artifact, fileobj: BinaryIO) -> None:
    """Stream an artifact as DMR's export tarball (what `POST /models/load` accepts).

    Entry order: `blobs`, `blobs/sha256`, each layer blob, the config blob, `manifest.json`.
    """
    now = int(time.time())
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(_directory("blobs", now))
        archive.addfile(_directory("blobs/sha256", now))
        written: set[str] = set()
        for layer in artifact.layers:
            if layer.digest in written:
                continue
            written.add(layer.digest)
            _, hex_part = parse_digest(layer.digest)
            with layer.path.open("rb") as stream:
                archive.addfile(_file(f"blobs/sha256/{hex_part}", layer.size, now), stream)
        _, config_hex = parse_digest(artifact.config_digest)
        archive.addfile(
            _file(f"blobs/sha256/{config_hex}", len(artifact.config_bytes), now),
            io.BytesIO(artifact.config_bytes),
        )
        archive.addfile(
            _file(MANIFEST_NAME, len(artifact.manifest_bytes), now),
            io.BytesIO(artifact.manifest_bytes),
        )


def read_archive(fileobj: IO[bytes], put_blob: BlobSink) -> bytes:
    """Read a DMR export tarball: hand each blob to put_blob, return the manifest bytes.

    Raises:
        InvalidInput: Not a tar archive, an entry name contains "..", a blob name is not a
            digest, or there is no manifest.json.
    """
    manifest: bytes | None = None
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if ".." in name:
                    raise InvalidInput(
                        f"archive entry {member.name!r} is not allowed (contains '..')"
                    )
                if not member.isfile():
                    continue
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                if name == MANIFEST_NAME:
                    if member.size > MAX_MANIFEST_BYTES:
                        raise InvalidInput(f"manifest.json is too large ({member.size} bytes)")
                    manifest = stream.read()
                    continue
                match = _BLOB_NAME_RE.match(name)
                if match is None:
                    continue  # DMR ignores other entries
                digest = f"{match.group(1)}:{match.group(2)}"
                parse_digest(digest)
                put_blob(digest, stream, member.size)
    except tarfile.TarError as error:
        raise InvalidInput(f"not a valid model archive: {error}") from error
    if manifest is None:
        raise InvalidInput("the archive has no manifest.json")
    return manifest
