"""Push a stored model: layers in parallel (skipped or mounted when possible), config, manifest."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yarl import URL

from modelrunner.core.distribution.auth import RegistryError
from modelrunner.core.distribution.endpoints import repository_scope
from modelrunner.core.distribution.registry import RegistryClient, raise_unexpected
from modelrunner.core.errors import CoreError, InvalidInput, InvalidReference, StoreCorrupt
from modelrunner.core.references import ModelReference, looks_like_id, parse_reference
from modelrunner.core.store import media_types
from modelrunner.core.store.layout import parse_digest, sha256_digest

if TYPE_CHECKING:
    import aiohttp

    from modelrunner.core.store.store import ModelStore

PARALLEL_LAYERS = 5
"""Layers uploaded at once, as DMR's pusher."""
CHUNK_SIZE = 1 << 20
PROGRESS_INTERVAL = 0.1
PROGRESS_BYTES = 1 << 20
"""DMR reports a layer at most every 100 ms or every MiB, and when it completes."""
_MAX_MOUNT_SOURCES = 3


@dataclass(frozen=True, slots=True)
class PushProgress:
    """One layer of a push moved on."""

    reference: str
    """The target, normalised: "127.0.0.1:5000/me/model:v1"."""
    digest: str
    """The layer's digest (DMR's layer.id)."""
    size: int
    current: int
    """Bytes of this layer the registry has."""
    total: int
    """Sum of all layer sizes (the config is not counted, as DMR)."""
    state: str
    """"uploading", "uploaded", "exists" (already in the repository) or "mounted"."""

    @property
    def message(self) -> str:
        """DMR's progress message: "Uploaded: 1.50 MB" (MiB-based)."""
        return f"Uploaded: {self.current / (1 << 20):.2f} MB"


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a finished push did."""

    reference: str
    digest: str
    """The manifest digest the registry answered: the model ID."""
    uploaded: tuple[str, ...]
    existing: tuple[str, ...]
    mounted: tuple[str, ...]


ProgressCallback = Callable[[PushProgress], None]


def push_target(source: str, target: ModelReference | None) -> ModelReference:
    """Where to push: `target`, else the source when it is a name (DMR pushes a tag to itself)."""
    if target is None:
        if looks_like_id(source) and ":" not in source.removeprefix("sha256:"):
            raise InvalidInput(f"give a name to push model {source} to (tag it first)")
        target = parse_reference(source)
    if target.digest is not None:
        raise InvalidReference(f"cannot push to a digest ({target.normalized}): give a tag")
    if target.is_huggingface:
        raise InvalidInput("pushing to Hugging Face is not supported; push to an OCI registry")
    return target


async def push_model(
    client: RegistryClient,
    store: ModelStore,
    source: str,
    target: ModelReference | None = None,
    *,
    on_progress: ProgressCallback | None = None,
) -> PushResult:
    """Push the stored model `source` to `target` with its manifest bytes unchanged.

    Layers go up to PARALLEL_LAYERS at a time; a blob already in the repository is skipped, one in
    another repository of the same registry (known from the store's tags) is mounted. Then the
    config, then the raw manifest by tag, so the registry's digest equals the model ID.

    Raises:
        ModelNotFound, InvalidInput, StoreCorrupt, AuthenticationRequired, RegistryUnavailable,
        RegistryError.
    """
    target = push_target(source, target)
    model = await asyncio.to_thread(store.get, source)
    raw = await asyncio.to_thread(store.manifest_bytes, model.id)
    if sha256_digest(raw) != model.id:
        raise StoreCorrupt(f"the stored manifest of {model.id} does not match its digest")
    document = json.loads(raw)
    layers = [_descriptor(layer) for layer in document.get("layers") or []]
    config = _descriptor(document.get("config") or {})
    media_type = str(document.get("mediaType") or media_types.OCI_MANIFEST)
    sources = await asyncio.to_thread(_mount_sources, store, target)
    total = sum(size for _, size in layers)
    outcome: dict[str, str] = {}
    limit = asyncio.Semaphore(PARALLEL_LAYERS)

    async def one(digest: str, size: int, report: bool) -> None:
        async with limit:
            path = await asyncio.to_thread(_blob_file, store, digest, size)
            reporter = _Reporter(
                target.normalized, digest, size, total, on_progress if report else None
            )
            outcome[digest] = await _push_blob(
                client, target, digest, size, path, sources, reporter
            )

    unique = dict(layers)
    try:
        async with asyncio.TaskGroup() as group:
            for digest, size in unique.items():
                group.create_task(one(digest, size, report=True))
    except BaseExceptionGroup as failures:
        raise _first_failure(failures) from None
    await one(*config, report=False)
    pushed = await _put_manifest(client, target, raw, media_type)
    if pushed is not None and pushed != model.id:
        raise RegistryError(
            f"{target.registry} stored the manifest of {target.normalized} as {pushed}, "
            f"not {model.id}"
        )

    def having(state: str) -> tuple[str, ...]:
        return tuple(d for d in unique if outcome.get(d) == state)

    return PushResult(
        target.normalized, model.id, having("uploaded"), having("exists"), having("mounted")
    )


def _first_failure(failures: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for failed layers: the first CoreError, else the first error."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [failures]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = list(error.exceptions)
        else:
            leaves.append(error)
    return next((e for e in leaves if isinstance(e, CoreError)), leaves[0])


def _descriptor(entry: Any) -> tuple[str, int]:
    try:
        digest, size = str(entry["digest"]), int(entry["size"])
        parse_digest(digest)
    except (KeyError, TypeError, ValueError, InvalidInput) as error:
        raise StoreCorrupt(f"a stored manifest has a malformed descriptor: {entry!r}") from error
    return digest, size


def _blob_file(store: ModelStore, digest: str, size: int) -> Path:
    path = store.blob_path(digest)
    try:
        actual = path.stat().st_size
    except OSError as error:
        raise StoreCorrupt(f"blob {digest} is missing from the store: {error.strerror}") from error
    if actual != size:
        raise StoreCorrupt(
            f"blob {digest} has {actual} bytes in the store, the manifest says {size}"
        )
    return path


def _mount_sources(store: ModelStore, target: ModelReference) -> dict[str, list[str]]:
    """Other repositories of the target's registry that should hold each digest (from our tags)."""
    sources: dict[str, list[str]] = {}
    for model in store.list():
        repositories = []
        for tag in model.tags:
            try:
                ref = parse_reference(tag)
            except InvalidReference:
                continue
            if ref.registry == target.registry and ref.repository != target.repository:
                repositories.append(ref.repository)
        if not repositories:
            continue
        try:
            document = json.loads(store.manifest_bytes(model.id))
        except (StoreCorrupt, ValueError):
            continue
        for entry in [document.get("config") or {}, *(document.get("layers") or [])]:
            known = sources.setdefault(str(entry.get("digest")), [])
            known.extend(r for r in repositories if r not in known)
    return sources


class _Reporter:
    """Throttled progress for one layer."""

    def __init__(
        self, reference: str, digest: str, size: int, total: int, callback: ProgressCallback | None
    ) -> None:
        self._event = PushProgress(reference, digest, size, 0, total, "uploading")
        self._callback = callback
        self._last_time = 0.0
        self._last_bytes = 0

    def update(self, current: int, state: str = "uploading") -> None:
        if self._callback is None:
            return
        now = time.monotonic()
        final = state != "uploading"
        if not final and current == self._event.size:
            return  # the "uploaded" report follows the registry's confirmation
        if (
            final
            or now - self._last_time >= PROGRESS_INTERVAL
            or (current - self._last_bytes >= PROGRESS_BYTES)
        ):
            self._last_time, self._last_bytes = now, current
            event = self._event
            self._callback(
                PushProgress(event.reference, event.digest, event.size, current, event.total, state)
            )


async def _push_blob(
    client: RegistryClient,
    target: ModelReference,
    digest: str,
    size: int,
    path: Path,
    sources: dict[str, list[str]],
    reporter: _Reporter,
) -> str:
    """Make one blob present in the target repository; returns "exists", "mounted" or "uploaded"."""
    if await client.blob_exists(target, digest, push=True):
        reporter.update(size, "exists")
        return "exists"
    push_scope = repository_scope(target.repository, "pull", "push")
    uploads = client.url(target, "blobs", "uploads/")
    location: str | None = None
    for repository in sources.get(digest, [])[:_MAX_MOUNT_SOURCES]:
        scopes = (push_scope, repository_scope(repository, "pull"))
        mount = uploads.with_query({"mount": digest, "from": repository})
        response = await client.send(target.registry, "POST", mount, scopes, what="push")
        async with response:
            if response.status == 201:
                reporter.update(size, "mounted")
                return "mounted"
            await _expect(response.status, 202, target, f"mounting blob {digest}", response)
            location = response.headers.get("Location")
            break  # the registry opened an ordinary upload instead
    if location is None:
        response = await client.send(target.registry, "POST", uploads, (push_scope,), what="push")
        async with response:
            await _expect(response.status, 202, target, "starting an upload", response)
            location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"{target.registry} opened an upload without a Location")
    put_url = uploads.join(URL(location)).update_query({"digest": digest})
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    response = await client.send(
        target.registry,
        "PUT",
        put_url,
        (push_scope,),
        headers=headers,
        body=lambda: _read_file(path, reporter),
        what="push",
    )
    async with response:
        await _expect(response.status, 201, target, f"uploading blob {digest}", response)
    reporter.update(size, "uploaded")
    return "uploaded"


async def _read_file(path: Path, reporter: _Reporter) -> AsyncIterator[bytes]:
    """A file in chunks, read on a thread, reporting how much has been handed to the socket."""
    stream = await asyncio.to_thread(path.open, "rb")
    sent = 0
    try:
        while chunk := await asyncio.to_thread(stream.read, CHUNK_SIZE):
            yield chunk
            sent += len(chunk)
            reporter.update(sent)
    finally:
        await asyncio.to_thread(stream.close)


async def _put_manifest(
    client: RegistryClient, target: ModelReference, raw: bytes, media_type: str
) -> str | None:
    """PUT the manifest bytes by tag; returns the digest the registry reports, if it does."""
    url = client.url(target, "manifests", target.tag)
    response = await client.send(
        target.registry,
        "PUT",
        url,
        (repository_scope(target.repository, "pull", "push"),),
        headers={"Content-Type": media_type},
        body=lambda: raw,
        what="push",
    )
    async with response:
        await _expect(response.status, 201, target, "storing the manifest", response)
        return response.headers.get("Docker-Content-Digest")


async def _expect(
    status: int, wanted: int, target: ModelReference, what: str, response: aiohttp.ClientResponse
) -> None:
    """Raise a RegistryError (quoting the registry) unless the status is the one the spec names."""
    if status == wanted or (wanted == 201 and status in (200, 204)):
        return
    await raise_unexpected(target.registry, response, f"{what} in {target.name}")
    raise RegistryError(f"{target.registry} answered HTTP {status} when {what} in {target.name}")
