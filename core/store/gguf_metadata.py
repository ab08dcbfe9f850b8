"""Read GGUF headers into DMR's config fields (format, quantization, parameters, size, gguf map).

Headers are read by our streaming reader (gguf_header); `read_summary_with_gguf_reader` does the
same through `gguf.GGUFReader`, kept as the reference that tests and the benchmark compare against.
"""

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
from modelrunner.core.store.gguf_header import GGUF_MAGIC, KeyValue, read_header

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


def _array_text(item_type: gguf.GGUFValueType | None, items: Sequence[Any]) -> str:
    if item_type is None or item_type == gguf.GGUFValueType.ARRAY:
        return ""  # empty and nested arrays become empty, as in DMR
    if item_type == gguf.GGUFValueType.STRING:
        return ", ".join(bytes(item).decode("utf-8", "replace") for item in items)
    return ", ".join(_scalar_text(item_type, item) for item in items)


def _kv_text(kv: KeyValue) -> str | None:
    """The config text of one KV, or None when DMR leaves it out (an array over 50 elements)."""
    if kv.type == gguf.GGUFValueType.STRING:
        assert isinstance(kv.value, bytes)
        return kv.value.decode("utf-8", "replace")
    if kv.type != gguf.GGUFValueType.ARRAY:
        return _scalar_text(kv.type, kv.value)
    if kv.leaves > MAX_ARRAY_ELEMENTS:
        return None
    return _array_text(kv.item_type, kv.value if isinstance(kv.value, tuple) else ())


def _reader_field_text(reader_field: Any) -> str | None:
    """`_kv_text` for a `gguf.GGUFReader` field."""
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
    item_type = types[1] if len(types) > 1 else None
    if item_type in (None, gguf.GGUFValueType.ARRAY):
        return ""
    if item_type == gguf.GGUFValueType.STRING:
        return _array_text(item_type, [parts[index] for index in indices])
    return _array_text(item_type, [parts[index].tolist()[0] for index in indices])


def _file_type_number(value: Any) -> int:
    """general.file_type as a number; a string counts as its first byte (GGUFReader's parts[-1])."""
    if isinstance(value, bytes | bytearray):
        return value[0] if value else -1
    try:
        return int(value)
    except (ValueError, OverflowError):  # NaN or infinite floats
        return -1


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


@dataclass(frozen=True)
class _Shard:
    """What a summary needs from one shard's header, whichever reader read it."""

    metadata: dict[str, str]
    file_type: int | None
    """general.file_type as a number; None when absent or an array (then it is guessed)."""
    tensors: list[tuple[str, str, int]]
    """(name, ggml type name, element count) of each tensor."""
    data_offset: int


def _check_magic(shard: Path) -> None:
    if not is_gguf(shard):
        raise InvalidInput(f"{shard} is not a GGUF file (it does not start with 'GGUF')")


def _read_shard(shard: Path) -> _Shard:
    _check_magic(shard)
    header = read_header(shard, keep_elements=MAX_ARRAY_ELEMENTS)
    metadata: dict[str, str] = {}
    for key, kv in header.kv.items():
        text = _kv_text(kv)
        if text is not None:
            metadata[key] = text
    file_type = header.kv.get("general.file_type")
    return _Shard(
        metadata=metadata,
        file_type=None
        if file_type is None or file_type.type == gguf.GGUFValueType.ARRAY
        else _file_type_number(file_type.value),
        tensors=[(t.name, t.type.name, t.n_elements) for t in header.tensors],
        data_offset=header.data_offset,
    )


def _read_shard_with_gguf_reader(shard: Path) -> _Shard:
    _check_magic(shard)
    try:
        reader = gguf.GGUFReader(shard)
    except Exception as error:  # the reader raises ValueError, IndexError, ... on damage
        raise InvalidInput(f"{shard} is not a valid GGUF file: {error}") from error
    metadata: dict[str, str] = {}
    for key, reader_field in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # the reader's own pseudo-fields for the header
        text = _reader_field_text(reader_field)
        if text is not None:
            metadata[key] = text
    file_type = reader.fields.get("general.file_type")
    number: int | None = None
    if file_type is not None and file_type.types and file_type.types[0] != gguf.GGUFValueType.ARRAY:
        raw = file_type.parts[-1]
        is_string = file_type.types[0] == gguf.GGUFValueType.STRING
        number = _file_type_number(bytes(raw) if is_string else raw.tolist()[0])
    return _Shard(
        metadata=metadata,
        file_type=number,
        tensors=[(t.name, t.tensor_type.name, int(t.n_elements)) for t in reader.tensors],
        data_offset=int(reader.data_offset),
    )


def read_summary(shards: Sequence[Path]) -> GGUFSummary:
    """Read the header(s) of a GGUF model: KVs from the first shard, tensors from all of them.

    Raises:
        InvalidInput: A file is not a readable GGUF.
    """
    return _summarize(shards, [_read_shard(shard) for shard in shards])


def read_summary_with_gguf_reader(shards: Sequence[Path]) -> GGUFSummary:
    """`read_summary` through `gguf.GGUFReader`: the slow reference our reader is tested against.

    Raises:
        InvalidInput: A file is not a readable GGUF.
    """
    return _summarize(shards, [_read_shard_with_gguf_reader(shard) for shard in shards])


def _summarize(paths: Sequence[Path], shards: Sequence[_Shard]) -> GGUFSummary:
    metadata = shards[0].metadata
    hint = metadata.get("controlvector.model_hint")
    architecture = hint or metadata.get("general.architecture") or "llama"
    tensor_types = [(name, type_name) for shard in shards for name, type_name, _ in shard.tensors]
    quantization = UNKNOWN_FILE_TYPE
    number = shards[0].file_type
    if number is not None:
        if 0 <= number < len(_FILE_TYPE_NAMES):
            quantization = _FILE_TYPE_NAMES[number]
    else:
        quantization = _guess_file_type(tensor_types, architecture)

    parameters = sum(count for shard in shards for _, _, count in shard.tensors)
    tensor_bytes = sum(
        max(0, path.stat().st_size - shard.data_offset)
        for path, shard in zip(paths, shards, strict=True)
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
