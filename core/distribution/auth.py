"""Registry auth: WWW-Authenticate challenges, Basic credentials, bearer tokens cached per scope."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from modelrunner.core.distribution.credentials import Credentials, CredentialStore
from modelrunner.core.errors import CoreError

_PARAM_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*,?')
_TOKEN_MARGIN = 10.0
"""Seconds before a token's expiry at which it is fetched again."""
_DEFAULT_TOKEN_TTL = 60.0
"""The token spec's default lifetime when the answer gives no expires_in."""
_LOCAL_NAMES = frozenset({"localhost", "host.docker.internal", "gateway.docker.internal"})
_MAX_TOKEN_RESPONSE = 1 << 20


class RegistryError(CoreError):
    """A registry answered something we cannot use."""

    status = 502


class RegistryUnavailable(RegistryError):
    """A registry (or its token service) cannot be reached, or broke off a transfer."""

    status = 502


class AuthenticationRequired(CoreError):
    """The registry wants credentials we do not have, or refused the ones we sent."""

    status = 401


def login_hint(registry: str) -> str:
    """How to fix missing or wrong credentials."""
    return f"run `modelrunner login {registry}`"


def auth_failure(registry: str, credentials: Credentials | None, what: str = "") -> CoreError:
    """The error for a 401/403 that survived a fresh token; names the user and their source."""
    target = f" to {what}" if what else ""
    if credentials is None:
        # Registries (Docker Hub among them) refuse an anonymous pull of a repository that does
        # not exist as they refuse a private one, so a typo must not read as "log in" only.
        unknown = ", or the repository does not exist" if what == "pull" else ""
        return AuthenticationRequired(
            f"authentication required for {registry}{target}{unknown}: {login_hint(registry)}"
        )
    origin = f" (from {credentials.source})" if credentials.source else ""
    return AuthenticationRequired(
        f"{registry} refused access{target} for {credentials.username}{origin}: "
        f"check the username, password and permissions, or {login_hint(registry)}"
    )


@dataclass(frozen=True)
class Challenge:
    """One parsed WWW-Authenticate header."""

    scheme: str
    """"basic" or "bearer" (lower-case)."""
    params: dict[str, str] = field(default_factory=dict)
    """realm, service, scope, error… with lower-case keys."""


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`; None if unusable."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params: dict[str, str] = {}
    for match in _PARAM_RE.finditer(rest):
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
    return Challenge(scheme, params)


def basic_header(credentials: Credentials) -> str:
    """An Authorization header value for HTTP Basic."""
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _is_local_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


async def _resolves_locally(host: str) -> bool:
    if host.lower() in _LOCAL_NAMES or _is_local_address(host):
        return True
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None)
    except OSError:
        return False  # the token request itself will then fail with a clear message
    return any(_is_local_address(str(info[4][0])) for info in infos)


async def check_realm(registry_url: URL, realm: str) -> URL:
    """Refuse token realms that would leak credentials or reach into the local network (SSRF).

    A realm may be local only when the registry itself is; an https registry needs an https realm.
    """
    url = URL(realm)
    if url.scheme not in ("http", "https") or not url.host:
        raise RegistryError(f"{registry_url.host}: unusable token realm {realm!r}")
    if registry_url.scheme == "https" and url.scheme != "https":
        raise RegistryError(f"{registry_url.host}: refusing a plain-http token realm {realm!r}")
    registry_host = registry_url.host or ""
    if await _resolves_locally(url.host) and not await _resolves_locally(registry_host):
        raise RegistryError(
            f"{registry_host}: refusing token realm {realm!r}: it points into the local network"
        )
    return url


@dataclass
class _Token:
    value: str
    expires_at: float


class RegistryAuth:
    """What to send as Authorization, per registry and scope; one per RegistryClient."""

    def __init__(self, credentials: CredentialStore | None) -> None:
        self._store = credentials
        self._credentials: dict[str, Credentials | None] = {}
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._lock = asyncio.Lock()

    async def credentials_for(self, registry: str) -> Credentials | None:
        """Credentials for a registry, looked up once per client (on a thread: helpers may run)."""
        if registry not in self._credentials:
            found = None
            if self._store is not None:
                found = await asyncio.to_thread(self._store.lookup, registry)
            self._credentials[registry] = found
        return self._credentials[registry]

    def forget_credentials(self, registry: str) -> None:
        """Look a registry's credentials up again next time (they were refused or were wrong:
        a login, the environment or Docker's config may have a better answer by then)."""
        self._credentials.pop(registry, None)
        self._tokens = {key: tok for key, tok in self._tokens.items() if key[0] != registry}

    def use_credentials(self, registry: str, credentials: Credentials | None) -> None:
        """Replace the credentials for a registry (login checks, explicit tokens)."""
        self._credentials[registry] = credentials
        self._tokens = {key: tok for key, tok in self._tokens.items() if key[0] != registry}

    def learn(self, registry: str, header: str | None) -> bool:
        """Remember a registry's challenge from a 401; False when it is not one we can answer."""
        challenge = parse_challenge(header)
        if challenge is None or (challenge.scheme == "bearer" and "realm" not in challenge.params):
            return False
        self._challenges[registry] = challenge
        return True

    def forget_token(self, registry: str, scopes: tuple[str, ...]) -> None:
        """Drop a cached token the registry just refused."""
        self._tokens.pop((registry, scopes), None)

    async def authorization(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        registry_url: URL,
        scopes: tuple[str, ...],
        what: str = "",
    ) -> str | None:
        """The Authorization header for a request needing `scopes`; None to go anonymous.

        `what` names the action ("pull", "push") in the error when the token service refuses.
        """
        challenge = self._challenges.get(registry)
        if challenge is None:
            return None
        credentials = await self.credentials_for(registry)
        if challenge.scheme == "basic":
            if credentials is None or credentials.identity_token is not None:
                return None
            return basic_header(credentials)
        key = (registry, scopes)
        async with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at > time.monotonic():
                return f"Bearer {cached.value}"
            token = await self._fetch_token(
                session, registry, registry_url, challenge, scopes, credentials, what
            )
            self._tokens[key] = token
            return f"Bearer {token.value}"

    async def _fetch_token(
        self,
        session: aiohttp.ClientSession,
        registry: str,
        registry_url: URL,
        challenge: Challenge,
        scopes: tuple[str, ...],
        credentials: Credentials | None,
        what: str,
    ) -> _Token:
        realm = await check_realm(registry_url, challenge.params["realm"])
        service = challenge.params.get("service")
        try:
            if credentials is not None and credentials.identity_token is not None:
                form: list[tuple[str, str]] = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", credentials.identity_token),
                    ("client_id", "modelrunner"),
                ]
                form += [("service", service)] if service else []
                form += [("scope", " ".join(scopes))] if scopes else []
                response = await session.post(realm, data=form, allow_redirects=False)
            else:
                query: list[tuple[str, str]] = [("service", service)] if service else []
                query += [("scope", scope) for scope in scopes]
                headers: dict[str, str] = {}
                if credentials is not None:
                    query.append(("account", credentials.username))
                    headers["Authorization"] = basic_header(credentials)
                response = await session.get(
                    realm.update_query(query), headers=headers, allow_redirects=False
                )
            async with response:
                body = await response.content.read(_MAX_TOKEN_RESPONSE)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RegistryUnavailable(
                f"cannot reach the token service of {registry} at {realm}: "
                f"{error or type(error).__name__}"
            ) from error
        if status in (401, 403):
            raise auth_failure(registry, credentials, what)
        if status != 200:
            raise RegistryError(f"the token service of {registry} answered HTTP {status}")
        return _parse_token(registry, body)


def _parse_token(registry: str, body: bytes) -> _Token:
    try:
        answer: Any = json.loads(body)
        value = answer.get("token") or answer.get("access_token")
        ttl = float(answer.get("expires_in") or _DEFAULT_TOKEN_TTL)
    except (ValueError, AttributeError, TypeError):
        value, ttl = None, 0.0
    if not isinstance(value, str) or not value:
        raise RegistryError(f"the token service of {registry} answered without a token")
    return _Token(value, time.monotonic() + max(ttl - _TOKEN_MARGIN, 1.0))
