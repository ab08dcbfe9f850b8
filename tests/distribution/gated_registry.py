"""GatedRegistry: a registry stand-in for the Puller whose manifest requests wait at a gate.

No network: a pull that asks for a manifest waits until the test opens the gate, then fails as the
real client does for a model the registry does not have. Holding the first pull at the gate keeps
a `max_active=1` Puller's later pulls queued for as long as a test needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from modelrunner.core.distribution.registry import BlobStream, Manifest
from modelrunner.core.errors import CoreError, ModelNotFound
from modelrunner.core.references import ModelReference


class GatedRegistry:
    """Implements the Puller's RegistryLike; only `get_manifest` is ever reached."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        """Set it to let waiting (and later) manifest requests answer."""
        self.asked: list[str] = []
        """The normalised reference of each manifest request, in order."""
        self.arrived = asyncio.Event()
        """Set when the first manifest request arrives (at the gate)."""
        self.error: Callable[[ModelReference], CoreError] = lambda ref: ModelNotFound(
            f"model {ref.normalized} not found"
        )
        """What a manifest request raises once the gate is open."""

    async def get_manifest(self, ref: ModelReference) -> Manifest:
        self.asked.append(ref.normalized)
        self.arrived.set()
        await self.gate.wait()
        raise self.error(ref)

    async def read_blob(self, ref: ModelReference, digest: str, limit: int = 16 << 20) -> bytes:
        raise AssertionError("no manifest, so no config to read")

    async def blob_size(self, ref: ModelReference, digest: str) -> tuple[int, bool]:
        raise AssertionError("no manifest, so no layer to fetch")

    async def open_blob(
        self, ref: ModelReference, digest: str, *, start: int = 0, end: int | None = None
    ) -> BlobStream:
        raise AssertionError("no manifest, so no layer to fetch")

    async def close(self) -> None:
        return None
