"""Build a DMR model artifact (config, manifest, layer list) from local GGUF files."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.gguf_metadata import (
    format_parameters,
    format_size,
    read_summary,
    shard_paths,
)
from modelrunner.core.store.layout import file_digest, parse_digest, sha256_digest

MAX_CONTEXT_SIZE = 2**31 - 1
"""DMR stores context_size as an int32."""

# Go struct order of types.Config; every field is omitempty.
_CONFIG_STRING_FIELDS = ("format", "quantization", "parameters", "architecture", "size")
_CONFIG_MAP_FIELDS = ("gguf", "safetensors", "diffusers")


@dataclass(frozen=True)
class LayerFile:
    """One layer of an artifact and the local file holding its bytes."""

    digest: str
    size: int
    path: Path
    media_type: str
    mtime_ns: int | None = None
    """The file's mtime when it was hashed; lets a store trust the digest without re-reading."""


@dataclass(frozen=True)
class Artifact:
    """A built model: the exact manifest and config bytes, and where each layer's bytes are."""

    manifest_bytes: bytes
    config_bytes: bytes
    layers: tuple[LayerFile, ...]

    @property
    def id(self) -> str:
        """The model ID: sha256 of the manifest bytes."""
        return sha256_digest(self.manifest_bytes)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)


def config_struct(inner: Mapping[str, Any]) -> dict[str, Any]:
    """An inner Docker config in Go's types.Config shape: struct order, omitempty, sorted maps.

    Unknown keys are dropped, as DMR does whenever it re-marshals a config.
    """
    shaped: dict[str, Any] = {}
    for key in _CONFIG_STRING_FIELDS:
        value = inner.get(key)
        if isinstance(value, str) and value:
            shaped[key] = value
    for key in _CONFIG_MAP_FIELDS:
        value = inner.get(key)
        if isinstance(value, Mapping) and value:
            shaped[key] = go_json.GoMap({str(k): str(v) for k, v in value.items()})
    context_size = inner.get("context_size")
    if isinstance(context_size, int) and not isinstance(context_size, bool) and context_size:
        shaped["context_size"] = context_size
    return shaped


def is_cncf_config(document: Mapping[str, Any]) -> bool:
    """Whether a parsed config blob is a CNCF ModelPack config (DMR's key-based detection)."""
    if any(key in document for key in ("modelfs",)):
        return True
    descriptor = document.get("descriptor")
    if isinstance(descriptor, Mapping) and "createdAt" in descriptor:
        return True
    inner = document.get("config")
    return isinstance(inner, Mapping) and "paramSize" in inner


def docker_view(document: Mapping[str, Any]) -> dict[str, Any]:
    """The inner config in Docker shape; a CNCF config is converted like DMR's API does."""
    inner = document.get("config")
    if not isinstance(inner, Mapping):
        return {}
    if not is_cncf_config(document):
        return dict(inner)
    converted = {
        "format": inner.get("format"),
        "quantization": inner.get("quantization"),
        "parameters": inner.get("paramSize"),
        "architecture": inner.get("architecture"),
    }
    return {key: value for key, value in converted.items() if isinstance(value, str) and value}


def created_seconds(document: Mapping[str, Any]) -> int:
    """Unix seconds of descriptor.created (Docker) or descriptor.createdAt (CNCF); 0 if absent."""
    descriptor = document.get("descriptor")
    if not isinstance(descriptor, Mapping):
        return 0
    text = descriptor.get("created") or descriptor.get("createdAt")
    if not isinstance(text, str):
        return 0
    try:
        return int(go_json.parse_rfc3339(text).timestamp())
    except ValueError:
        return 0


def parse_manifest(manifest_bytes: bytes) -> dict[str, Any]:
    """Parse and check the parts of a manifest the store relies on.

    Raises:
        InvalidInput: Not JSON, or a config/layer descriptor without a valid digest and size.
    """
    try:
        document = json.loads(manifest_bytes)
    except ValueError as error:
        raise InvalidInput(f"manifest is not valid JSON: {error}") from error
    except RecursionError:
        raise InvalidInput("manifest is not valid JSON: it is nested too deeply") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise InvalidInput("manifest has no config descriptor")
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise InvalidInput("manifest has no layers list")
    for descriptor in [document["config"], *layers]:
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
            raise InvalidInput("manifest has a descriptor without a digest")
        parse_digest(descriptor["digest"])
        size = descriptor.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"manifest descriptor {descriptor['digest']} has no valid size")
    if document["config"].get("mediaType") not in media_types.CONFIG_TYPES:
        raise InvalidInput(f"unsupported config media type {document['config'].get('mediaType')!r}")
    return document


def index_files(document: dict[str, Any]) -> list[str]:
    """models.json `files`: layer digests in manifest order, then the config digest."""
    return [layer["digest"] for layer in document["layers"]] + [document["config"]["digest"]]


def _regular_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise InvalidInput(f"{what} {path} does not exist")
    if path.is_dir():
        raise InvalidInput(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise InvalidInput(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise InvalidInput(f"{what} {path} is not readable")
    return path


def describe_layer(
    path: Path, media_type: str, filepath: str | None = None
) -> tuple[LayerFile, dict[str, Any]]:
    """Hash a file and describe it as a layer with DMR's three annotations.

    Args:
        filepath: The `org.cncf.model.filepath` annotation: the file's name (V0.1, the default)
            or its path relative to the model root (V0.2).
    """
    before = path.stat()
    digest = file_digest(path)
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise InvalidInput(f"{path} changed while it was being read; try again")
    file_metadata = {
        "name": path.name,
        "mode": after.st_mode & 0o777,
        "uid": 0,
        "gid": 0,
        "size": after.st_size,
        "mtime": go_json.time_from_ns(after.st_mtime_ns),
        "typeflag": 0,
    }
    annotations = go_json.GoMap(
        {
            media_types.ANNOTATION_FILEPATH: filepath or path.name,
            media_types.ANNOTATION_FILE_METADATA: go_json.marshal(file_metadata).decode(),
            media_types.ANNOTATION_MEDIATYPE_UNTESTED: "false",
        }
    )
    descriptor = {
        "mediaType": media_type,
        "size": after.st_size,
        "digest": digest,
        "annotations": annotations,
    }
    layer = LayerFile(digest, after.st_size, path, media_type, after.st_mtime_ns)
    return layer, descriptor


def assemble(
    layers: Sequence[tuple[LayerFile, dict[str, Any]]],
    inner_config: Mapping[str, Any],
    *,
    created: str,
    config_media_type: str = media_types.CONFIG_V01,
) -> Artifact:
    """Marshal the config and manifest for a list of described layers (Go byte layout)."""
    config_document = {
        "config": config_struct(inner_config),
        "descriptor": {"created": created},
        "rootfs": {"type": "rootfs", "diff_ids": [layer.digest for layer, _ in layers]},
    }
    config_bytes = go_json.marshal(config_document)
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": {
            "mediaType": config_media_type,
            "size": len(config_bytes),
            "digest": sha256_digest(config_bytes),
        },
        "layers": [descriptor for _, descriptor in layers],
    }
    return Artifact(
        manifest_bytes=go_json.marshal(manifest),
        config_bytes=config_bytes,
        layers=tuple(layer for layer, _ in layers),
    )


def build_gguf_artifact(
    gguf: Path,
    *,
    mmproj: Path | None = None,
    chat_template: Path | None = None,
    context_size: int | None = None,
    licenses: Sequence[Path] = (),
    created: datetime | None = None,
) -> Artifact:
    """Package a local GGUF (and its sibling shards) like `docker model package --gguf`.

    Layer order is DMR's: weights (shards in order), licenses, chat template, mmproj.

    Raises:
        InvalidInput: A path is missing, a directory or unreadable; the GGUF is not a GGUF;
            a shard is missing; the context size is out of range.
    """
    _regular_file(gguf, "GGUF file")
    if context_size is not None and not 0 < context_size <= MAX_CONTEXT_SIZE:
        raise InvalidInput(f"context size {context_size} must be between 1 and {MAX_CONTEXT_SIZE}")
    shards = shard_paths(gguf)
    for shard in shards:
        _regular_file(shard, "GGUF shard")
    summary = read_summary(shards)

    described = [describe_layer(shard, media_types.GGUF) for shard in shards]
    described += describe_extra_files(licenses=licenses, chat_template=chat_template, mmproj=mmproj)

    inner: dict[str, Any] = {
        "format": "gguf",
        "quantization": summary.quantization,
        "parameters": format_parameters(summary.parameters),
        "architecture": summary.architecture,
        "size": format_size(summary.tensor_bytes),
        "gguf": summary.metadata,
        "context_size": context_size if context_size is not None else summary.context_length,
    }
    if created is None:
        created_text = go_json.time_from_ns(time.time_ns())
    else:
        created_text = go_json.rfc3339_nano(created)
    return assemble(described, inner, created=created_text)


def _go_time_text(text: str) -> str:
    """A descriptor.created as Go writes it back after parsing: RFC3339Nano, `Z` for UTC.

    Raises:
        ValueError: Not an RFC3339 time.
    """
    go_json.parse_rfc3339(text)  # validates
    body = text.strip()
    if body[-1] in "Zz":
        body, zone = body[:-1], "Z"
    else:
        body, zone = body[:-6], body[-6:]
        if zone[1:] == "00:00":
            zone = "Z"
    whole, _, fraction = body.partition(".")
    fraction = fraction[:9].rstrip("0")
    return f"{whole}.{fraction}{zone}" if fraction else f"{whole}{zone}"


def _descriptor_struct(descriptor: Mapping[str, Any]) -> dict[str, Any]:
    """A descriptor in Go's oci.Descriptor field order, empty fields omitted, annotations sorted."""
    shaped: dict[str, Any] = {}
    for key in ("mediaType", "size", "digest", "data", "urls", "annotations", "platform"):
        value = descriptor.get(key)
        if key == "size" and isinstance(value, int):
            shaped[key] = value
        elif value:
            shaped[key] = go_json.GoMap(value) if key == "annotations" else value
    if descriptor.get("artifactType"):
        shaped["artifactType"] = descriptor["artifactType"]
    return shaped


def derive_artifact(
    manifest_bytes: bytes,
    config_bytes: bytes,
    layers: Sequence[LayerFile],
    *,
    context_size: int | None = None,
    appended: Sequence[tuple[LayerFile, dict[str, Any]]] = (),
) -> Artifact:
    """DMR's `mutate` on a stored Docker-format model: its layers, then `appended` ones (their
    digests added to `rootfs.diff_ids`), and `config.context_size` set when given.

    This is what `WriteLightweight` (repackage) stores, and what `package --from` builds when it
    adds files. The config goes through Go's `types.ConfigFile`, so unknown keys are dropped and
    the order is Go's. The manifest keeps the source's config media type (DMR writes V0.1
    whatever the source had: the store model it wraps exposes none).

    Raises:
        InvalidInput: A CNCF ModelPack config (DMR's mutate ignores a context size there and its
            CLI refuses one), a config that is not a JSON object, or a size out of range.
    """
    if context_size is not None and not 0 < context_size <= MAX_CONTEXT_SIZE:
        raise InvalidInput(f"context size {context_size} must be between 1 and {MAX_CONTEXT_SIZE}")
    manifest = parse_manifest(manifest_bytes)
    try:
        document = json.loads(config_bytes)
    except (ValueError, RecursionError) as error:
        raise InvalidInput("the model's config is not valid JSON") from error
    if not isinstance(document, dict):
        raise InvalidInput("the model's config is not a JSON object")
    if is_cncf_config(document) or manifest["config"].get("mediaType") == media_types.CNCF_CONFIG:
        raise InvalidInput("a CNCF ModelPack model cannot be repackaged here (Docker format only)")
    inner = document.get("config")
    shaped_inner = config_struct(inner if isinstance(inner, Mapping) else {})
    if context_size is not None:
        shaped_inner["context_size"] = context_size
    descriptor: dict[str, Any] = {}
    source_descriptor = document.get("descriptor")
    created = source_descriptor.get("created") if isinstance(source_descriptor, Mapping) else None
    if isinstance(created, str):
        try:
            descriptor["created"] = _go_time_text(created)
        except ValueError as error:
            raise InvalidInput(f"the model's created time {created!r} is not RFC3339") from error
    rootfs = document.get("rootfs")
    rootfs = rootfs if isinstance(rootfs, Mapping) else {}
    source_diff_ids = rootfs.get("diff_ids")
    diff_ids = [str(d) for d in source_diff_ids] if isinstance(source_diff_ids, list) else None
    if appended:
        diff_ids = [*(diff_ids or []), *(layer.digest for layer, _ in appended)]
    new_config = go_json.marshal(
        {
            "config": shaped_inner,
            "descriptor": descriptor,
            "rootfs": {"type": str(rootfs.get("type") or ""), "diff_ids": diff_ids},
        }
    )
    new_manifest = {
        "schemaVersion": 2,
        "mediaType": media_types.OCI_MANIFEST,
        "config": {
            "mediaType": manifest["config"]["mediaType"],
            "size": len(new_config),
            "digest": sha256_digest(new_config),
        },
        "layers": [_descriptor_struct(layer) for layer in manifest["layers"]]
        + [descriptor for _, descriptor in appended],
    }
    all_layers = (*layers, *(layer for layer, _ in appended))
    return Artifact(go_json.marshal(new_manifest), new_config, all_layers)


def describe_extra_files(
    *,
    licenses: Sequence[Path] = (),
    chat_template: Path | None = None,
    mmproj: Path | None = None,
) -> list[tuple[LayerFile, dict[str, Any]]]:
    """License, chat template and mmproj layers, in DMR's order (as `package` adds them)."""
    described = [
        describe_layer(_regular_file(path, "license"), media_types.LICENSE) for path in licenses
    ]
    if chat_template is not None:
        template = _regular_file(chat_template, "chat template")
        described.append(describe_layer(template, media_types.CHAT_TEMPLATE))
    if mmproj is not None:
        described.append(describe_layer(_regular_file(mmproj, "mmproj file"), media_types.MMPROJ))
    return described
