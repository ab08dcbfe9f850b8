"""RegistryClient: OCI distribution over aiohttp — manifests, ranged blob reads, auth, login."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from modelrunner.core.distribution.auth import (
    AuthenticationRequired,
    RegistryAuth,
    RegistryError,
    RegistryUnavailable,
    auth_failure,
)
from modelrunner.core.distribution.credentials import Credentials, CredentialStore, registry_key
from modelrunner.core.distribution.endpoints import (
    insecure_registries,
    origin,
    registry_base_url,
    repository_scope,
)
from modelrunner.core.distribution.manifests import (
    ACCEPT_MANIFESTS,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    DigestMismatch,
    Manifest,
    UnsupportedManifest,
    has_model_config,
    index_candidates,
    served_media_type,
)
from modelrunner.core.errors import ModelNotFound
from modelrunner.core.references import ModelReference
from modelrunner.core.settings import Settings
from modelrunner.core.store.layout import parse_digest, sha256_digest

if TYPE_CHECKING:
    from modelrunner.core.distribution.push import PushProgress, PushResult
    from modelrunner.core.store.store import ModelStore

__all__ = [
    "ACCEPT_MANIFESTS",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "AuthenticationRequired",
    "BlobStream",
    "DigestMismatch",
    "Manifest",
    "RangeNotSatisfiable",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailable",
    "UnsupportedManifest",
    "registry_base_url",
]

CHUNK_SIZE = 1 << 20
_READ_BUFFER = 4 << 20
"""Bytes a response may buffer before reading pauses (aiohttp's 64 KiB default halves a
local pull's speed)."""
_MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=60)
BodyFactory = Callable[[], Any]
"""Makes a fresh request body, so a request can be re-sent after an auth challenge."""


class BlobStream:
    """An open blob response: iterate for chunks as they arrive; always `aclose()` it."""

    def __init__(self, response: aiohttp.ClientResponse, registry: str, start: int) -> None:
        self._response = response
        self._registry = registry
        self.status: int = response.status
        """200 for the whole blob, 206 for the range asked for."""
        self.start: int = start if response.status == 206 else 0
        """Offset of the first byte this stream yields."""
        self.length: int | None = response.content_length
        """Bytes this response carries, when the registry says."""
        self.total: int | None = self.length if response.status == 200 else None
        """The whole blob's size as the registry says (Content-Length of a 200, the total of a
        206's Content-Range), or None."""
        match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
        if response.status == 206 and match is not None and match.group(3) != "*":
            self.total = int(match.group(3))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk, _ in self._response.content.iter_chunks():
                yield chunk  # as received: no joining copy
        except (aiohttp.ClientError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            raise RegistryUnavailable(
                f"registry {self._registry} broke off a blob transfer: {reason}"
            ) from error

    async def aclose(self) -> None:
        """Release the connection (closed if the body was not read to its end)."""
        self._response.release()
        self._response.close()

    async def __aenter__(self) -> BlobStream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class RangeNotSatisfiable(RegistryError):
    """416: the blob has no byte where the range asked for starts (it is shorter than that)."""


class RegistryClient:
    """One aiohttp session to any number of registries; anonymous first, credentials on challenge.

    `credentials=None` uses the default CredentialStore (env, `modelrunner login`, Docker config).
    """

    def __init__(self, settings: Settings, credentials: CredentialStore | None = None) -> None:
        self.settings = settings
        self.credentials = credentials if credentials is not None else CredentialStore(settings)
        self.auth = RegistryAuth(self.credentials)
        self._insecure = insecure_registries(settings)
        self._session: aiohttp.ClientSession | None = None

    def base_url(self, registry: str) -> URL:
        """The API root of a registry (scheme and host)."""
        return registry_base_url(registry, self._insecure)

    def url(self, ref: ModelReference, kind: str, name: str) -> URL:
        """`/v2/<repository>/<kind>/<name>` on the reference's registry."""
        return self.base_url(ref.registry).with_path(f"/v2/{ref.repository}/{kind}/{name}")

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=_TIMEOUT,
                auto_decompress=False,
                read_bufsize=_READ_BUFFER,
                connector=aiohttp.TCPConnector(limit=64),
                headers={"User-Agent": "modelrunner"},
            )
        return self._session

    async def close(self) -> None:
        """Close the session; the client opens a new one if used again."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        registry: str,
        method: str,
        url: URL,
        scopes: Sequence[str],
        *,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        what: str = "",
    ) -> aiohttp.ClientResponse:
        """One request with auth: anonymous (or cached) first, answer a 401 challenge once.

        Redirects are not followed, and URLs outside the registry's origin get no credentials.
        The caller releases the response. Credentials that were refused are looked up again
        for the next request (so a login, or a fixed Docker config, works without a restart).

        Raises:
            AuthenticationRequired: 401 after answering the challenge, or 403.
            RegistryUnavailable: The registry cannot be reached.
        """
        try:
            return await self._send(
                registry, method, url, scopes, headers=headers, body=body, what=what
            )
        except AuthenticationRequired:
            self.auth.forget_credentials(registry)
            raise

    async def _send(
        self,
        registry: str,
        method: str,
        url: URL,
        scopes: Sequence[str],
        *,
        headers: Mapping[str, str] | None,
        body: BodyFactory | None,
        what: str,
    ) -> aiohttp.ClientResponse:
        session = self._session_now()
        scope_key = tuple(scopes)
        base = self.base_url(registry)
        # Credentials never leave the registry's origin (a redirect or upload URL elsewhere).
        same_origin = origin(url) == origin(base)
        for attempt in (1, 2):
            request_headers = dict(headers or {})
            authorization = None
            if same_origin:
                authorization = await self.auth.authorization(
                    session, registry, base, scope_key, what
                )
            if authorization is not None:
                request_headers["Authorization"] = authorization
            try:
                response = await session.request(
                    method,
                    url,
                    headers=request_headers,
                    data=body() if body is not None else None,
                    allow_redirects=False,
                )
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = str(error) or type(error).__name__
                where = registry if same_origin else f"{url.host} (sent there by {registry})"
                raise RegistryUnavailable(f"cannot reach registry {where}: {reason}") from error
            if response.status == 401 and attempt == 1 and same_origin:
                challenge = response.headers.get("WWW-Authenticate")
                response.release()
                self.auth.forget_token(registry, scope_key)
                if self.auth.learn(registry, challenge):
                    continue
            if response.status in (401, 403):
                response.release()
                credentials = await self.auth.credentials_for(registry)
                raise auth_failure(registry, credentials, what)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # Manifests

    async def get_manifest(self, ref: ModelReference) -> Manifest:
        """The manifest a reference names, following one level of image index.

        Raises:
            ModelNotFound: No such repository, tag or digest.
            DigestMismatch: The bytes do not hash to the reference's digest.
            UnsupportedManifest: An index with no model manifest in it.
            AuthenticationRequired, RegistryUnavailable, RegistryError.
        """
        raw, media_type = await self._fetch_manifest(ref, ref.digest or ref.tag)
        digest = sha256_digest(raw)
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatch(
                f"digest mismatch for {ref.normalized}: the registry served {digest}"
            )
        if media_type not in INDEX_TYPES:
            return Manifest(raw, digest, media_type)
        return await self._pick_from_index(ref, raw, digest)

    async def _fetch_manifest(self, ref: ModelReference, target: str) -> tuple[bytes, str]:
        url = self.url(ref, "manifests", target)
        shown = f"{ref.name}@{target}" if target.startswith("sha256:") else f"{ref.name}:{target}"
        scopes = (repository_scope(ref.repository, "pull"),)
        response = await self.send(
            ref.registry, "GET", url, scopes, headers={"Accept": ACCEPT_MANIFESTS}, what="pull"
        )
        async with response:
            if response.status == 404:
                raise ModelNotFound(f"model {shown} not found")
            await raise_unexpected(ref.registry, response, f"manifest {shown}")
            if (response.content_length or 0) > MAX_MANIFEST_BYTES:
                raise RegistryError(f"manifest {shown} is larger than 4 MiB")
            raw = await _read_limited(response, MAX_MANIFEST_BYTES, f"manifest {ref.name}")
        return raw, served_media_type(response.headers.get("Content-Type", ""), raw)

    async def _pick_from_index(self, ref: ModelReference, raw: bytes, digest: str) -> Manifest:
        candidates, decided = index_candidates(raw, ref.normalized)
        for entry in candidates:
            child_digest = str(entry["digest"])
            child_raw, child_type = await self._fetch_manifest(ref, child_digest)
            if sha256_digest(child_raw) != child_digest:
                raise DigestMismatch(
                    f"digest mismatch for {ref.name}@{child_digest} listed in {ref.normalized}"
                )
            if child_type in INDEX_TYPES:
                raise UnsupportedManifest(f"{ref.normalized}: an image index inside an index")
            if decided or has_model_config(child_raw):
                return Manifest(child_raw, child_digest, child_type, index_digest=digest)
        raise UnsupportedManifest(f"{ref.normalized}: no manifest in the image index is a model")

    # Blobs

    async def _blob_response(
        self, method: str, ref: ModelReference, digest: str, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """A blob request, following redirects; credentials never leave the registry's origin."""
        parse_digest(digest)
        url = self.url(ref, "blobs", digest)
        scopes = (repository_scope(ref.repository, "pull"),)
        response = await self.send(ref.registry, method, url, scopes, headers=headers, what="pull")
        for _ in range(_MAX_REDIRECTS):
            if response.status not in _REDIRECTS:
                return response
            location = response.headers.get("Location")
            response.release()
            if not location:
                raise RegistryError(f"{ref.registry} redirected blob {digest} to nowhere")
            url = url.join(URL(location))
            response = await self.send(ref.registry, method, url, scopes, headers=headers)
        response.release()
        raise RegistryError(f"{ref.registry}: too many redirects for blob {digest}")

    async def blob_size(self, ref: ModelReference, digest: str) -> tuple[int, bool]:
        """The size of a blob and whether its server accepts byte ranges.

        Raises:
            ModelNotFound: The blob is not in the repository.
        """
        response = await self._blob_response("HEAD", ref, digest, {})
        async with response:
            if response.status == 404:
                raise ModelNotFound(f"blob {digest} not found in {ref.registry}/{ref.repository}")
            await raise_unexpected(ref.registry, response, f"blob {digest}")
            size = response.content_length
            ranges = response.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        if size is None:
            raise RegistryError(f"{ref.registry} did not say how large blob {digest} is")
        return size, ranges

    async def blob_exists(self, ref: ModelReference, digest: str, *, push: bool = False) -> bool:
        """Whether a blob is in the repository (HEAD; with a push-scoped token when pushing)."""
        parse_digest(digest)
        actions = ("pull", "push") if push else ("pull",)
        response = await self.send(
            ref.registry,
            "HEAD",
            self.url(ref, "blobs", digest),
            (repository_scope(ref.repository, *actions),),
            what="push" if push else "pull",
        )
        async with response:
            if response.status == 404:
                return False
            if response.status in _REDIRECTS or response.status == 200:
                return True
            await raise_unexpected(ref.registry, response, f"blob {digest}")
            return False

    async def open_blob(
        self, ref: ModelReference, digest: str, *, start: int = 0, end: int | None = None
    ) -> BlobStream:
        """Open a blob for streaming; `start`/`end` ask for a byte range (`end` inclusive, as HTTP).

        A 200 answer to a range request means the server sent the whole blob (stream.start == 0).

        Raises:
            ModelNotFound: The blob is not in the repository.
            RangeNotSatisfiable: 416: the blob is shorter than `start`.
            RegistryError: A 206 for another range than asked.
        """
        headers: dict[str, str] = {}
        if start > 0 or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        response = await self._blob_response("GET", ref, digest, headers)
        if response.status == 404:
            response.release()
            raise ModelNotFound(f"blob {digest} not found in {ref.registry}/{ref.repository}")
        if response.status == 416:
            response.release()
            raise RangeNotSatisfiable(
                f"{ref.registry} has no byte {start} in blob {digest}: the blob is shorter"
            )
        if response.status == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != start:
                response.release()
                raise RegistryError(
                    f"{ref.registry} answered bytes {response.headers.get('Content-Range')!r} "
                    f"of blob {digest} when asked for {headers['Range']!r}"
                )
        elif response.status != 200:
            async with response:
                await raise_unexpected(ref.registry, response, f"blob {digest}")
        return BlobStream(response, ref.registry, start)

    async def read_blob(self, ref: ModelReference, digest: str, limit: int = 16 << 20) -> bytes:
        """A small blob (a config) whole, verified against its digest."""
        stream = await self.open_blob(ref, digest)
        async with stream:
            data = bytearray()
            async for chunk in stream:
                data += chunk
                if len(data) > limit:
                    raise RegistryError(f"blob {digest} is larger than {limit} bytes")
        if sha256_digest(bytes(data)) != digest:
            raise DigestMismatch(f"digest mismatch for blob {digest} of {ref.normalized}")
        return bytes(data)

    # Login and push

    async def login(self, registry: str, username: str, password: str) -> None:
        """Check credentials against `GET /v2/` (through the token flow), then keep them.

        Raises:
            AuthenticationRequired: The registry or its token service refused them.
        """
        registry = registry_key(registry)
        # Tried for this check only: refused ones are forgotten (send), so a mistyped password
        # leaves the saved login, the environment or Docker's config in use.
        self.auth.use_credentials(registry, Credentials(username, password, source="login"))
        url = self.base_url(registry).with_path("/v2/")
        response = await self.send(registry, "GET", url, (), what="log in")
        async with response:
            await raise_unexpected(registry, response, "/v2/")
        await asyncio.to_thread(self.credentials.save_login, registry, username, password)

    async def logout(self, registry: str) -> bool:
        """Forget our stored login for a registry; False when there was none."""
        registry = registry_key(registry)
        self.auth.use_credentials(registry, None)
        return await asyncio.to_thread(self.credentials.remove_login, registry)

    async def push_model(
        self,
        store: ModelStore,
        source: str,
        target: ModelReference | None = None,
        *,
        on_progress: Callable[[PushProgress], None] | None = None,
    ) -> PushResult:
        """Push a stored model (see `push.push_model`)."""
        from modelrunner.core.distribution.push import push_model

        return await push_model(self, store, source, target, on_progress=on_progress)


async def _read_limited(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
        data += chunk
        if len(data) > limit:
            raise RegistryError(f"{what} is larger than {limit} bytes")
    return bytes(data)


async def raise_unexpected(registry: str, response: aiohttp.ClientResponse, what: str) -> None:
    """Raise a RegistryError for any status but 2xx, quoting the registry's own error message."""
    if 200 <= response.status < 300:
        return
    message = ""
    try:
        body = await response.content.read(64 << 10)
        errors = json.loads(body).get("errors") or []
        message = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
    except (ValueError, AttributeError, aiohttp.ClientError):
        pass
    suffix = f": {message}" if message else ""
    raise RegistryError(f"{registry} answered HTTP {response.status} for {what}{suffix}")
