"""What a pulled manifest and config must be before anything is downloaded or stored.

DMR's rules (its `checkCompat`): the config is DMR v0.1, v0.2 or CNCF ModelPack v1, and every
layer is raw (its diff ID is its digest). We also refuse layer types DMR cannot unpack, and
verify the manifest and config bytes, which DMR does not.
"""

from __future__ import annotations

import json
from typing import Any

from modelrunner.core.distribution.registry import (
    DOCKER_MANIFEST,
    DigestMismatch,
    Manifest,
    RegistryError,
)
from modelrunner.core.errors import InvalidInput
from modelrunner.core.references import ModelReference
from modelrunner.core.store import media_types
from modelrunner.core.store.layout import sha256_digest
from modelrunner.core.store.package import parse_manifest

MANIFEST_TYPES = frozenset({media_types.OCI_MANIFEST, DOCKER_MANIFEST})

LAYER_TYPES = frozenset(
    {
        media_types.GGUF,
        media_types.SAFETENSORS,
        media_types.DDUF,
        media_types.MMPROJ,
        media_types.CHAT_TEMPLATE,
        media_types.LICENSE,
        media_types.MODEL_FILE,
        media_types.VLLM_CONFIG_ARCHIVE,
        media_types.DIR_TAR,
        media_types.CNCF_WEIGHT_RAW,
        media_types.CNCF_WEIGHT_CONFIG_RAW,
        media_types.CNCF_DOC_RAW,
        media_types.CNCF_WEIGHT_GGUF,
        media_types.CNCF_WEIGHT_SAFETENSORS,
    }
)
"""Layer media types a model may carry (DMR's and the CNCF ModelPack raw ones)."""

_UPGRADE = "it may need a newer modelrunner"


class UnsupportedModel(InvalidInput):
    """The artifact is not a model we can store (unknown config or layer media type)."""

    status = 422


class BrokenManifest(RegistryError):
    """The registry served a manifest that is not one: not JSON, not an object, bad descriptors.

    A 502: the reference was fine, the answer was not (a proxy's login page, a damaged store).
    """


def _broken(ref: ModelReference, reason: str) -> BrokenManifest:
    return BrokenManifest(f"{ref.registry} served a broken manifest of {ref.normalized}: {reason}")


def check_manifest(manifest: Manifest, ref: ModelReference) -> dict[str, Any]:
    """Parse a served manifest and check its digest and media types; returns the document.

    Raises:
        DigestMismatch: The bytes do not hash to the digest served or asked for.
        UnsupportedModel: Not a model manifest, or a config or layer type we do not know.
        BrokenManifest: Not a JSON object, or malformed descriptors.
    """
    digest = sha256_digest(manifest.raw)
    if digest != manifest.digest or (ref.digest is not None and digest != ref.digest):
        raise DigestMismatch(
            f"digest mismatch for {ref.normalized}: the manifest served hashes to {digest}"
        )
    try:
        document = json.loads(manifest.raw)
    except ValueError as error:
        raise _broken(ref, f"it is not JSON ({error})") from error
    if not isinstance(document, dict):
        raise _broken(ref, "it is not a JSON object")
    declared = document.get("mediaType")
    if manifest.media_type not in MANIFEST_TYPES and declared not in MANIFEST_TYPES:
        raise UnsupportedModel(
            f"{ref.normalized} is not a model: manifest media type {manifest.media_type!r}"
        )
    config = document.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if config_type not in media_types.CONFIG_TYPES:
        raise UnsupportedModel(
            f"{ref.normalized} is not a model we can pull: config media type {config_type!r} "
            f"is not a Docker model config (v0.1, v0.2) or CNCF ModelPack v1; {_UPGRADE}"
        )
    try:
        document = parse_manifest(manifest.raw)
    except InvalidInput as error:
        raise _broken(ref, error.message) from error
    if not document["layers"]:
        raise UnsupportedModel(f"{ref.normalized} has no layers")
    for layer in document["layers"]:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise UnsupportedModel(
                f"{ref.normalized} has a layer of unsupported media type "
                f"{layer.get('mediaType')!r} ({layer['digest']}); {_UPGRADE}"
            )
    return document


def check_config(config_bytes: bytes, document: dict[str, Any]) -> dict[str, Any]:
    """Check config bytes against their descriptor and the layers; returns the parsed config.

    Raises:
        DigestMismatch: Wrong size or sha256.
        UnsupportedModel: Not a JSON object, or diff IDs that are not the layer digests
            (compressed layers, which DMR cannot store either).
    """
    descriptor = document["config"]
    if (
        len(config_bytes) != descriptor["size"]
        or sha256_digest(config_bytes) != descriptor["digest"]
    ):
        raise DigestMismatch(f"the config blob {descriptor['digest']} does not match its digest")
    try:
        config = json.loads(config_bytes)
    except ValueError as error:
        raise UnsupportedModel(f"the model config is not JSON: {error}") from error
    if not isinstance(config, dict):
        raise UnsupportedModel("the model config is not a JSON object")
    rootfs = config.get("rootfs") or config.get("modelfs")
    diff_ids = None
    if isinstance(rootfs, dict):
        diff_ids = rootfs.get("diff_ids") or rootfs.get("diffIds")
    digests = [layer["digest"] for layer in document["layers"]]
    if isinstance(diff_ids, list) and any(a != b for a, b in zip(diff_ids, digests, strict=False)):
        raise UnsupportedModel(
            "the model's diff IDs are not its layer digests (compressed layers are not supported)"
        )
    return config
