"""A streaming GGUF header reader: KVs and tensor infos, read with struct over a buffered file.

`gguf.GGUFReader` memory-maps the file and builds a numpy view for every array element, which takes
seconds on a 50k-token vocabulary. This reader walks the same header (versions 2 and 3, either byte
order, as `GGUFReader` accepts) with `struct`, keeps array values only up to `keep_elements`
elements and seeks past the rest, and checks every length against the file size before trusting
it, so a damaged header fails fast with `InvalidInput` instead of allocating. It validates what
`GGUFReader` validates (value and tensor types, duplicate keys and tensor names, alignment, row
sizes of quantized tensors, tensor data inside the file), so both accept the same files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gguf

from modelrunner.core.errors import InvalidInput

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_NESTING = 256
"""Arrays nested deeper than this are refused (no real model nests at all)."""

_CHUNK = 1 << 20
_VT = gguf.GGUFValueType
_SCALAR_FORMATS = {
    _VT.UINT8: "B",
    _VT.INT8: "b",
    _VT.UINT16: "H",
    _VT.INT16: "h",
    _VT.UINT32: "I",
    _VT.INT32: "i",
    _VT.FLOAT32: "f",
    _VT.BOOL: "B",
    _VT.UINT64: "Q",
    _VT.INT64: "q",
    _VT.FLOAT64: "d",
}
_SCALAR_SIZES = {kind: struct.calcsize(code) for kind, code in _SCALAR_FORMATS.items()}
_VALUE_TYPES = {int(kind): kind for kind in _VT}
# Tensor types GGUFReader views element-wise; the others must hold whole blocks per row.
_PLAIN_TENSOR_TYPES = frozenset(
    gguf.GGMLQuantizationType[name] for name in ("F16", "F32", "F64", "I8", "I16", "I32", "I64")
)
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, no dims, type, offset
_MIN_ARRAY_BYTES = 4 + 8  # item type, count

Scalar = bool | int | float
Value = Scalar | bytes | tuple[Scalar | bytes, ...] | None


@dataclass(frozen=True)
class KeyValue:
    """One header KV.

    `value` is a Python bool/int/float for scalars, the raw bytes for strings, a tuple of those
    for arrays of at most `keep_elements` scalars or strings, and None for longer or nested arrays.
    """

    type: gguf.GGUFValueType
    value: Value
    item_type: gguf.GGUFValueType | None = None
    """For arrays: the type of their elements; None for an empty array, as GGUFReader reports."""
    leaves: int = 0
    """For arrays: the element count, nested arrays counted by their leaves (GGUFReader's data)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry."""

    name: str
    dims: tuple[int, ...]
    type: gguf.GGMLQuantizationType
    offset: int
    """Offset of the tensor's data from the start of the data section."""
    n_elements: int
    n_bytes: int


@dataclass(frozen=True)
class GGUFHeader:
    """A GGUF file's header."""

    version: int
    big_endian: bool
    kv: dict[str, KeyValue]
    """KVs in file order."""
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    """Where the tensor data starts (the header end rounded up to the alignment)."""
    file_size: int


class _Cursor:
    """Reads a file front to back through a buffer; `skip` seeks instead of reading."""

    def __init__(self, stream: BinaryIO, size: int, name: str) -> None:
        self.stream = stream
        self.size = size
        self.name = name
        self.buf = b""
        self.base = 0
        """File offset of buf[0]."""
        self.pos = 0
        """Read position within buf (may run past its end after a skip)."""

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fail(self, what: str) -> InvalidInput:
        return InvalidInput(f"{self.name} is not a valid GGUF file: {what} (at byte {self.offset})")

    def remaining(self) -> int:
        return self.size - self.offset

    def fill(self, count: int, what: str) -> None:
        """Make count bytes available at pos, or fail with a truncation error."""
        if self.pos + count <= len(self.buf):
            return
        if count > self.remaining():
            raise self.fail(f"truncated while reading {what}")
        start = self.offset
        self.stream.seek(start)
        self.buf = self.stream.read(max(count, _CHUNK))
        self.base, self.pos = start, 0
        if len(self.buf) < count:
            raise self.fail(f"truncated while reading {what}")

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        self.fill(fmt.size, what)
        values = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return values

    def take(self, count: int, what: str) -> bytes:
        self.fill(count, what)
        data = self.buf[self.pos : self.pos + count]
        self.pos += count
        return data

    def skip(self, count: int, what: str) -> None:
        if count > self.remaining():
            raise self.fail(f"{what} runs past the end of the file")
        self.pos += count


class _Parser:
    def __init__(self, cursor: _Cursor, endian: str, keep_elements: int) -> None:
        self.cursor = cursor
        self.keep = keep_elements
        self.u32 = struct.Struct(endian + "I")
        self.u64 = struct.Struct(endian + "Q")
        self.endian = endian
        self.scalars = {k: struct.Struct(endian + code) for k, code in _SCALAR_FORMATS.items()}

    def uint32(self, what: str) -> int:
        return int(self.cursor.unpack(self.u32, what)[0])

    def count(self, what: str, min_item_bytes: int) -> int:
        count = int(self.cursor.unpack(self.u64, what)[0])
        if count * min_item_bytes > self.cursor.remaining():
            raise self.cursor.fail(f"{what} {count} does not fit in the file")
        return count

    def string(self, what: str) -> bytes:
        return self.cursor.take(self.count(f"{what} length", 1), what)

    def value_type(self, what: str) -> gguf.GGUFValueType:
        raw = self.uint32(what)
        kind = _VALUE_TYPES.get(raw)
        if kind is None:
            raise self.cursor.fail(f"unknown value type {raw} for {what}")
        return kind

    def scalar(self, kind: gguf.GGUFValueType, what: str) -> Scalar:
        value: Scalar = self.cursor.unpack(self.scalars[kind], what)[0]
        return value != 0 if kind == _VT.BOOL else value

    def key_value(self, key: str) -> KeyValue:
        kind = self.value_type(key)
        if kind == _VT.STRING:
            return KeyValue(kind, self.string(key))
        if kind != _VT.ARRAY:
            return KeyValue(kind, self.scalar(kind, key))
        raw_item = self.uint32(key)
        count = self.count(f"{key} array length", 1)
        if count == 0:  # GGUFReader neither checks nor reports an empty array's item type
            return KeyValue(kind, (), None, 0)
        item = _VALUE_TYPES.get(raw_item)
        if item is None:
            raise self.cursor.fail(f"unknown array item type {raw_item} for {key}")
        if item == _VT.ARRAY:
            return KeyValue(kind, None, item, self.skip_arrays(count, key, 1))
        if count > self.keep:
            self.skip_items(item, count, key)
            return KeyValue(kind, None, item, count)
        return KeyValue(kind, self.items(item, count, key), item, count)

    def items(self, item: gguf.GGUFValueType, count: int, key: str) -> tuple[Scalar | bytes, ...]:
        if item == _VT.STRING:
            return tuple(self.string(key) for _ in range(count))
        fmt = struct.Struct(f"{self.endian}{count}{_SCALAR_FORMATS[item]}")
        values = self.cursor.unpack(fmt, key)
        if item == _VT.BOOL:
            return tuple(value != 0 for value in values)
        return values

    def skip_items(self, item: gguf.GGUFValueType, count: int, key: str) -> None:
        if item != _VT.STRING:
            self.cursor.skip(count * _SCALAR_SIZES[item], f"{key} array")
            return
        if count * 8 > self.cursor.remaining():
            raise self.cursor.fail(f"{key} array length {count} does not fit in the file")
        cursor, unpack_from = self.cursor, self.u64.unpack_from
        left = count
        while left:
            cursor.fill(8, f"{key} string length")
            buf, pos = cursor.buf, cursor.pos
            stop = len(buf) - 8
            while left and pos <= stop:
                pos += 8 + unpack_from(buf, pos)[0]
                left -= 1
            cursor.pos = pos
            if cursor.remaining() < 0:
                raise cursor.fail(f"a string of {key} runs past the end of the file")

    def skip_arrays(self, count: int, key: str, depth: int) -> int:
        """Skip count nested arrays; return how many leaves they hold."""
        if depth > MAX_NESTING:
            raise self.cursor.fail(f"{key} nests arrays deeper than {MAX_NESTING} levels")
        if count * _MIN_ARRAY_BYTES > self.cursor.remaining():
            raise self.cursor.fail(f"{key} array length {count} does not fit in the file")
        leaves = 0
        for _ in range(count):
            raw_item = self.uint32(key)
            inner = self.count(f"{key} array length", 1)
            if inner == 0:
                continue
            item = _VALUE_TYPES.get(raw_item)
            if item is None:
                raise self.cursor.fail(f"unknown array item type {raw_item} in {key}")
            if item == _VT.ARRAY:
                leaves += self.skip_arrays(inner, key, depth + 1)
            else:
                self.skip_items(item, inner, key)
                leaves += inner
        return leaves

    def tensor_info(self) -> TensorInfo:
        raw_name = self.string("tensor name")
        name = _decode(raw_name, self.cursor, "tensor name")
        n_dims = self.uint32(f"{name} dimension count")
        dims_format = struct.Struct(f"{self.endian}{n_dims}Q")
        if dims_format.size > self.cursor.remaining():
            raise self.cursor.fail(f"tensor {name} has {n_dims} dimensions")
        dims: tuple[int, ...] = self.cursor.unpack(dims_format, f"{name} dimensions")
        raw_type = self.uint32(f"{name} type")
        offset = int(self.cursor.unpack(self.u64, f"{name} offset")[0])
        try:
            ggml_type = gguf.GGMLQuantizationType(raw_type)
            block_size, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
        except (ValueError, KeyError):
            raise self.cursor.fail(f"tensor {name} has unknown type {raw_type}") from None
        n_elements = 1
        for dim in dims:
            n_elements *= dim
        if ggml_type not in _PLAIN_TENSOR_TYPES and (not dims or dims[0] % block_size):
            raise self.cursor.fail(
                f"tensor {name} rows are not a whole number of {ggml_type.name} blocks"
            )
        return TensorInfo(
            name=name,
            dims=dims,
            type=ggml_type,
            offset=offset,
            n_elements=n_elements,
            n_bytes=n_elements * type_size // block_size,
        )


def _decode(raw: bytes, cursor: _Cursor, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise cursor.fail(f"{what} {raw[:40]!r} is not UTF-8") from None


def read_header(path: Path, *, keep_elements: int = 50) -> GGUFHeader:
    """Read a GGUF file's KVs and tensor infos, keeping array values of <= keep_elements.

    Raises:
        InvalidInput: The file is not a GGUF, or its header is damaged, truncated or unsupported.
    """
    try:
        with path.open("rb") as stream:
            size = path.stat().st_size
            return _read(_Cursor(stream, size, str(path)), keep_elements)
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from error


def _read(cursor: _Cursor, keep_elements: int) -> GGUFHeader:
    if cursor.size < 4 or cursor.take(4, "magic") != GGUF_MAGIC:
        raise InvalidInput(f"{cursor.name} is not a GGUF file (it does not start with 'GGUF')")
    (version,) = struct.unpack("<I", cursor.take(4, "version"))
    big_endian = version & 0xFFFF == 0  # as GGUFReader: a byte-swapped small version
    if big_endian:
        version = int.from_bytes(version.to_bytes(4, "little"), "big")
    if version not in SUPPORTED_VERSIONS:
        raise cursor.fail(f"GGUF version {version} is not supported (only 2 and 3)")
    parser = _Parser(cursor, ">" if big_endian else "<", keep_elements)
    tensor_count, kv_count = parser.cursor.unpack(struct.Struct(parser.endian + "QQ"), "counts")
    if kv_count * _MIN_KV_BYTES + tensor_count * _MIN_TENSOR_INFO_BYTES > cursor.remaining():
        raise cursor.fail(f"{kv_count} KVs and {tensor_count} tensors do not fit in the file")
    kv: dict[str, KeyValue] = {}
    for _ in range(kv_count):
        key = _decode(parser.string("key"), cursor, "key")
        if key in kv or key in ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"):
            raise cursor.fail(f"duplicate key {key}")
        kv[key] = parser.key_value(key)
    tensors: list[TensorInfo] = []
    names: set[str] = set()
    for _ in range(tensor_count):
        tensor = parser.tensor_info()
        if tensor.name in names:
            raise cursor.fail(f"duplicate tensor {tensor.name}")
        names.add(tensor.name)
        tensors.append(tensor)
    alignment = DEFAULT_ALIGNMENT
    declared = kv.get("general.alignment")
    if declared is not None:
        if declared.type != _VT.UINT32 or not isinstance(declared.value, int):
            raise cursor.fail("general.alignment is not a uint32")
        alignment = declared.value
        if alignment == 0 or alignment & (alignment - 1):
            raise cursor.fail(f"general.alignment {alignment} is not a power of two")
    data_offset = -(-cursor.offset // alignment) * alignment
    for tensor in tensors:
        if tensor.n_bytes and data_offset + tensor.offset + tensor.n_bytes > cursor.size:
            raise InvalidInput(
                f"{cursor.name} is not a valid GGUF file: "
                f"the data of tensor {tensor.name} runs past the end of the file"
            )
    return GGUFHeader(
        version=version,
        big_endian=big_endian,
        kv=kv,
        tensors=tuple(tensors),
        alignment=alignment,
        data_offset=data_offset,
        file_size=cursor.size,
    )
