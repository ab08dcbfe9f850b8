"""Reading a store written by DMR itself (hand-written here byte for byte as DMR writes it)."""

from __future__ import annotations

import json
from pathlib import Path

from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.store import ModelStore
from tests.store.dmr_fixtures import write_dmr_model


def test_list_get_and_bundle_a_dmr_written_store(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "layout.json").write_bytes(go_json.marshal_indent({"version": "1.0.0"}))
    smollm_id, smollm_files = write_dmr_model(
        root,
        [(media_types.GGUF, b"GGUF smollm weights"), (media_types.LICENSE, b"Apache-2.0")],
        {"format": "gguf", "quantization": "MOSTLY_Q4_1", "parameters": "135M", "size": "86MiB"},
    )
    hf_id, hf_files = write_dmr_model(
        root,
        [
            (media_types.GGUF, b"GGUF hf weights"),
            (media_types.CHAT_TEMPLATE, b"{{ messages }}"),
            (media_types.MMPROJ, b"projector"),
        ],
        {"format": "gguf", "architecture": "gemma3", "context_size": 8192},
        created="2025-09-01T10:20:30.123456789+02:00",
    )
    loaded_id, loaded_files = write_dmr_model(root, [(media_types.GGUF, b"GGUF loaded")], {})
    index = {
        "models": [
            {"id": smollm_id, "tags": ["docker.io/ai/smollm2:135M-Q4_1"], "files": smollm_files},
            {"id": hf_id, "tags": ["hf.co/bartowski/gemma:Q4_K_M"], "files": hf_files},
            {"id": loaded_id, "tags": None, "files": loaded_files},
        ]
    }
    (root / "models.json").write_bytes(go_json.marshal_indent(index))

    store = ModelStore(root)
    models = store.list()
    assert [model.id for model in models] == [smollm_id, hf_id, loaded_id]
    assert models[1].tags == ("huggingface.co/bartowski/gemma:Q4_K_M",)
    assert models[1].created == 1756714830
    assert models[2].tags == ()
    assert store.get("smollm2:135M-Q4_1").config["quantization"] == "MOSTLY_Q4_1"
    assert store.get("hf.co/bartowski/gemma:Q4_K_M").id == hf_id
    assert store.get("huggingface.co/bartowski/gemma:Q4_K_M").id == hf_id

    bundle = store.bundle("hf.co/bartowski/gemma:Q4_K_M")
    assert bundle.gguf.read_bytes() == b"GGUF hf weights"
    assert bundle.chat_template is not None
    assert bundle.chat_template.name == "template.jinja"
    assert bundle.mmproj is not None
    assert bundle.mmproj.name == "model.mmproj"
    assert (bundle.root / "config.json").read_bytes() == (
        b'{"format":"gguf","architecture":"gemma3","context_size":8192}\n'
    )

    # Untouched until we write; the first write migrates hf.co tags as DMR does.
    assert json.loads((root / "models.json").read_bytes()) == index
    store.tag("smollm2:135M-Q4_1", "ai/smollm2:latest")
    written = json.loads((root / "models.json").read_bytes())
    assert written["models"][1]["tags"] == ["huggingface.co/bartowski/gemma:Q4_K_M"]
    assert written["models"][2]["tags"] is None


def test_models_null_index_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_bytes(b'{\n  "models": null\n}')
    assert ModelStore(tmp_path).list() == []
