"""Go encoding/json emulation, checked against DMR's §1.8 example artifact."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

from modelrunner.core.store import go_json
from modelrunner.core.store.go_json import GoMap

GGUF_DIGEST = "sha256:c7790a0a70161f1bfd441cf157313e9efb8fcd1f0831193101def035ead23b32"
LICENSE_DIGEST = "sha256:d0ce8fae4da6de6e5a4b85ebee156ac8f3ab6d8407caf4493968d34e9bc3939e"
CONFIG_DIGEST = "sha256:8f0b941b467e28caabea043a52f401d149f7fae4247ffd9bc43083a0af52a6ac"
MODEL_ID = "sha256:464b91c4bfc0619b96917cb0118589400b22d6c57d84f8c9116268254d01f21f"

DUMMY_GGUF_MAP = {
    "some.parameter.uint8": "18",
    "some.parameter.int8": "-19",
    "some.parameter.uint16": "4660",
    "some.parameter.int16": "-4661",
    "some.parameter.uint32": "305419896",
    "some.parameter.int32": "-305419897",
    "some.parameter.float32": "0.123457",
    "some.parameter.uint64": "1311768467463790320",
    "some.parameter.int64": "-1311768467463790321",
    "some.parameter.float64": "0.123457",
    "some.parameter.bool": "true",
    "some.parameter.string": "hello world",
    "some.parameter.arr.i16": "1, 2, 3, 4",
    "some.parameter.arr.f32": "3.145000, 2.718000, 1.414000",
    "some.parameter.arr.str": "hello, world, !",
}
"""dummy.gguf's 15 KVs as DMR stringifies them (reference §1.8 / §7.1)."""


def example_config_bytes() -> bytes:
    return go_json.marshal(
        {
            "config": {
                "format": "gguf",
                "quantization": "Unknown",
                "parameters": "183",
                "architecture": "llama",
                "size": "864B",
                "gguf": GoMap(DUMMY_GGUF_MAP),
            },
            "descriptor": {"created": "2025-06-15T12:00:00Z"},
            "rootfs": {"type": "rootfs", "diff_ids": [GGUF_DIGEST, LICENSE_DIGEST]},
        }
    )


def example_layer(media_type: str, size: int, digest: str, name: str) -> dict[str, object]:
    metadata = {
        "name": name,
        "mode": 420,
        "uid": 0,
        "gid": 0,
        "size": size,
        "mtime": "2025-07-22T09:22:00Z",
        "typeflag": 0,
    }
    return {
        "mediaType": media_type,
        "size": size,
        "digest": digest,
        "annotations": GoMap(
            {
                "org.cncf.model.filepath": name,
                "org.cncf.model.file.metadata+json": go_json.marshal(metadata).decode(),
                "org.cncf.model.file.mediatype.untested": "false",
            }
        ),
    }


def test_reference_example_config_is_912_bytes_with_the_published_digest() -> None:
    config = example_config_bytes()
    assert len(config) == 912
    assert "sha256:" + hashlib.sha256(config).hexdigest() == CONFIG_DIGEST


def test_reference_example_manifest_gives_the_published_model_id() -> None:
    config = example_config_bytes()
    manifest = go_json.marshal(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.docker.ai.model.config.v0.1+json",
                "size": len(config),
                "digest": CONFIG_DIGEST,
            },
            "layers": [
                example_layer("application/vnd.docker.ai.gguf.v3", 2016, GGUF_DIGEST, "dummy.gguf"),
                example_layer(
                    "application/vnd.docker.ai.license", 13, LICENSE_DIGEST, "license.txt"
                ),
            ],
        }
    )
    assert len(manifest) == 1073
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == MODEL_ID


def test_strings_are_html_escaped_like_go() -> None:
    encoded = go_json.marshal("<a href='x'>&\u2028\u2029\x01\b\f\n\"\\é")
    assert encoded == (
        b'"\\u003ca href=\'x\'\\u003e\\u0026\\u2028\\u2029\\u0001\\b\\f\\n\\"\\\\\xc3\xa9"'
    )


def test_struct_order_is_kept_and_map_keys_are_sorted() -> None:
    value = {"z": 1, "a": GoMap({"b": True, "a": None}), "m": [1.5, 2.0, 1e21, 1e-7]}
    assert go_json.marshal(value) == b'{"z":1,"a":{"a":null,"b":true},"m":[1.5,2,1e+21,1e-7]}'


def test_marshal_indent_matches_go_layout_json_and_empty_containers() -> None:
    assert go_json.marshal_indent({"version": "1.0.0"}) == b'{\n  "version": "1.0.0"\n}'
    assert go_json.marshal_indent({"models": []}) == b'{\n  "models": []\n}'
    nested = go_json.marshal_indent({"models": [{"id": "x", "tags": None, "files": ["a"]}]})
    assert nested == (
        b'{\n  "models": [\n    {\n      "id": "x",\n      "tags": null,\n'
        b'      "files": [\n        "a"\n      ]\n    }\n  ]\n}'
    )


def test_encoder_adds_a_trailing_newline() -> None:
    assert go_json.encoder_encode({"format": "gguf"}) == b'{"format":"gguf"}\n'


def test_rfc3339_nano_trims_fraction_and_uses_z_for_utc() -> None:
    moment = datetime(2025, 6, 15, 12, 0, 0, tzinfo=UTC)
    assert go_json.rfc3339_nano(moment) == "2025-06-15T12:00:00Z"
    assert go_json.rfc3339_nano(moment, nanosecond=120_000_000) == "2025-06-15T12:00:00.12Z"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert go_json.rfc3339_nano(plus_two, nanosecond=5) == "2025-06-15T14:00:00.000000005+02:00"


def test_parse_rfc3339_reads_nanoseconds_and_offsets() -> None:
    parsed = go_json.parse_rfc3339("2025-06-15T14:00:00.123456789+02:00")
    assert parsed == datetime(2025, 6, 15, 12, 0, 0, 123456, tzinfo=UTC)
