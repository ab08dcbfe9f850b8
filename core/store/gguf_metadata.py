"""Read GGUF headers into DMR's config fields (format, quantization, parameters, size, gguf map)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from modelrunner.core.errors import InvalidInput

GGUF_MAGIC = b"GGUF"
MAX_ARRAY_ELEMENTS = 50
"""DMR drops GGUF arrays longer than this from the config's gguf map."""
_INT32_MAX = 2**31 - 1

# gguf-parser-go's GGUFFileType names (its numbering follows llama.cpp's general.file_type).
_FILE_TYPE_NAMES = [
    "MOSTLY_F32",
    "MOSTLY_F16",
    "MOSTLY_Q4_0",
    "MOSTLY_Q4_1",
    "MOSTLY_Q4_1_SOME_F16",
    "MOSTLY_Q4_2",
    "MOSTLY_Q4_3",
    "MOSTLY_Q8_0",
    "MOSTLY_Q5_0",
    "MOSTLY_Q5_1",
    "MOSTLY_Q2_K",
    "MOSTLY_Q3_K_S",
    "MOSTLY_Q3_K_M",
    "MOSTLY_Q3_K_L",
    "MOSTLY_Q4_K_S",
    "MOSTLY_Q4_K_M",
    "MOSTLY_Q5_K_S",
    "MOSTLY_Q5_K_M",
    "MOSTLY_Q6_K",
    "MOSTLY_IQ2_XXS",
    "MOSTLY_IQ2_XS",
    "MOSTLY_Q2_K_S",
    "MOSTLY_IQ3_XS",
    "MOSTLY_IQ3_XXS",
    "MOSTLY_IQ1_S",
    "MOSTLY_IQ4_NL",
    "MOSTLY_IQ3_S",
    "MOSTLY_IQ3_M",
    "MOSTLY_IQ2_S",
    "MOSTLY_IQ2_M",
    "MOSTLY_IQ4_XS",
    "MOSTLY_IQ1_M",
    "MOSTLY_BF16",
    "MOSTLY_Q4_0_4_4",
    "MOSTLY_Q4_0_4_8",
    "MOSTLY_Q4_0_8_8",
    "MOSTLY_TQ1_0",
    "MOSTLY_TQ2_0",
    "MOSTLY_MXFP4",
]
UNKNOWN_FILE_TYPE = "Unknown"

# The file type gguf-parser guesses from the most common tensor type (simple one-to-one cases).
_GUESS_BY_TENSOR_TYPE = {
    "F16": "MOSTLY_F16",
    "BF16": "MOSTLY_BF16",
    "Q4_0": "MOSTLY_Q4_0",
    "Q4_1": "MOSTLY_Q4_1",
    "Q5_0": "MOSTLY_Q5_0",
    "Q5_1": "MOSTLY_Q5_1",
    "Q8_0": "MOSTLY_Q8_0",
    "Q2_K": "MOSTLY_Q2_K",
    "Q3_K": "MOSTLY_Q3_K_S",
    "Q4_K": "MOSTLY_Q4_K_S",
    "Q5_K": "MOSTLY_Q5_K_S",
    "Q6_K": "MOSTLY_Q6_K",
    "IQ2_XXS": "MOSTLY_IQ2_XXS",
    "IQ2_XS": "MOSTLY_IQ2_XS",
    "IQ2_S": "MOSTLY_IQ2_M",
    "IQ3_XXS": "MOSTLY_IQ3_XXS",
    "IQ3_S": "MOSTLY_IQ3_S",
    "IQ1_S": "MOSTLY_IQ1_S",
    "IQ1_M": "MOSTLY_IQ1_M",
    "IQ4_NL": "MOSTLY_IQ4_NL",
    "IQ4_XS": "MOSTLY_IQ4_XS",
    "TQ1_0": "MOSTLY_TQ1_0",
    "TQ2_0": "MOSTLY_TQ2_0",
    "MXFP4": "MOSTLY_MXFP4",
}

_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")
_PARAMETER_UNITS = ("", "K", "M", "B", "T", "Q")
_SIZE_UNITS = (
    ("Pi", 1024**5),
    ("P", 1000**5),
    ("Ti", 1024**4),
    ("T", 1000**4),
    ("Gi", 1024**3),
    ("G", 1000**3),
    ("Mi", 1024**2),
    ("M", 1000**2),
    ("Ki", 1024),
    ("K", 1000),
)


@dataclass(frozen=True)
class GGUFSummary:
    """What DMR's config records about a GGUF model."""

    architecture: str
    quantization: str
    parameters: int
    tensor_bytes: int
    context_length: int | None
    metadata: dict[str, str] = field(default_factory=dict)
    """Every header KV stringified as DMR does (arrays over 50 elements left out)."""


def format_parameters(count: int) -> str:
    """DMR's parameter count: base 1000, 2 decimals, ".00" trimmed ("183", "361.82M", "1.10B")."""
    value = float(count)
    unit = 0
    while value >= 1000 and unit < len(_PARAMETER_UNITS) - 1:
        value /= 1000
        unit += 1
    text = f"{value:.2f}"
    return text.removesuffix(".00") + _PARAMETER_UNITS[unit]


def format_size(size: int) -> str:
    """DMR's tensor-data size: the largest binary or decimal unit below it ("864B", "256.35MiB")."""
    for unit, scale in _SIZE_UNITS:
        if size >= scale:
            return f"{size / scale:.2f}".removesuffix(".00") + unit + "B"
    return f"{size}B"


def _go_float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6f}"


def _scalar_text(kind: gguf.GGUFValueType, value: Any) -> str:
    if kind == gguf.GGUFValueType.BOOL:
        return "true" if value else "false"
    if kind in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
        return _go_float(float(value))
    return str(int(value))


def _field_text(reader_field: Any) -> str | None:
    """The config text of one KV, or None when DMR leaves it out (an array over 50 elements)."""
    types: list[gguf.GGUFValueType] = list(reader_field.types)
    parts = reader_field.parts
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(parts[-1]).decode("utf-8", "replace")
    if types[0] != gguf.GGUFValueType.ARRAY:
        return _scalar_text(types[0], parts[-1].tolist()[0])
    indices: list[int] = list(reader_field.data)
    if len(indices) > MAX_ARRAY_ELEMENTS:
        return None
    if len(types) < 2 or types[1] == gguf.GGUFValueType.ARRAY:
        return ""  # nested arrays become empty, as in DMR
    if types[1] == gguf.GGUFValueType.STRING:
        items = [bytes(parts[index]).decode("utf-8", "replace") for index in indices]
    else:
        items = [_scalar_text(types[1], parts[index].tolist()[0]) for index in indices]
    return ", ".join(items)


def _guess_file_type(tensor_types: Sequence[tuple[str, str]], architecture: str) -> str:
    counts: Counter[str] = Counter()
    for name, type_name in tensor_types:
        relevant = (
            name.startswith(("token_embd", "blk.")) or "_norm" in name or name.endswith(".weight")
        )
        if architecture == "diffusion":
            relevant = name.endswith(".weight")
        if relevant:
            counts[type_name] += 1
    ranked = [type_name for type_name, _ in counts.most_common()]
    if not ranked:
        return UNKNOWN_FILE_TYPE
    if ranked[0] == "F32":
        if len(ranked) == 1:
            return "MOSTLY_F32"
        ranked[0] = ranked[1]
    return _GUESS_BY_TENSOR_TYPE.get(ranked[0], UNKNOWN_FILE_TYPE)


def is_gguf(path: Path) -> bool:
    """Whether the file starts with the GGUF magic."""
    try:
        with path.open("rb") as stream:
            return stream.read(4) == GGUF_MAGIC
    except OSError:
        return False


def shard_paths(path: Path) -> list[Path]:
    """All shards of a split GGUF given any one of them (`<name>-00001-of-0000N.gguf`), else [path].

    Raises:
        InvalidInput: A sibling shard is missing.
    """
    match = _SHARD_RE.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    if count < 1 or int(match["index"]) > count:
        raise InvalidInput(f"{path.name}: shard number is out of range")
    shards = [
        path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise InvalidInput(f"GGUF shard(s) missing next to {path.name}: {', '.join(missing)}")
    return shards


def read_summary(shards: Sequence[Path]) -> GGUFSummary:
    """Read the header(s) of a GGUF model: KVs from the first shard, tensors from all of them.

    Raises:
        InvalidInput: A file is not a readable GGUF.
    """
    readers = []
    for shard in shards:
        if not is_gguf(shard):
            raise InvalidInput(f"{shard} is not a GGUF file (it does not start with 'GGUF')")
        try:
            readers.append(gguf.GGUFReader(shard))
        except Exception as error:  # the reader raises ValueError, IndexError, ... on damage
            raise InvalidInput(f"{shard} is not a valid GGUF file: {error}") from error
    first = readers[0]
    metadata: dict[str, str] = {}
    for key, reader_field in first.fields.items():
        if key.startswith("GGUF."):
            continue  # the reader's own pseudo-fields for the header
        text = _field_text(reader_field)
        if text is not None:
            metadata[key] = text

    hint = metadata.get("controlvector.model_hint")
    architecture = hint or metadata.get("general.architecture") or "llama"
    tensor_types = [
        (tensor.name, tensor.tensor_type.name) for reader in readers for tensor in reader.tensors
    ]
    quantization = UNKNOWN_FILE_TYPE
    file_type = first.fields.get("general.file_type")
    if file_type is not None and file_type.types and file_type.types[0] != gguf.GGUFValueType.ARRAY:
        number = int(file_type.parts[-1].tolist()[0])
        if 0 <= number < len(_FILE_TYPE_NAMES):
            quantization = _FILE_TYPE_NAMES[number]
    else:
        quantization = _guess_file_type(tensor_types, architecture)

    parameters = sum(int(tensor.n_elements) for reader in readers for tensor in reader.tensors)
    tensor_bytes = sum(
        max(0, shard.stat().st_size - int(reader.data_offset))
        for shard, reader in zip(shards, readers, strict=True)
    )
    context_length: int | None = None
    raw_context = metadata.get(f"{architecture}.context_length")
    if raw_context is not None and raw_context.lstrip("-").isdigit():
        value = int(raw_context)
        if 0 < value <= _INT32_MAX:
            context_length = value
    return GGUFSummary(
        architecture=architecture,
        quantization=quantization,
        parameters=parameters,
        tensor_bytes=tensor_bytes,
        context_length=context_length,
        metadata=metadata,
    )
