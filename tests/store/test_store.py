"""ModelStore round trips in DMR's on-disk format: package, list, tag, inspect, remove."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from modelrunner.core.errors import (
    Conflict,
    InvalidInput,
    InvalidReference,
    ModelNotFound,
    StoreCorrupt,
)
from modelrunner.core.store.store import ModelStore


def index_of(store: ModelStore) -> dict[str, object]:
    document: dict[str, object] = json.loads((store.root / "models.json").read_bytes())
    return document


def test_fresh_store_writes_dmr_layout_and_empty_index(store: ModelStore) -> None:
    assert (store.root / "layout.json").read_bytes() == b'{\n  "version": "1.0.0"\n}'
    assert (store.root / "models.json").read_bytes() == b'{\n  "models": []\n}'
    assert store.list() == []


def test_package_list_inspect_round_trip(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "smollm2:135M-Q4_1")
    assert model.tags == ("docker.io/ai/smollm2:135M-Q4_1",)
    manifest_bytes = (store.root / "manifests" / "sha256" / model.id[7:]).read_bytes()
    assert model.id == "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    manifest = json.loads(manifest_bytes)
    layer_digest = manifest["layers"][0]["digest"]
    config_digest = manifest["config"]["digest"]
    assert index_of(store) == {
        "models": [
            {
                "id": model.id,
                "tags": ["docker.io/ai/smollm2:135M-Q4_1"],
                "files": [layer_digest, config_digest],
            }
        ]
    }
    raw_index = (store.root / "models.json").read_text()
    assert raw_index.startswith('{\n  "models": [\n    {\n      "id": "sha256:')
    blob = store.root / "blobs" / "sha256" / layer_digest[7:]
    assert blob.read_bytes() == tiny_gguf.read_bytes()
    assert blob.stat().st_ino == tiny_gguf.stat().st_ino  # hard link, no copy
    assert model.config["architecture"] == "llama"
    assert model.created > 0
    assert model.size_bytes == tiny_gguf.stat().st_size
    api = store.get("smollm2:135M-Q4_1").to_api()
    assert list(api) == ["id", "tags", "created", "config"]
    assert store.list() == [store.get(model.id)]


def test_get_accepts_every_spelling(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "smollm2")
    spellings = [
        "smollm2",
        "ai/smollm2",
        "ai/smollm2:latest",
        "docker.io/ai/smollm2:latest",
        "index.docker.io/ai/smollm2",
        model.id,
        model.id[7:],
        model.id[7:19],
        model.id[:13],
        f"ai/smollm2@{model.id}",
    ]
    for spelling in spellings:
        assert store.get(spelling).id == model.id, spelling


def test_get_errors_are_clear(store: ModelStore, tiny_gguf: Path, other_gguf: Path) -> None:
    store.package_gguf(tiny_gguf, "a")
    store.package_gguf(other_gguf, "b")
    with pytest.raises(ModelNotFound):
        store.get("missing")
    with pytest.raises(ModelNotFound):
        store.get("sha256:" + "0" * 64)
    with pytest.raises(InvalidReference):
        store.get("Bad Name!")
    ids = [model.id[7:] for model in store.list()]
    shared = next(
        (ids[0][:n] for n in range(1, 64) if ids[1].startswith(ids[0][:n]) and n >= 4), None
    )
    if shared is not None:
        with pytest.raises(InvalidInput, match="ambiguous"):
            store.get(f"sha256:{shared}")


def test_a_short_hex_name_is_a_name_not_an_id_prefix(store: ModelStore, tiny_gguf: Path) -> None:
    """`rm beef` of a model not stored must not remove another whose ID starts with beef: bare
    hex is an ID prefix only from the 12 characters `list` shows (DMR: 12 or 64)."""
    model = store.package_gguf(tiny_gguf, "ai/tiny")
    hex_id = model.id[7:]
    for name in (hex_id[:4], hex_id[:11]):
        with pytest.raises(ModelNotFound):
            store.get(name)
        with pytest.raises(ModelNotFound):
            store.remove(name)
    assert store.get(hex_id[:12]).id == model.id
    assert store.get(f"sha256:{hex_id[:4]}").id == model.id
    assert [m.id for m in store.list()] == [model.id]


def test_tag_moves_between_models(store: ModelStore, tiny_gguf: Path, other_gguf: Path) -> None:
    first = store.package_gguf(tiny_gguf, "ai/x:v1")
    second = store.package_gguf(other_gguf, "ai/x:v2")
    assert store.tag("x:v2", "ai/x:v1") == "docker.io/ai/x:v1"
    assert store.get(first.id).tags == ()
    assert store.get(second.id).tags == ("docker.io/ai/x:v2", "docker.io/ai/x:v1")
    models = index_of(store)["models"]
    assert isinstance(models, list)
    assert models[0]["tags"] is None  # DMR's nil slice: shown as <none>
    assert store.tag(first.id[7:19], "hf.co/Org/Model:Q4_K_M") == "huggingface.co/org/model:Q4_K_M"
    with pytest.raises(InvalidReference):
        store.tag("x:v1", "Not Valid")
    with pytest.raises(ModelNotFound):
        store.tag("nothing", "ai/y")


def test_untag_keeps_the_model(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "ai/x:v1")
    store.tag(model.id, "ai/x:v2")
    assert store.untag("x:v1") == "docker.io/ai/x:v1"
    assert store.get(model.id).tags == ("docker.io/ai/x:v2",)


def test_remove_a_tag_of_a_multi_tag_model_only_untags(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "ai/x:v1")
    store.tag(model.id, "ai/x:v2")
    assert store.remove("x:v1") == [{"Untagged": "docker.io/ai/x:v1"}]
    assert store.get(model.id).tags == ("docker.io/ai/x:v2",)


def test_remove_the_only_tag_deletes_model_and_files(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "ai/x:v1")
    store.bundle("x:v1")
    assert store.remove("x:v1") == [{"Untagged": "docker.io/ai/x:v1"}, {"Deleted": model.id}]
    assert (store.root / "models.json").read_bytes() == b'{\n  "models": null\n}'
    assert not (store.root / "manifests" / "sha256" / model.id[7:]).exists()
    assert not (store.root / "bundles" / "sha256" / model.id[7:]).exists()
    assert list((store.root / "blobs" / "sha256").iterdir()) == []
    assert tiny_gguf.exists()
    assert store.list() == []


def test_remove_by_id_needs_force_when_several_tags(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, "ai/x:v1")
    store.tag(model.id, "ai/x:v2")
    with pytest.raises(Conflict) as caught:
        store.remove(model.id)
    assert caught.value.status == 409
    assert store.remove(model.id[7:19], force=True) == [
        {"Untagged": "docker.io/ai/x:v1"},
        {"Untagged": "docker.io/ai/x:v2"},
        {"Deleted": model.id},
    ]


def test_remove_untagged_model_by_id(store: ModelStore, tiny_gguf: Path) -> None:
    model = store.package_gguf(tiny_gguf, None)
    assert model.tags == ()
    assert store.remove(model.id) == [{"Deleted": model.id}]
    with pytest.raises(ModelNotFound):
        store.remove(model.id)


def test_shared_blobs_stay_until_the_last_model_goes(store: ModelStore, tiny_gguf: Path) -> None:
    first = store.package_gguf(tiny_gguf, "ai/a", context_size=1024)
    second = store.package_gguf(tiny_gguf, "ai/b", context_size=2048)
    assert first.id != second.id
    layer = json.loads(store.manifest_bytes("ai/a"))["layers"][0]["digest"]
    blob = store.blob_path(layer)
    store.remove("ai/a")
    assert blob.exists()
    store.remove("ai/b")
    assert not blob.exists()


def test_failed_write_leaves_no_listed_model(store: ModelStore, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidReference):
        store.package_gguf(tiny_gguf, "UPPER/Case")
    assert store.list() == []
    assert list((store.root / "manifests").glob("**/*")) in ([], [store.root / "manifests/sha256"])


def test_corrupt_index_is_reported_and_kept(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "models.json").write_text("{not json")
    store = ModelStore(root)
    with pytest.raises(StoreCorrupt):
        store.list()
    assert (root / "models.json").read_text() == "{not json"


def test_store_root_that_is_a_file_is_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput):
        ModelStore(tmp_path / "file")


def test_store_with_other_layout_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "layout.json").write_text('{"version": "9.9.9"}')
    with pytest.raises(StoreCorrupt, match="layout version"):
        ModelStore(tmp_path)


def test_get_sees_what_another_writer_did_at_once(
    store: ModelStore, tiny_gguf: Path, other_gguf: Path
) -> None:
    """get() keeps its parse of models.json only while the file is unchanged (DMR may write)."""
    model = store.package_gguf(tiny_gguf, "tiny")
    assert store.get("tiny").id == model.id
    other = ModelStore(store.root)  # another process, e.g. `docker model`
    other.tag("tiny", "renamed:v1")
    assert store.get("renamed:v1").id == model.id
    second = other.package_gguf(other_gguf, "tiny")  # the tag moves
    assert store.get("tiny").id == second.id
    other.remove("renamed:v1")
    with pytest.raises(ModelNotFound):
        store.get("renamed:v1")


def test_a_caller_changing_a_model_config_changes_no_later_answer(
    store: ModelStore, tiny_gguf: Path
) -> None:
    store.package_gguf(tiny_gguf, "tiny")
    store.get("tiny").config["architecture"] = "changed"
    assert store.get("tiny").config["architecture"] == "llama"
