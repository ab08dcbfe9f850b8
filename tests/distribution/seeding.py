"""Put artifacts into a test registry with plain HTTP calls, independent of the code under test."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
import urllib.request
from typing import Any

from tests.distribution.conftest import RunningRegistry

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG_V01 = "application/vnd.docker.ai.model.config.v0.1+json"
GGUF = "application/vnd.docker.ai.gguf.v3"


def digest_of(data: bytes) -> str:
    """ "sha256:<hex>" of data."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _authorization(registry: RunningRegistry, repository: str) -> dict[str, str]:
    if registry.auth == "none":
        return {}
    pair = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    if registry.auth == "basic":
        return {"Authorization": f"Basic {pair}"}
    query = urllib.parse.urlencode(
        {"service": "lab-registry", "scope": f"repository:{repository}:pull,push"}
    )
    request = urllib.request.Request(
        f"{registry.token_url}/token?{query}", headers={"Authorization": f"Basic {pair}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {"Authorization": f"Bearer {json.load(response)['token']}"}


def _call(
    method: str, url: str, headers: dict[str, str], data: bytes | None = None
) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers)


def put_blob(registry: RunningRegistry, repository: str, data: bytes) -> str:
    """Upload one blob monolithically; returns its digest."""
    headers = _authorization(registry, repository)
    digest = digest_of(data)
    _, answer = _call("POST", f"{registry.url}/v2/{repository}/blobs/uploads/", headers, b"")
    location = urllib.parse.urljoin(registry.url, answer["Location"])
    separator = "&" if "?" in location else "?"
    upload_headers = {**headers, "Content-Type": "application/octet-stream"}
    _call("PUT", f"{location}{separator}digest={digest}", upload_headers, data)
    return digest


def put_manifest(
    registry: RunningRegistry, repository: str, reference: str, raw: bytes, media_type: str
) -> str:
    """PUT manifest bytes under a tag or digest; returns their digest."""
    headers = {**_authorization(registry, repository), "Content-Type": media_type}
    _call("PUT", f"{registry.url}/v2/{repository}/manifests/{reference}", headers, raw)
    return digest_of(raw)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """An OCI descriptor for some bytes."""
    return {"mediaType": media_type, "size": len(data), "digest": digest_of(data), **extra}


def seed_model(
    registry: RunningRegistry,
    repository: str,
    tag: str,
    *,
    weights: bytes = b"GGUF" + bytes(range(256)) * 64,
    config_type: str = CONFIG_V01,
) -> tuple[bytes, bytes, bytes]:
    """A small DMR-shaped artifact (config + one GGUF layer) under repository:tag.

    Returns (manifest bytes, config bytes, weights).
    """
    config = json.dumps(
        {"config": {"format": "gguf"}, "descriptor": {}, "rootfs": {"type": "rootfs"}},
        separators=(",", ":"),
    ).encode()
    put_blob(registry, repository, config)
    put_blob(registry, repository, weights)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, config),
        "layers": [descriptor(GGUF, weights)],
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    put_manifest(registry, repository, tag, raw, OCI_MANIFEST)
    return raw, config, weights
