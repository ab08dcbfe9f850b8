"""DMR-shaped test material: a dummy.gguf look-alike and store files written as DMR writes them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np

from modelrunner.core.store import go_json

DUMMY_TENSOR_SHAPES = ((2,), (8,), (6, 6), (8, 4), (6, 4), (3,), (4, 5, 3), (2,), (1, 4, 3), (4,))
"""Tensor shapes of DMR's assets/dummy.gguf (183 F32 elements, 864 data bytes)."""


def write_dummy_gguf(path: Path) -> Path:
    """A GGUF shaped like DMR's dummy.gguf: the same 15 KVs, no general.* keys, 10 F32 tensors."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.kv_data[0].clear()  # drop general.architecture: dummy.gguf has no general.* keys
    writer.add_uint8("some.parameter.uint8", 0x12)
    writer.add_int8("some.parameter.int8", -0x13)
    writer.add_uint16("some.parameter.uint16", 0x1234)
    writer.add_int16("some.parameter.int16", -0x1235)
    writer.add_uint32("some.parameter.uint32", 0x12345678)
    writer.add_int32("some.parameter.int32", -0x12345679)
    writer.add_float32("some.parameter.float32", 0.123456789)
    writer.add_uint64("some.parameter.uint64", 0x123456789ABCDEF0)
    writer.add_int64("some.parameter.int64", -0x123456789ABCDEF1)
    writer.add_float64("some.parameter.float64", 0.123456789)
    writer.add_bool("some.parameter.bool", True)
    writer.add_string("some.parameter.string", "hello world")
    writer.add_key_value(
        "some.parameter.arr.i16", [1, 2, 3, 4], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT16
    )
    writer.add_key_value(
        "some.parameter.arr.f32",
        [3.145, 2.718, 1.414],
        gguf.GGUFValueType.ARRAY,
        gguf.GGUFValueType.FLOAT32,
    )
    writer.add_array("some.parameter.arr.str", ["hello", "world", "!"])
    for index, shape in enumerate(DUMMY_TENSOR_SHAPES):
        writer.add_tensor(f"tensor_{index}", np.ones(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_blob(root: Path, data: bytes) -> str:
    """Store bytes under blobs/sha256/<hex> as DMR does; returns the digest."""
    hex_digest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / hex_digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return "sha256:" + hex_digest


def write_dmr_model(
    root: Path,
    layers: Sequence[tuple[str, bytes]],
    inner_config: dict[str, object],
    *,
    created: str = "2025-06-15T12:00:00Z",
) -> tuple[str, list[str]]:
    """Write a model's blobs, config and manifest (no annotations, like pre-2025-11 pulls).

    Returns (model ID, index files list).
    """
    digests = [write_blob(root, data) for _, data in layers]
    config = go_json.marshal(
        {
            "config": inner_config,
            "descriptor": {"created": created},
            "rootfs": {"type": "rootfs", "diff_ids": digests},
        }
    )
    config_digest = write_blob(root, config)
    manifest = go_json.marshal(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {"mediaType": media_type, "size": len(data), "digest": digest}
                for (media_type, data), digest in zip(layers, digests, strict=True)
            ],
        }
    )
    model_hex = hashlib.sha256(manifest).hexdigest()
    manifest_path = root / "manifests" / "sha256" / model_hex
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_bytes(manifest)
    return "sha256:" + model_hex, [*digests, config_digest]
