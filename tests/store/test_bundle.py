"""Runtime bundles: DMR's names, hard links, old-layout rebuild, annotation paths and traversal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.bundle import sanitize_relative_path, validate_relative_path
from modelrunner.core.store.index import Index, IndexEntry
from modelrunner.core.store.store import ModelStore
from tests.store.dmr_fixtures import write_blob


def test_single_gguf_bundle_is_hard_linked(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "ai/x")
    bundle = store.bundle("x")
    assert bundle.root == store.root / "bundles" / "sha256" / model.id[7:]
    assert bundle.gguf == bundle.root / "model" / "model.gguf"
    assert bundle.gguf.stat().st_ino == tiny_gguf.stat().st_ino
    assert bundle.mmproj is None
    assert bundle.chat_template is None
    config_text = (bundle.root / "config.json").read_bytes()
    assert config_text.endswith(b"}\n")
    assert config_text == go_json.encoder_encode(
        json.loads(
            store.blob_path(json.loads(store.manifest_bytes("x"))["config"]["digest"]).read_bytes()
        )["config"]
        | {"gguf": go_json.GoMap(model.config["gguf"])}
    )
    assert b"\\u003c" in config_text  # the chat template's "<" is HTML-escaped like Go's encoder
    assert bundle.config == model.config
    assert store.bundle(model.id) == bundle


def test_shards_mmproj_and_template_get_dmr_names(
    store: ModelStore, sharded_gguf: list[Path], tmp_path: Path
) -> None:
    mmproj = tmp_path / "vision.mmproj"
    mmproj.write_text("projector")
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}")
    store.package_gguf(sharded_gguf[0], "ai/split", mmproj=mmproj, chat_template=template)
    bundle = store.bundle("split")
    model_dir = bundle.root / "model"
    assert sorted(path.name for path in model_dir.iterdir()) == [
        "model-00001-of-00002.gguf",
        "model-00002-of-00002.gguf",
        "model.mmproj",
        "template.jinja",
    ]
    assert bundle.gguf == model_dir / "model-00001-of-00002.gguf"
    assert bundle.mmproj == model_dir / "model.mmproj"
    assert bundle.chat_template == model_dir / "template.jinja"


def test_old_layout_bundle_is_rebuilt(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "ai/x")
    old = store.root / "bundles" / "sha256" / model.id[7:]
    old.mkdir(parents=True)
    (old / "model.gguf").write_text("old layout")
    bundle = store.bundle("x")
    assert not (old / "model.gguf").exists()
    assert bundle.gguf.read_bytes() == tiny_gguf.read_bytes()


def test_bundle_with_broken_config_is_rebuilt(store: ModelStore, tiny_gguf: Path) -> None:
    store.package_gguf(tiny_gguf, "ai/x")
    bundle = store.bundle("x")
    (bundle.root / "config.json").write_text("{broken")
    assert store.bundle("x").config == bundle.config


def write_v02_model(store: ModelStore, files: list[tuple[str, str, bytes]]) -> str:
    """Write a V0.2 model whose layers carry the given filepath annotations; returns its ID."""
    descriptors: list[dict[str, object]] = []
    digests: list[str] = []
    for media_type, path, data in files:
        digest = write_blob(store.root, data)
        digests.append(digest)
        descriptors.append(
            {
                "mediaType": media_type,
                "size": len(data),
                "digest": digest,
                "annotations": {media_types.ANNOTATION_FILEPATH: path},
            }
        )
    config = go_json.marshal({"config": {"format": "gguf"}, "descriptor": {}, "rootfs": {}})
    config_digest = write_blob(store.root, config)
    manifest = go_json.marshal(
        {
            "schemaVersion": 2,
            "mediaType": media_types.OCI_MANIFEST,
            "config": {
                "mediaType": media_types.CONFIG_V02,
                "size": len(config),
                "digest": config_digest,
            },
            "layers": descriptors,
        }
    )
    model_id = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (store.root / "manifests" / "sha256").mkdir(parents=True, exist_ok=True)
    (store.root / "manifests" / "sha256" / model_id[7:]).write_bytes(manifest)
    index = Index.parse((store.root / "models.json").read_bytes())
    index.add(
        IndexEntry(id=model_id, tags=["docker.io/ai/v2:latest"], files=[*digests, config_digest])
    )
    (store.root / "models.json").write_bytes(index.dump())
    return model_id


def test_v02_model_unpacks_by_annotation_with_sanitised_paths(store: ModelStore) -> None:
    write_v02_model(
        store,
        [
            (media_types.GGUF, "weights/model-q4.gguf", b"GGUF weights"),
            (media_types.LICENSE, "../../LICENSE", b"license"),
            (media_types.CHAT_TEMPLATE, "a/../chat.jinja", b"{{ x }}"),
        ],
    )
    bundle = store.bundle("ai/v2")
    assert bundle.gguf == bundle.root / "model" / "weights" / "model-q4.gguf"
    assert (bundle.root / "model" / "LICENSE").read_bytes() == b"license"
    assert bundle.chat_template == bundle.root / "model" / "chat.jinja"


@pytest.mark.parametrize("path", ["/etc/passwd", "", ".", "a/../../x", "x\x00y", "../.."])
def test_unsafe_annotation_paths_are_refused(store: ModelStore, path: str) -> None:
    write_v02_model(store, [(media_types.GGUF, path, b"GGUF bytes")])
    with pytest.raises(InvalidInput):
        store.bundle("ai/v2")
    assert not any((store.root / "bundles" / "sha256").glob("*/model"))


@pytest.mark.parametrize(
    ("path", "expected"), [("foo/../bar", "bar"), ("a/b.gguf", "a/b.gguf"), ("./x", "x")]
)
def test_safe_paths_are_normalised(path: str, expected: str) -> None:
    assert validate_relative_path(path) == expected


def test_sanitise_strips_leading_parent_segments_only() -> None:
    assert sanitize_relative_path("../../models/x.gguf") == "models/x.gguf"
    with pytest.raises(InvalidInput):
        sanitize_relative_path("a/../../x")


def test_two_annotations_unpacking_to_one_file_collide(store: ModelStore) -> None:
    write_v02_model(
        store,
        [(media_types.GGUF, "m.gguf", b"GGUF one"), (media_types.GGUF, "../m.gguf", b"GGUF two")],
    )
    with pytest.raises(InvalidInput, match="both unpack"):
        store.bundle("ai/v2")
