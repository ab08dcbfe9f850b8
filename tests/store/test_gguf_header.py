"""Our streaming GGUF header reader against gguf.GGUFReader, and its handling of damaged headers."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store import package
from modelrunner.core.store.gguf_header import GGUFHeader, read_header
from modelrunner.core.store.gguf_metadata import (
    GGUFSummary,
    read_summary,
    read_summary_with_gguf_reader,
)
from modelrunner.core.store.store import ModelStore
from tests.gguf_factory import write_sharded_gguf, write_tiny_gguf
from tests.store.dmr_fixtures import write_dummy_gguf

VT = gguf.GGUFValueType
_FORMATS = {
    VT.UINT8: "B",
    VT.INT8: "b",
    VT.UINT16: "H",
    VT.INT16: "h",
    VT.UINT32: "I",
    VT.INT32: "i",
    VT.FLOAT32: "f",
    VT.BOOL: "?",
    VT.UINT64: "Q",
    VT.INT64: "q",
    VT.FLOAT64: "d",
}
_SAMPLES: dict[gguf.GGUFValueType, Callable[[int], Any]] = {
    VT.UINT8: lambda i: i % 256,
    VT.INT8: lambda i: i % 256 - 128,
    VT.UINT16: lambda i: i * 997 % 65536,
    VT.INT16: lambda i: i * 997 % 65536 - 32768,
    VT.UINT32: lambda i: i * 2654435761 % 2**32,
    VT.INT32: lambda i: i * 2654435761 % 2**32 - 2**31,
    VT.FLOAT32: lambda i: i / 7 - 3.5,
    VT.BOOL: lambda i: i % 3 == 0,
    VT.UINT64: lambda i: i * 0x9E3779B97F4A7C15 % 2**64,
    VT.INT64: lambda i: i * 0x9E3779B97F4A7C15 % 2**64 - 2**63,
    VT.FLOAT64: lambda i: i / 3 - 1e300 * (i % 2),
    VT.STRING: lambda i: f"word-{i}-✓",
}


# Comparing the two readers


def _assert_same_as_gguf_reader(path: Path) -> GGUFHeader:
    """Our header equals what GGUFReader reads from the same file, field by field."""
    ours = read_header(path)
    reader = gguf.GGUFReader(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.kv) == list(fields)
    assert ours.version == int(reader.fields["GGUF.version"].parts[0][0])
    for key, kv in ours.kv.items():
        field = fields[key]
        assert kv.type == field.types[0], key
        if kv.type == VT.ARRAY:
            assert kv.leaves == len(field.data), key
            assert kv.item_type == (field.types[1] if len(field.types) > 1 else None), key
            if isinstance(kv.value, tuple) and kv.item_type == VT.STRING:
                assert list(kv.value) == [bytes(field.parts[i]) for i in field.data], key
            elif isinstance(kv.value, tuple):
                assert list(kv.value) == [field.parts[i].tolist()[0] for i in field.data], key
            else:
                assert kv.leaves > 50 or kv.item_type == VT.ARRAY, key
        elif kv.type == VT.STRING:
            assert kv.value == bytes(field.parts[-1]), key
        else:
            theirs = field.parts[-1].tolist()[0]
            assert type(kv.value) is type(theirs), key
            assert kv.value == theirs or (kv.value != kv.value and theirs != theirs), key  # NaN
    assert ours.alignment == int(reader.alignment)
    assert ours.data_offset == int(reader.data_offset)
    assert len(ours.tensors) == len(reader.tensors)
    for mine, theirs in zip(ours.tensors, reader.tensors, strict=True):
        assert mine.name == theirs.name
        assert mine.type == theirs.tensor_type
        assert mine.dims == tuple(theirs.shape.tolist())
        assert mine.n_elements == int(theirs.n_elements)
        assert mine.n_bytes == int(theirs.n_bytes)
        assert ours.data_offset + mine.offset == int(theirs.data_offset)
    return ours


def _assert_same_summary(shards: Sequence[Path]) -> GGUFSummary:
    ours = read_summary(shards)
    reference = read_summary_with_gguf_reader(shards)
    assert ours == reference
    assert list(ours.metadata.items()) == list(reference.metadata.items())
    return ours


def _writer(path: Path, *, big_endian: bool = False) -> gguf.GGUFWriter:
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    return gguf.GGUFWriter(path, "llama", endianess=endian)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_every_value_type(path: Path, *, big_endian: bool = False) -> Path:
    """Scalars and arrays (0-1, 50, 51 and 300 elements) of every type, nested arrays, tensors."""
    writer = _writer(path, big_endian=big_endian)
    for kind, sample in _SAMPLES.items():
        name = kind.name.lower()
        writer.add_key_value(f"scalar.{name}", sample(5), kind)
        for length in (1, 2, 50, 51, 300):
            values = [sample(i) for i in range(length)]
            writer.add_key_value(f"array{length}.{name}", values, VT.ARRAY, kind)
    writer.add_key_value("scalar.float32_nan", float("nan"), VT.FLOAT32)
    writer.add_key_value("scalar.float64_inf", float("-inf"), VT.FLOAT64)
    writer.add_key_value("scalar.empty_string", "", VT.STRING)
    writer.add_array("nested.small", [[1, 2], [3]])
    writer.add_array("nested.words", [["a", "b"], ["c"]])
    writer.add_array("nested.fifty", [list(range(25)), list(range(25))])
    writer.add_array("nested.many", [list(range(30)), list(range(30))])
    writer.add_array("nested.deep", [[[1, 2], [3]], [[4]]])
    writer.add_key_value("general.file_type", int(gguf.LlamaFileType.MOSTLY_Q8_0), VT.UINT32)
    writer.add_tensor("f32", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("f16", np.ones((2, 8), dtype=np.float16))
    writer.add_tensor("i8", np.ones(5, dtype=np.int8))
    q8 = gguf.GGMLQuantizationType.Q8_0
    # 4 rows of one 34-byte Q8_0 block (32 elements)
    writer.add_tensor("q8", np.zeros((4, 34), dtype=np.uint8), raw_dtype=q8)
    _finish(writer)
    return path


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
def test_every_value_type_reads_as_gguf_reader_reads_it(tmp_path: Path, big_endian: bool) -> None:
    path = _write_every_value_type(tmp_path / "types.gguf", big_endian=big_endian)
    header = _assert_same_as_gguf_reader(path)
    assert header.big_endian is big_endian
    summary = _assert_same_summary([path])
    assert summary.quantization == "MOSTLY_Q8_0"
    assert summary.metadata["nested.small"] == ""
    assert summary.metadata["nested.fifty"] == ""
    assert "nested.many" not in summary.metadata
    assert summary.metadata["array2.bool"] == "true, false"
    assert summary.metadata["array2.string"] == "word-0-✓, word-1-✓"
    assert "array51.uint8" not in summary.metadata
    assert summary.metadata["scalar.float32_nan"] == "NaN"


def test_generated_models_read_as_gguf_reader_reads_them(tmp_path: Path) -> None:
    models = [
        write_tiny_gguf(tmp_path / "tiny.gguf"),
        write_tiny_gguf(tmp_path / "f16.gguf", file_type=gguf.LlamaFileType.MOSTLY_F16),
        write_tiny_gguf(
            tmp_path / "extra.gguf",
            chat_template=False,
            extra_kv={"x.fifty": list(range(50)), "x.many": list(range(51)), "x.flag": True},
        ),
        write_dummy_gguf(tmp_path / "dummy.gguf"),
    ]
    for path in models:
        _assert_same_as_gguf_reader(path)
        _assert_same_summary([path])
    (tmp_path / "shards").mkdir()
    shards = write_sharded_gguf(tmp_path / "shards" / "split.gguf", shards=3, n_layer=3)
    for shard in shards:
        _assert_same_as_gguf_reader(shard)
    _assert_same_summary(shards)


def test_custom_alignment_and_version_2(tmp_path: Path) -> None:
    path = tmp_path / "aligned.gguf"
    writer = _writer(path)
    writer.add_custom_alignment(256)
    writer.add_tensor("w", np.ones(7, dtype=np.float32))
    writer.add_tensor("v", np.ones(3, dtype=np.float32))
    _finish(writer)
    header = _assert_same_as_gguf_reader(path)
    assert header.alignment == 256
    assert header.data_offset % 256 == 0
    _assert_same_summary([path])
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    path.write_bytes(bytes(data))
    assert _assert_same_as_gguf_reader(path).version == 2


def test_file_type_guessed_when_absent_and_string_file_type_counts_by_first_byte(
    tmp_path: Path,
) -> None:
    guessed = tmp_path / "guessed.gguf"
    writer = _writer(guessed)
    writer.add_tensor("blk.0.w.weight", np.ones((2, 8), dtype=np.float16))
    _finish(writer)
    assert _assert_same_summary([guessed]).quantization == "MOSTLY_F16"
    text = tmp_path / "text.gguf"
    writer = _writer(text)
    writer.add_string("general.file_type", "\x07")  # GGUFReader's parts[-1][0]: byte 7
    _finish(writer)
    assert _assert_same_summary([text]).quantization == "MOSTLY_Q8_0"


def test_invalid_utf8_in_string_values_is_replaced_like_before(tmp_path: Path) -> None:
    path = tmp_path / "bytes.gguf"
    writer = _writer(path)
    writer.add_key_value("x.raw", b"ok\xff\xfe", VT.STRING)
    writer.add_key_value("x.raws", [b"\xc3", b"fine"], VT.ARRAY, VT.STRING)
    _finish(writer)
    _assert_same_as_gguf_reader(path)
    metadata = _assert_same_summary([path]).metadata
    assert metadata["x.raw"] == "ok\ufffd\ufffd"
    assert metadata["x.raws"] == "\ufffd, fine"


# Hand-built headers


def _s(text: bytes | str) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, kind: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", kind) + payload


def _array(item: int, count: int, payload: bytes = b"") -> bytes:
    return struct.pack("<IQ", item, count) + payload


def _tensor(name: str, dims: Sequence[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    packed_dims = struct.pack(f"<{len(dims)}Q", *dims)
    return (
        _s(name)
        + struct.pack("<I", len(dims))
        + packed_dims
        + struct.pack("<IQ", ggml_type, offset)
    )


def _gguf(
    kvs: Sequence[bytes] = (),
    tensors: Sequence[bytes] = (),
    *,
    version: int = 3,
    counts: tuple[int, int] | None = None,
    data: bytes = b"",
) -> bytes:
    tensor_count, kv_count = counts or (len(tensors), len(kvs))
    header = b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count)
    header += b"".join(kvs) + b"".join(tensors)
    return header + b"\0" * (-len(header) % 32) + data


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "crafted.gguf"
    path.write_bytes(data)
    return path


def test_empty_and_nested_empty_arrays_match_gguf_reader(tmp_path: Path) -> None:
    nested = _array(VT.ARRAY, 3, _array(VT.UINT8, 0) + _array(99, 0) + _array(VT.INT8, 1, b"\x05"))
    path = _write(
        tmp_path,
        _gguf(
            [
                _kv("empty", VT.ARRAY, _array(VT.INT32, 0)),
                _kv("empty.unknown_type", VT.ARRAY, _array(99, 0)),  # GGUFReader never looks
                _kv("nested.empties", VT.ARRAY, nested),
                _kv("flag", VT.BOOL, b"\x02"),  # any non-zero byte is true
            ]
        ),
    )
    header = _assert_same_as_gguf_reader(path)
    assert header.kv["nested.empties"].leaves == 1
    metadata = _assert_same_summary([path]).metadata
    assert metadata == {"empty": "", "empty.unknown_type": "", "nested.empties": "", "flag": "true"}


DAMAGED = {
    "version 1": (_gguf(version=1), "version 1 is not supported"),
    "version 4": (_gguf(version=4), "version 4 is not supported"),
    "absurd KV count": (_gguf(counts=(0, 2**60)), "do not fit"),
    "absurd tensor count": (_gguf(counts=(2**60, 0)), "do not fit"),
    "absurd key length": (_gguf([struct.pack("<Q", 2**63) + b"\0" * 8]), "does not fit"),
    "absurd string length": (_gguf([_kv("k", VT.STRING, struct.pack("<Q", 2**62))]), "fit"),
    "absurd uint8 array": (_gguf([_kv("k", VT.ARRAY, _array(VT.UINT8, 2**60))]), "fit"),
    "absurd float64 array": (_gguf([_kv("k", VT.ARRAY, _array(VT.FLOAT64, 200))]), "fit"),
    "absurd string array": (_gguf([_kv("k", VT.ARRAY, _array(VT.STRING, 2**60))]), "fit"),
    "absurd nested array": (_gguf([_kv("k", VT.ARRAY, _array(VT.ARRAY, 2**60))]), "fit"),
    "string in array too long": (
        _gguf(
            [
                _kv(
                    "k",
                    VT.ARRAY,
                    _array(VT.STRING, 60, _s("a") + struct.pack("<Q", 2**50) + b"\0" * 480),
                )
            ]
        ),
        "past the end",
    ),
    "unknown value type": (_gguf([_kv("k", 13, b"\0")]), "unknown value type 13"),
    "unknown array item type": (_gguf([_kv("k", VT.ARRAY, _array(42, 1, b"\0"))]), "item type"),
    "duplicate key": (_gguf([_kv("k", VT.UINT8, b"\1")] * 2), "duplicate key k"),
    "absurd dimension count": (
        _gguf(tensors=[_s("t") + struct.pack("<I", 2**32 - 1) + b"\0" * 40]),
        "dimensions",
    ),
    "unknown tensor type": (_gguf(tensors=[_tensor("t", [4], 200)]), "unknown type 200"),
    "duplicate tensor": (
        _gguf(tensors=[_tensor("t", [1])] * 2, data=b"\0" * 4),
        "duplicate tensor t",
    ),
    "quantized row not whole blocks": (
        _gguf(tensors=[_tensor("q", [30], int(gguf.GGMLQuantizationType.Q8_0))], data=b"\0" * 64),
        "blocks",
    ),
    "tensor data past the end": (_gguf(tensors=[_tensor("t", [8])], data=b"\0" * 31), "past"),
    "alignment not a power of two": (
        _gguf([_kv("general.alignment", VT.UINT32, struct.pack("<I", 48))]),
        "power of two",
    ),
    "alignment not uint32": (
        _gguf([_kv("general.alignment", VT.UINT64, struct.pack("<Q", 64))]),
        "not a uint32",
    ),
}
DAMAGED["key not UTF-8"] = (_gguf([_s(b"\xff") + struct.pack("<IB", VT.UINT8, 1)]), "UTF-8")
DAMAGED["nested too deep"] = (
    _gguf([_kv("k", VT.ARRAY, _array(VT.ARRAY, 1) * 300 + _array(VT.UINT8, 1, b"\0"))]),
    "deeper",
)
# GGUFReader loops forever or allocates on these; the others it refuses too.
_ONLY_OURS = {name for name in DAMAGED if name.startswith("absurd") or name == "nested too deep"}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_headers_are_invalid_input(tmp_path: Path, name: str) -> None:
    data, message = DAMAGED[name]
    path = _write(tmp_path, data)
    with pytest.raises(InvalidInput, match=message) as caught:
        read_summary([path])
    assert "is not a valid GGUF file" in str(caught.value)
    if name not in _ONLY_OURS:
        with pytest.raises(InvalidInput):
            read_summary_with_gguf_reader([path])


def test_every_truncation_of_a_header_is_invalid_input(tmp_path: Path) -> None:
    whole = write_dummy_gguf(tmp_path / "dummy.gguf").read_bytes()
    header = read_header(tmp_path / "dummy.gguf")
    header_end = header.data_offset
    data_end = header_end + max(t.offset + t.n_bytes for t in header.tensors)
    assert data_end < len(whole)  # the file ends in padding, which may be cut
    cut = tmp_path / "cut.gguf"
    for length in range(4, data_end):
        cut.write_bytes(whole[:length])
        with pytest.raises(InvalidInput, match="not a valid GGUF"):
            read_summary([cut])
        if length <= header_end:
            with pytest.raises(InvalidInput):
                read_summary_with_gguf_reader([cut])
    cut.write_bytes(whole[:data_end])
    _assert_same_summary([cut])
    cut.write_bytes(whole[:3])
    with pytest.raises(InvalidInput, match="not a GGUF"):
        read_summary([cut])


# Whole configs


def _config_bytes(
    root: Path, gguf_path: Path, monkeypatch: pytest.MonkeyPatch, slow: bool
) -> bytes:
    """Package into a new store at root (with our reader, or GGUFReader if slow): config bytes."""
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with monkeypatch.context() as patch:
        if slow:
            patch.setattr(package, "read_summary", read_summary_with_gguf_reader)
        artifact = package.build_gguf_artifact(gguf_path, created=created)
    store = ModelStore(root)
    store.write(artifact, ["ai/compare:latest"])
    manifest = json.loads(store.manifest_bytes("ai/compare:latest"))
    return store.blob_path(manifest["config"]["digest"]).read_bytes()


def test_packaged_config_is_byte_identical_with_either_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write_every_value_type(tmp_path / "types.gguf")
    ours = _config_bytes(tmp_path / "ours", source, monkeypatch, slow=False)
    reference = _config_bytes(tmp_path / "reference", source, monkeypatch, slow=True)
    assert ours == reference


@pytest.mark.default_model
def test_default_model_config_is_byte_identical_with_either_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_model_gguf: Path
) -> None:
    _assert_same_as_gguf_reader(default_model_gguf)
    ours = _config_bytes(tmp_path / "ours", default_model_gguf, monkeypatch, slow=False)
    reference = _config_bytes(tmp_path / "reference", default_model_gguf, monkeypatch, slow=True)
    assert ours == reference
    assert json.loads(ours)["config"]["parameters"] == "134.52M"
