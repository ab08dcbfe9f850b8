"""Build a DMR V0.2 artifact over a downloaded directory (safetensors repositories).

DMR's `builder.FromDirectory`: one layer per regular, non-hidden file in `filepath.Walk` order, each
annotated with its path relative to the directory; the media type comes from the file name; the
config describes the safetensors weights (dtype, parameter count and header metadata of the first
weight file, total size of all of them, context size from a sibling config.json).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.package import Artifact, assemble, describe_layer

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""A safetensors header (or config.json) larger than this is not read, as DMR."""

_CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_ctx",
    "n_positions",
    "max_length",
    "max_sequence_length",
    "model_max_length",
)
_PARAMETER_UNITS = ("", "K", "M", "B", "T")
_SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_LICENSE_WORDS = ("license", "licence", "copying", "notice")


def media_type_for(relative: str) -> str:
    """DMR's classification of a file in a model directory by its name."""
    name = relative.rsplit("/", 1)[-1].lower()
    if name.endswith(".safetensors"):
        return media_types.SAFETENSORS
    if name.endswith(".gguf"):
        return media_types.GGUF
    if name.endswith(".dduf"):
        return media_types.DDUF
    if any(word in name for word in _LICENSE_WORDS):
        return media_types.LICENSE
    if name.endswith(".jinja") or "chat_template" in name:
        return media_types.CHAT_TEMPLATE
    return media_types.MODEL_FILE


def walk_order(relatives: Sequence[str]) -> list[str]:
    """Go's filepath.Walk order: lexical by name within each directory, depth first."""
    return sorted(relatives, key=lambda relative: relative.split("/"))


def _custom_size(value: float, base: float, units: Sequence[str]) -> str:
    """go-units CustomSize("%.2f%s", value, base, units)."""
    unit = 0
    while value >= base and unit < len(units) - 1:
        value /= base
        unit += 1
    return f"{value:.2f}{units[unit]}"


def _read_header(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                return None
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _context_size(config_json: Path) -> int | None:
    try:
        if config_json.stat().st_size > MAX_HEADER_BYTES:
            return None
        document = json.loads(config_json.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    for key in _CONTEXT_KEYS:
        value = document.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
            return value
    return None


def safetensors_config(weights: Sequence[Path], config_json: Path | None) -> dict[str, Any]:
    """The inner Docker config of safetensors weights (just the format when unreadable)."""
    inner: dict[str, Any] = {"format": "safetensors"}
    header = _read_header(weights[0]) if weights else None
    if header is None:
        return inner
    raw_metadata = header.pop("__metadata__", None)
    metadata = raw_metadata if isinstance(raw_metadata, dict) else {}
    tensors = [entry for entry in header.values() if isinstance(entry, dict)]
    dtypes = {str(entry.get("dtype")) for entry in tensors}
    parameters = 0
    for entry in tensors:
        count = 1
        for dimension in entry.get("shape") or []:
            count *= int(dimension)
        parameters += count
    inner["quantization"] = dtypes.pop() if len(dtypes) == 1 else ("mixed" if dtypes else "unknown")
    inner["parameters"] = _custom_size(float(parameters), 1000, _PARAMETER_UNITS)
    architecture = metadata.get("architecture")
    if isinstance(architecture, str):
        inner["architecture"] = architecture
    total = sum(path.stat().st_size for path in weights)
    inner["size"] = _custom_size(float(total), 1000, _SIZE_UNITS)
    details = {str(key): str(value) for key, value in metadata.items()}
    details["tensor_count"] = str(len(tensors))
    inner["safetensors"] = details
    if config_json is not None:
        context_size = _context_size(config_json)
        if context_size is not None:
            inner["context_size"] = context_size
    return inner


def build_directory_artifact(
    root: Path, relatives: Sequence[str], *, created: datetime
) -> Artifact:
    """A V0.2 artifact with one layer per file (paths relative to root, forward slashes).

    Raises:
        InvalidInput: A file is missing or changed while it was hashed, or none is a weight.
    """
    ordered = [
        relative
        for relative in walk_order(relatives)
        if not any(part.startswith(".") for part in relative.split("/"))
    ]
    missing = [relative for relative in ordered if not (root / relative).is_file()]
    if missing:
        raise InvalidInput(f"cannot package {root}: missing {', '.join(missing)}")
    weights = [root / r for r in ordered if media_type_for(r) == media_types.SAFETENSORS]
    if not weights:
        raise InvalidInput(f"cannot package {root}: no safetensors weights")
    config_json = weights[0].parent / "config.json"
    inner = safetensors_config(weights, config_json if config_json.is_file() else None)
    described = [
        describe_layer(root / relative, media_type_for(relative), relative) for relative in ordered
    ]
    return assemble(
        described,
        inner,
        created=go_json.rfc3339_nano(created),
        config_media_type=media_types.CONFIG_V02,
    )
