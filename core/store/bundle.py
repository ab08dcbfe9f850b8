"""Runtime bundles: bundles/sha256/<id>/{config.json, model/...} hard-linked from blobs."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelrunner.core.errors import InvalidInput, StoreCorrupt
from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.package import config_struct, is_cncf_config

MODEL_DIR = "model"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Bundle:
    """A model unpacked for a runtime: the files llama-server is given."""

    root: Path
    """bundles/sha256/<hex>."""
    gguf: Path
    """The weights (the first shard of a split model)."""
    mmproj: Path | None
    chat_template: Path | None
    config: dict[str, Any]
    """The content of the bundle's config.json (the inner Docker config object)."""


class BundleInvalid(Exception):
    """An existing bundle directory cannot be used and must be rebuilt."""


def validate_relative_path(path: str) -> str:
    """Check an annotated file path stays inside the model directory; returns it normalised.

    Raises:
        InvalidInput: Empty, NUL, absolute, "." or escaping paths (`../x`, `a/../../x`).
    """
    if not path or "\x00" in path:
        raise InvalidInput(f"invalid file path {path!r} in model: empty or contains NUL")
    if path.startswith("/") or path.startswith("\\") or (len(path) > 1 and path[1] == ":"):
        raise InvalidInput(f"invalid file path {path!r} in model: absolute paths are not allowed")
    normalised = posixpath.normpath(path)
    if normalised in (".", "..") or normalised.startswith("../"):
        raise InvalidInput(f"invalid file path {path!r} in model: it escapes the model directory")
    return normalised


def sanitize_relative_path(path: str) -> str:
    """Like DMR for modctl-packaged models: strip leading `../` segments, then validate again."""
    try:
        return validate_relative_path(path)
    except InvalidInput:
        stripped = path
        while stripped.startswith("../"):
            stripped = stripped[3:]
        return validate_relative_path(stripped)


def _link(blob: Path, target: Path) -> None:
    """Hard-link a blob into the bundle; copy only if the filesystem refuses links."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(blob, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(blob, target)


def _extract_tar(blob: Path, destination: Path) -> None:
    """Extract regular files and directories of a layer tar, refusing escaping names."""
    with tarfile.open(blob) as archive:
        for member in archive:
            if not (member.isfile() or member.isdir()):
                continue  # symlinks and special files are skipped, as in DMR
            relative = validate_relative_path(member.name)
            target = destination / relative
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            source = archive.extractfile(member)
            if source is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def _unpack_by_role(
    layers: list[Mapping[str, Any]], model: Path, blob: Callable[[str], Path]
) -> None:
    """V0.1: positional names decided by media type."""
    ggufs = [layer for layer in layers if layer.get("mediaType") == media_types.GGUF]
    safetensors = [layer for layer in layers if layer.get("mediaType") == media_types.SAFETENSORS]
    annotated_safetensors = any(_filepath(layer) is not None for layer in safetensors)
    for index, layer in enumerate(ggufs, start=1):
        name = "model.gguf" if len(ggufs) == 1 else f"model-{index:05d}-of-{len(ggufs):05d}.gguf"
        _link(blob(layer["digest"]), model / name)
    for index, layer in enumerate(safetensors, start=1):
        annotation = _filepath(layer)
        if annotated_safetensors and annotation is not None:
            name = validate_relative_path(annotation)
        elif len(safetensors) == 1:
            name = "model.safetensors"
        else:
            name = f"model-{index:05d}-of-{len(safetensors):05d}.safetensors"
        _link(blob(layer["digest"]), model / name)
    for layer in layers:
        kind = layer.get("mediaType")
        path = blob(layer["digest"])
        if kind == media_types.MMPROJ:
            _link(path, model / "model.mmproj")
        elif kind == media_types.CHAT_TEMPLATE:
            _link(path, model / "template.jinja")
        elif kind == media_types.DDUF:
            _link(path, model / f"{path.name}.dduf")
        elif kind in (media_types.VLLM_CONFIG_ARCHIVE, media_types.DIR_TAR):
            _extract_tar(path, model)
        elif kind == media_types.MODEL_FILE and (annotation := _filepath(layer)) is not None:
            _link(path, model / validate_relative_path(annotation))


def _unpack_by_annotation(
    layers: list[Mapping[str, Any]], model: Path, blob: Callable[[str], Path]
) -> None:
    """V0.2 and CNCF: every annotated layer goes to model/<annotation>."""
    placed: dict[str, str] = {}
    for layer in layers:
        annotation = _filepath(layer)
        if annotation is None:
            continue
        relative = sanitize_relative_path(annotation)
        if relative in placed:
            if placed[relative] != annotation:
                raise InvalidInput(
                    f"file paths {placed[relative]!r} and {annotation!r} "
                    f"both unpack to {relative!r}"
                )
            continue
        placed[relative] = annotation
        _link(blob(layer["digest"]), model / relative)


def _filepath(layer: Mapping[str, Any]) -> str | None:
    """The filepath annotation; None when absent (an empty one is kept so validation rejects it)."""
    annotations = layer.get("annotations")
    if isinstance(annotations, Mapping):
        value = annotations.get(media_types.ANNOTATION_FILEPATH)
        if isinstance(value, str):
            return value
    return None


def _find(model: Path, suffix: str, *, exclude: str | None = None) -> list[Path]:
    def wanted(path: Path) -> bool:
        return (
            path.is_file()
            and not path.name.startswith(".")
            and path.name.endswith(suffix)
            and (exclude is None or exclude not in path.name)
        )

    top = sorted(path for path in model.iterdir() if wanted(path))
    if top:
        return top
    return sorted(path for path in model.rglob(f"*{suffix}") if wanted(path))


def parse_bundle(root: Path) -> Bundle | None:
    """Read an existing bundle; None when it is valid but holds no GGUF (safetensors, DDUF).

    Raises:
        BundleInvalid: Old layout, missing or invalid config.json, no weights, several mmproj/jinja.
    """
    model = root / MODEL_DIR
    if not model.is_dir():
        raise BundleInvalid("no model/ directory (old bundle layout)")
    try:
        config = json.loads((root / CONFIG_FILE).read_bytes())
    except (OSError, ValueError) as error:
        raise BundleInvalid(f"config.json: {error}") from error
    if not isinstance(config, dict):
        raise BundleInvalid("config.json is not an object")
    ggufs = _find(model, ".gguf", exclude="mmproj")
    other_weights = _find(model, ".safetensors") or _find(model, ".dduf")
    if not ggufs and not other_weights:
        raise BundleInvalid("no weights found")
    mmprojs = sorted(model.rglob("*.mmproj")) or sorted(model.rglob("*mmproj*.gguf"))
    templates = sorted(model.rglob("*.jinja"))
    if len(mmprojs) > 1 or len(templates) > 1:
        raise BundleInvalid("more than one mmproj or chat template")
    if not ggufs:
        return None
    return Bundle(
        root=root,
        gguf=ggufs[0],
        mmproj=mmprojs[0] if mmprojs else None,
        chat_template=templates[0] if templates else None,
        config=config,
    )


def unpack_bundle(
    root: Path,
    manifest: Mapping[str, Any],
    config_bytes: bytes,
    blob: Callable[[str], Path],
) -> None:
    """Build a bundle in a temp directory beside root, then rename it into place.

    Raises:
        InvalidInput: A layer path escapes the model directory or two layers collide.
        StoreCorrupt: The config blob is not JSON.
    """
    try:
        document = json.loads(config_bytes)
    except ValueError as error:
        raise StoreCorrupt(f"config of {root.name} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise StoreCorrupt(f"config of {root.name} is not a JSON object")
    layers = [layer for layer in manifest.get("layers") or [] if isinstance(layer, Mapping)]
    config_type = (manifest.get("config") or {}).get("mediaType")
    cncf = manifest.get("artifactType") == media_types.CNCF_MANIFEST_ARTIFACT or (
        config_type == media_types.CNCF_CONFIG
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(staging, 0o755)
        model = staging / MODEL_DIR
        model.mkdir()
        if config_type == media_types.CONFIG_V01 and not cncf:
            _unpack_by_role(layers, model, blob)
        else:
            _unpack_by_annotation(layers, model, blob)
        if cncf or is_cncf_config(document):
            runtime_config = go_json.encoder_encode(document)
        else:
            inner = document.get("config")
            runtime_config = go_json.encoder_encode(
                config_struct(inner if isinstance(inner, Mapping) else {})
            )
        (staging / CONFIG_FILE).write_bytes(runtime_config)
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
