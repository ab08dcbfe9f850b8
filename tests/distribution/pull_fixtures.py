"""Test helpers for pulls: push artifacts to the test registry, and a fault proxy in front of it.

The proxy is an HTTP/1.1 relay (one request per connection: it asks both sides to close) that
logs every request with its Range and the body bytes it relayed, and can throttle, stall or cut
a blob mid-body once, or flip a byte of every blob body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from modelrunner.core.store import go_json, media_types

_RANGE_RE = re.compile(rb"^range:\s*bytes=(\d+)-(\d*)\s*$", re.IGNORECASE | re.MULTILINE)


def sha256_file(path: Path) -> str:
    with path.open("rb") as stream:
        return "sha256:" + hashlib.file_digest(stream, "sha256").hexdigest()


async def push_blob(
    session: aiohttp.ClientSession, base: str, repo: str, data: bytes | Path
) -> str:
    """Upload one blob (monolithic POST + PUT) unless the registry has it; returns its digest."""
    digest = (
        sha256_file(data)
        if isinstance(data, Path)
        else "sha256:" + hashlib.sha256(data).hexdigest()
    )
    async with session.head(f"{base}/v2/{repo}/blobs/{digest}") as head:
        if head.status == 200:
            return digest
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/") as started:
        assert started.status == 202, await started.text()
        location = started.headers["Location"]
    url = location if location.startswith("http") else base + location
    separator = "&" if "?" in url else "?"
    if isinstance(data, Path):
        size = os.path.getsize(data)  # noqa: ASYNC240
        with open(data, "rb") as stream:  # noqa: ASYNC230 - a streamed upload body
            async with session.put(
                f"{url}{separator}digest={digest}",
                data=stream,
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            ) as put:
                assert put.status == 201, await put.text()
    else:
        async with session.put(f"{url}{separator}digest={digest}", data=data) as put:
            assert put.status == 201, await put.text()
    return digest


async def push_manifest(
    session: aiohttp.ClientSession, base: str, repo: str, tag: str, raw: bytes, media_type: str
) -> str:
    async with session.put(
        f"{base}/v2/{repo}/manifests/{tag}", data=raw, headers={"Content-Type": media_type}
    ) as put:
        assert put.status == 201, await put.text()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def push_model(
    base: str,
    repo: str,
    tag: str,
    manifest: bytes,
    config: bytes,
    blobs: list[bytes | Path],
    media_type: str = media_types.OCI_MANIFEST,
) -> str:
    """Push blobs, the config and the manifest (bytes exactly as given); returns its digest."""
    async with aiohttp.ClientSession() as session:
        for blob in blobs:
            await push_blob(session, base, repo, blob)
        await push_blob(session, base, repo, config)
        return await push_manifest(session, base, repo, tag, manifest, media_type)


def describe(path: Path, media_type: str, name: str | None = None) -> dict[str, object]:
    """A layer descriptor with DMR's three annotations, as `docker model package` writes it."""
    stat = path.stat()
    metadata = {
        "name": name or path.name, "mode": 420, "uid": 0, "gid": 0, "size": stat.st_size,
        "mtime": go_json.time_from_ns(stat.st_mtime_ns), "typeflag": 0,
    }  # fmt: skip
    annotations = go_json.GoMap(
        {
            media_types.ANNOTATION_FILEPATH: name or path.name,
            media_types.ANNOTATION_FILE_METADATA: go_json.marshal(metadata).decode(),
            media_types.ANNOTATION_MEDIATYPE_UNTESTED: "false",
        }
    )
    return {"mediaType": media_type, "size": stat.st_size, "digest": sha256_file(path),
            "annotations": annotations}  # fmt: skip


def manifest_for(
    config: bytes,
    config_type: str,
    layers: list[dict[str, object]],
    artifact_type: str | None = None,
) -> bytes:
    document: dict[str, object] = {"schemaVersion": 2, "mediaType": media_types.OCI_MANIFEST}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["config"] = {
        "mediaType": config_type,
        "size": len(config),
        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
    }
    document["layers"] = layers
    return go_json.marshal(document)


@dataclass
class ProxiedRequest:
    method: str
    path: str
    start: int
    """First byte asked for (0 without a Range)."""
    end: int | None
    """Last byte asked for (inclusive), None for open-ended."""
    sent: int = 0
    """Response body bytes relayed to the client."""
    status: int = 0


@dataclass
class FaultProxy:
    """A relay to `upstream` ("127.0.0.1:PORT") with faults switched by attributes."""

    upstream: str
    rate: float | None = None
    """Body bytes per second per response (None: as fast as possible)."""
    stall_after: int | None = None
    """Stop relaying the first blob body to pass this many bytes (once), keeping it open."""
    corrupt: str | None = None
    """Flip the first body byte of every GET of this blob digest."""
    drop_after: int | None = None
    """Cut the connection of the first blob body to pass this many bytes (once)."""
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once `drop_after` has cut a connection."""
    requests: list[ProxiedRequest] = field(default_factory=list)
    host: str = ""
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    """Connections being relayed: close() cancels them, so none is left to the loop's end."""

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.host = f"127.0.0.1:{port}"
        return self.host

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            handlers = list(self._handlers)
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def blob_gets(self, digest: str | None = None) -> list[ProxiedRequest]:
        return [
            r for r in self.requests
            if r.method == "GET" and "/blobs/" in r.path and (digest is None or digest in r.path)
        ]  # fmt: skip

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay_one(client_r, client_w)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            client_w.close()  # the upstream refused, or the client left before its request
        finally:
            self._handlers.discard(task)

    async def _relay_one(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        try:
            head = await client_r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            client_w.close()
            return
        request_line, _, rest = head.partition(b"\r\n")
        method, path, _ = request_line.decode().split(" ", 2)
        match = _RANGE_RE.search(rest)
        start = int(match.group(1)) if match else 0
        end = int(match.group(2)) if match and match.group(2) else None
        record = ProxiedRequest(method, path, start, end)
        self.requests.append(record)
        lines = [
            line
            for line in rest.split(b"\r\n")
            if line and not line.lower().startswith(b"connection:")
        ]
        host, port = self.upstream.split(":")
        up_r, up_w = await asyncio.open_connection(host, int(port))
        try:
            up_w.write(
                request_line + b"\r\n" + b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"
            )
            length = re.search(rb"^content-length:\s*(\d+)", rest, re.IGNORECASE | re.MULTILINE)
            if length:
                up_w.write(await client_r.readexactly(int(length.group(1))))
            await up_w.drain()
            response_head = await up_r.readuntil(b"\r\n\r\n")
            record.status = int(response_head.split(b" ", 2)[1])
            client_w.write(response_head)
            blob_body = method == "GET" and "/blobs/" in path
            await self._relay(up_r, client_r, client_w, record, blob_body)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            up_w.close()
            client_w.close()
            with contextlib.suppress(Exception):
                await client_w.wait_closed()

    async def _relay(
        self,
        up_r: asyncio.StreamReader,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        record: ProxiedRequest,
        blob_body: bool,
    ) -> None:
        started = time.monotonic()
        first = True
        while chunk := await up_r.read(64 << 10):
            if blob_body and self.corrupt and self.corrupt in record.path and first:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            first = False
            drop_at = self.drop_after
            if blob_body and drop_at is not None and record.sent + len(chunk) > drop_at:
                self.drop_after = None
                client_w.write(chunk[: drop_at - record.sent])
                record.sent += drop_at - record.sent
                await client_w.drain()
                client_w.transport.abort()  # the connection breaks off mid-body
                self.dropped.set()
                return
            stall_at = self.stall_after
            if blob_body and stall_at is not None and record.sent + len(chunk) > stall_at:
                self.stall_after = None
                chunk = chunk[: stall_at - record.sent]
                client_w.write(chunk)
                record.sent += len(chunk)
                await client_w.drain()
                await client_r.read()  # hold the socket open, silent, until the client gives up
                return
            client_w.write(chunk)
            record.sent += len(chunk)
            await client_w.drain()
            if self.rate:
                delay = started + record.sent / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
