"""DMR's export/load tarball: blobs/sha256/<hex> for layers and config, then manifest.json."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Callable, Mapping
from typing import IO, BinaryIO

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store.layout import parse_digest
from modelrunner.core.store.package import Artifact

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
"""A manifest is a few KB; refuse absurd ones instead of reading them into memory."""

_BLOB_NAME_RE = re.compile(r"^blobs/(sha256|sha512)/([0-9a-f]+)$")

_COPY_CHUNK = 1 << 20

BlobSink = Callable[[str, IO[bytes], int], None]
"""Receives (digest, stream, size) for every blob entry of an archive being loaded."""


_BLOCK = 512
_USTAR_MAX_SIZE = 8**11 - 1
"""The largest size an octal ustar size field holds; Go switches to a PAX record past it."""


def _octal(value: int, width: int) -> bytes:
    """Go's tar formatOctal: zero-padded octal digits and a NUL in `width` bytes."""
    return f"{value:0{width - 1}o}".encode() + b"\0"


def _header_block(
    name: str, size: int, typeflag: bytes, mode: int, *, devices: bool = True
) -> bytes:
    """One header block as Go's archive/tar writes DMR's (zero mtime, uid, gid; no user names).

    Args:
        devices: Fill the device numbers with octal zeros (Go's PAX extension header leaves them
            NUL).
    """
    block = bytearray(_BLOCK)
    block[0 : len(name)] = name.encode()
    block[100:108] = _octal(mode, 8)
    block[108:116] = _octal(0, 8)
    block[116:124] = _octal(0, 8)
    block[124:136] = _octal(size if size <= _USTAR_MAX_SIZE else 0, 12)
    block[136:148] = _octal(0, 12)
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    if devices:
        block[329:337] = _octal(0, 8)
        block[337:345] = _octal(0, 8)
    block[148:156] = b" " * 8
    block[148:155] = _octal(sum(block), 7)
    return bytes(block)


def _pax_record(key: str, value: str) -> bytes:
    """A PAX record "<length> key=value\n", the length counting its own digits."""
    body = f" {key}={value}\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return f"{length}{body}".encode()


def _entry_header(name: str, size: int, *, directory: bool = False) -> bytes:
    """The header blocks of one entry, byte for byte as DMR's tar.Writer (ustar, else PAX)."""
    if directory:
        return _header_block(name, 0, b"5", 0o755)
    if size <= _USTAR_MAX_SIZE:
        return _header_block(name, size, b"0", 0o666)
    record = _pax_record("size", str(size))
    folder, _, base = name.rpartition("/")
    pax_name = "/".join(part for part in (folder, "PaxHeaders.0", base) if part)[:100]
    return (
        _header_block(pax_name.rstrip("/"), len(record), b"x", 0, devices=False)
        + _padded(record)
        + _header_block(name, size, b"0", 0o666)
    )


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % _BLOCK)


def _write_blob(fileobj: BinaryIO, name: str, stream: IO[bytes], size: int) -> None:
    fileobj.write(_entry_header(name, size))
    remaining = size
    while remaining:
        chunk = stream.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            raise InvalidInput(f"{name} ended {remaining} bytes early (the blob is truncated)")
        fileobj.write(chunk)
        remaining -= len(chunk)
    fileobj.write(b"\0" * (-size % _BLOCK))


def write_archive(
    artifact: Artifact,
    fileobj: BinaryIO,
    layer_streams: Mapping[str, IO[bytes]] | None = None,
) -> None:
    """Stream an artifact as DMR's export tarball (what `POST /models/load` accepts).

    The bytes are those DMR's `tarball.Target` writes with Go's archive/tar: entries `blobs`,
    `blobs/sha256`, each layer blob in manifest order (a repeated layer twice, as DMR), the
    config blob, `manifest.json`; mode 0755 or 0666, mtime, uid and gid 0, no user names, no
    trailing slash on directories, and the archive ends with two zero blocks, unpadded.

    Args:
        layer_streams: Opened layer blobs by digest, read from their start and left open (the
            default opens each layer's path).
    """
    fileobj.write(_entry_header("blobs", 0, directory=True))
    fileobj.write(_entry_header("blobs/sha256", 0, directory=True))
    for layer in artifact.layers:
        _, hex_part = parse_digest(layer.digest)
        name = f"blobs/sha256/{hex_part}"
        if layer_streams is not None:
            stream = layer_streams[layer.digest]
            stream.seek(0)
            _write_blob(fileobj, name, stream, layer.size)
            continue
        with layer.path.open("rb") as stream:
            _write_blob(fileobj, name, stream, layer.size)
    _, config_hex = parse_digest(artifact.config_digest)
    config = artifact.config_bytes
    _write_blob(fileobj, f"blobs/sha256/{config_hex}", io.BytesIO(config), len(config))
    manifest = artifact.manifest_bytes
    _write_blob(fileobj, MANIFEST_NAME, io.BytesIO(manifest), len(manifest))
    fileobj.write(b"\0" * (2 * _BLOCK))


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
