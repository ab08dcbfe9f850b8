"""Update checks: the registry's manifest digest of each stored tag against the local model ID.

Models from Hugging Face are skipped (their "manifest" is built locally, so no digest compares).
Checks run a few at a time; a registry that cannot be asked gives "unreachable: <why>" for its
tags and never fails the whole check.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from modelrunner.core.errors import CoreError, InvalidReference
from modelrunner.core.references import ModelReference, parse_reference

if TYPE_CHECKING:
    from collections.abc import Sequence

    from modelrunner.core.store.store import ModelStore, StoredModel

UPDATE_AVAILABLE = "update available"
UP_TO_DATE = "up to date"
UNREACHABLE = "unreachable"
CONCURRENCY = 4
TIMEOUT_SECONDS = 30.0


class RemoteManifest(Protocol):
    """What a registry answers for a tag (core.distribution.manifests.Manifest)."""

    @property
    def digest(self) -> str: ...
    @property
    def index_digest(self) -> str | None: ...


class ManifestSource(Protocol):
    """A registry client (core.distribution.registry.RegistryClient)."""

    async def get_manifest(self, ref: ModelReference) -> RemoteManifest: ...


@dataclass(frozen=True)
class UpdateStatus:
    """Whether one stored tag has a newer model in its registry."""

    tag: str
    """The normalised tag, e.g. "ai/smollm2:latest"."""
    model_id: str
    """The local model ID."""
    status: str
    """"update available", "up to date" or "unreachable: <why>"."""
    remote_digest: str | None = None

    @property
    def update_available(self) -> bool:
        return self.status == UPDATE_AVAILABLE

    def to_api(self) -> dict[str, Any]:
        """One element of GET /models/updates."""
        return asdict(self)


def registry_tags(models: Sequence[StoredModel]) -> list[tuple[ModelReference, str]]:
    """(reference, local ID) for every registry tag, once each; Hugging Face tags are left out."""
    seen: dict[str, tuple[ModelReference, str]] = {}
    for model in models:
        for tag in model.tags:
            try:
                ref = parse_reference(tag)
            except InvalidReference:
                continue
            if not ref.is_huggingface and ref.digest is None:
                seen.setdefault(ref.normalized, (ref, model.id))
    return list(seen.values())


async def check_updates(
    store: ModelStore,
    registry: ManifestSource,
    *,
    concurrency: int = CONCURRENCY,
    seconds_per_tag: float = TIMEOUT_SECONDS,
) -> list[UpdateStatus]:
    """Ask the registry about every registry tag in the store, a few at a time; in tag order."""
    models = await asyncio.to_thread(store.list)
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(ref: ModelReference, model_id: str) -> UpdateStatus:
        async with slots:
            try:
                manifest = await asyncio.wait_for(registry.get_manifest(ref), seconds_per_tag)
            except TimeoutError:
                return UpdateStatus(
                    ref.normalized, model_id, f"{UNREACHABLE}: no answer in {seconds_per_tag:g} s"
                )
            except CoreError as error:
                return UpdateStatus(ref.normalized, model_id, f"{UNREACHABLE}: {error.message}")
            except Exception as error:  # a registry must never fail the whole check
                reason = str(error) or type(error).__name__
                return UpdateStatus(ref.normalized, model_id, f"{UNREACHABLE}: {reason}")
        current = model_id in (manifest.digest, manifest.index_digest)
        status = UP_TO_DATE if current else UPDATE_AVAILABLE
        return UpdateStatus(ref.normalized, model_id, status, manifest.digest)

    tags = sorted(registry_tags(models), key=lambda pair: pair[0].normalized)
    return list(await asyncio.gather(*(one(ref, model_id) for ref, model_id in tags)))
