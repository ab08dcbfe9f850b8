"""Manifests as registries serve them: media types, the Manifest record, a model in an index."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelrunner.core.errors import CoreError
from modelrunner.core.store import media_types
from modelrunner.core.store.layout import parse_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({media_types.OCI_INDEX, DOCKER_MANIFEST_LIST})
ACCEPT_MANIFESTS = ", ".join(
    (media_types.OCI_MANIFEST, media_types.OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
)
"""Without an OCI type in Accept, distribution answers 404 for OCI manifests."""

MAX_MANIFEST_BYTES = 4 << 20
"""distribution's own limit on a manifest's size."""
MAX_INDEX_PROBES = 8
"""How many manifests of an index are fetched to find the model among them."""
MODEL_ARTIFACT_TYPES = frozenset({media_types.CNCF_MANIFEST_ARTIFACT, *media_types.CONFIG_TYPES})
"""Index entries whose artifactType says "model" without fetching them."""


class DigestMismatch(CoreError):
    """A registry served content whose sha256 differs from the digest asked for.

    A 502, as any other wrong answer from upstream: the request was fine, the registry (or
    something between it and us) was not.
    """

    status = 502


class UnsupportedManifest(CoreError):
    """An image index with no model manifest in it (or an index inside an index)."""

    status = 422


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry served it."""

    raw: bytes
    """The bytes as served; their sha256 is the model ID."""
    digest: str
    """"sha256:<hex>" of raw (verified against the reference's digest when it has one)."""
    media_type: str
    """From Content-Type, else the document's mediaType; may be a type the puller rejects."""
    index_digest: str | None = None
    """The image index this manifest was picked from, if the reference named an index."""


def served_media_type(content_type: str, raw: bytes) -> str:
    """The manifest's type: Content-Type, or the document's own mediaType when that is generic."""
    media_type = content_type.partition(";")[0].strip()
    if media_type and media_type not in ("application/json", "text/plain"):
        return media_type
    try:
        declared = json.loads(raw).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    return declared if isinstance(declared, str) else media_type


def index_candidates(raw: bytes, shown: str) -> tuple[list[dict[str, Any]], bool]:
    """The entries of an index worth fetching, in order, and whether artifactType marked them.

    Raises:
        UnsupportedManifest: The index lists no manifests.
        InvalidInput: An entry's digest is malformed.
    """
    try:
        listed = json.loads(raw).get("manifests") or []
    except (ValueError, AttributeError):
        listed = []
    entries = [e for e in listed if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    if not entries:
        raise UnsupportedManifest(f"{shown}: the image index lists no manifests")
    for entry in entries:
        parse_digest(entry["digest"])
    # An artifactType saying "model" decides without fetching; otherwise look at the configs.
    marked = [e for e in entries if e.get("artifactType") in MODEL_ARTIFACT_TYPES]
    return (marked or entries)[:MAX_INDEX_PROBES], bool(marked) or len(entries) == 1


def has_model_config(raw: bytes) -> bool:
    """Whether a manifest's config is a DMR or CNCF model config."""
    try:
        config = json.loads(raw).get("config") or {}
        return config.get("mediaType") in media_types.CONFIG_TYPES
    except (ValueError, AttributeError):
        return False
