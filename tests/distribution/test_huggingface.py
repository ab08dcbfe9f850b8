"""HuggingFaceSource against the fake hub: real huggingface_hub, real files, the real store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import gguf
import pytest

from modelrunner.core.distribution.huggingface import HubAuthRequired, HuggingFaceSource
from modelrunner.core.distribution.progress import PullProgressEvent
from modelrunner.core.errors import ModelNotFound
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import PullFailed, PullFinished, PullProgressed
from modelrunner.core.references import parse_reference
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.core.store import media_types
from modelrunner.core.store.package import created_seconds
from modelrunner.core.store.store import ModelStore
from tests.distribution import hf_fixtures
from tests.distribution.hf_fixtures import FakeHub
from tests.gguf_factory import write_sharded_gguf, write_tiny_gguf

fake_hub = hf_fixtures.fake_hub

REPO = "acme/tiny-gguf"


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def write_quant_repo(hub: FakeHub, repo: str = REPO) -> Path:
    root = hub.repo(repo)
    quants = {
        "Q4_K_M": gguf.LlamaFileType.MOSTLY_Q4_K_M,
        "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "IQ4_XS": gguf.LlamaFileType.MOSTLY_IQ4_XS,
    }
    for seed, (label, file_type) in enumerate(quants.items()):
        write_tiny_gguf(root / f"Tiny-{label}.gguf", file_type=file_type, seed=seed)
    (root / "README.md").write_text("# tiny\n")
    return root


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dimension in shape:
            count *= dimension
        size = count * (2 if dtype in ("F16", "BF16") else 4)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(offset))


@pytest.fixture
def store(settings: Settings) -> ModelStore:
    return ModelStore(settings.models_path)


@pytest.fixture
def source(settings: Settings, store: ModelStore) -> HuggingFaceSource:
    return HuggingFaceSource(settings, store, EventBus())


def index_tags(store: ModelStore) -> list[str]:
    document = json.loads((store.root / "models.json").read_text())
    return [tag for entry in document["models"] for tag in entry["tags"] or []]


def manifest(store: ModelStore, model_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(store.manifest_bytes(model_id))
    return document


async def test_explicit_quant_is_stored_under_its_tag(
    fake_hub: FakeHub, source: HuggingFaceSource, store: ModelStore
) -> None:
    root = write_quant_repo(fake_hub)
    fake_hub.start()
    events: list[PullProgressEvent] = []
    model = await source.pull(parse_reference(f"hf.co/{REPO}:Q8_0"), on_progress=events.append)
    assert model.tags == (f"huggingface.co/{REPO}:Q8_0",)
    assert index_tags(store) == [f"huggingface.co/{REPO}:Q8_0"]
    bundle = store.bundle(model.id)
    assert bundle.gguf is not None
    assert bundle.gguf.name == "model.gguf"
    assert sha256(bundle.gguf) == sha256(root / "Tiny-Q8_0.gguf")
    assert model.config["quantization"] == "MOSTLY_Q8_0"
    assert manifest(store, model.id)["config"]["mediaType"] == media_types.CONFIG_V01
    # created is the repository's lastModified (the fake: its start time)
    assert model.created > 0
    progressed = [event for event in events if isinstance(event, PullProgressed)]
    assert progressed
    assert progressed[-1].state == "done"
    assert progressed[-1].pulled == progressed[-1].total == (root / "Tiny-Q8_0.gguf").stat().st_size
    assert progressed[-1].layer == sha256(root / "Tiny-Q8_0.gguf")
    assert isinstance(events[-1], PullFinished)
    assert events[-1].model_id == model.id
    assert not events[-1].cached
    # the staging directory is gone, the blobs stay
    assert not source.staging_root(REPO).exists()


async def test_latest_is_q4_k_m_and_a_second_pull_is_cached(
    fake_hub: FakeHub, source: HuggingFaceSource, store: ModelStore
) -> None:
    root = write_quant_repo(fake_hub)
    fake_hub.start()
    model = await source.pull(parse_reference(f"hf.co/{REPO}"))
    assert model.tags == (f"huggingface.co/{REPO}:latest",)
    bundle = store.bundle(model.id)
    assert bundle.gguf is not None
    assert sha256(bundle.gguf) == sha256(root / "Tiny-Q4_K_M.gguf")
    explicit = await source.pull(parse_reference(f"HF.co/{REPO}:q4_k_m"))
    assert explicit.tags == (f"huggingface.co/{REPO}:q4_k_m",)

    seen = len(fake_hub.requests())
    events: list[PullProgressEvent] = []
    again = await source.pull(parse_reference(f"hf.co/{REPO}:latest"), on_progress=events.append)
    assert again.id == model.id
    size = model.config["size"]
    assert events == [PullFinished(f"hf.co/{REPO}:latest", model.id, cached=True, size=size)]
    assert len(fake_hub.requests()) == seen


async def test_split_gguf(fake_hub: FakeHub, source: HuggingFaceSource, store: ModelStore) -> None:
    root = fake_hub.repo("acme/split")
    shards = write_sharded_gguf(root / "Big-Q4_K_M.gguf", shards=3)
    write_tiny_gguf(root / "Big-Q8_0.gguf")
    fake_hub.start()
    model = await source.pull(parse_reference("hf.co/acme/split:Q4_K_M"))
    layers = manifest(store, model.id)["layers"]
    assert [layer["digest"] for layer in layers] == [sha256(shard) for shard in shards]
    bundle = store.bundle(model.id)
    names = sorted(path.name for path in (bundle.root / "model").iterdir())
    assert names == [f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


async def test_mmproj_f16_and_chat_template(
    fake_hub: FakeHub, source: HuggingFaceSource, store: ModelStore
) -> None:
    root = fake_hub.repo("acme/vision")
    write_tiny_gguf(root / "vision-Q4_K_M.gguf")
    write_tiny_gguf(root / "mmproj-vision-f32.gguf", seed=1)
    write_tiny_gguf(root / "mmproj-vision-F16.gguf", seed=2)
    (root / "chat_template.jinja").write_text("{{ messages }}")
    fake_hub.start()
    model = await source.pull(parse_reference("hf.co/acme/vision"))
    layers = manifest(store, model.id)["layers"]
    assert [layer["mediaType"] for layer in layers] == [
        media_types.GGUF,
        media_types.CHAT_TEMPLATE,
        media_types.MMPROJ,
    ]
    assert layers[2]["digest"] == sha256(root / "mmproj-vision-F16.gguf")
    bundle = store.bundle(model.id)
    assert bundle.mmproj is not None
    assert bundle.chat_template is not None
    assert bundle.chat_template.read_text() == "{{ messages }}"


async def test_safetensors_repository_becomes_v02(
    fake_hub: FakeHub, source: HuggingFaceSource, store: ModelStore
) -> None:
    root = fake_hub.repo("acme/tiny-st")
    write_safetensors(root / "model-00001-of-00002.safetensors", {"a.weight": ("BF16", [4, 8])})
    write_safetensors(root / "model-00002-of-00002.safetensors", {"b.weight": ("BF16", [8, 8])})
    (root / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    (root / "model.safetensors.index.json").write_text("{}")
    (root / "tokenizer.json").write_text("{}")
    (root / "README.md").write_text("hi")
    (root / "LICENSE").write_text("not downloaded")
    fake_hub.start()
    model = await source.pull(parse_reference("hf.co/acme/tiny-st"))
    document = manifest(store, model.id)
    assert document["config"]["mediaType"] == media_types.CONFIG_V02
    paths = [layer["annotations"][media_types.ANNOTATION_FILEPATH] for layer in document["layers"]]
    assert paths == [
        "README.md",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ]
    kinds = {
        layer["annotations"][media_types.ANNOTATION_FILEPATH]: layer["mediaType"]
        for layer in document["layers"]
    }
    assert kinds["model-00001-of-00002.safetensors"] == media_types.SAFETENSORS
    assert kinds["config.json"] == media_types.MODEL_FILE
    for layer in document["layers"]:
        path = root / layer["annotations"][media_types.ANNOTATION_FILEPATH]
        assert layer["digest"] == sha256(path)
        assert set(layer["annotations"]) == {
            media_types.ANNOTATION_FILEPATH,
            media_types.ANNOTATION_FILE_METADATA,
            media_types.ANNOTATION_MEDIATYPE_UNTESTED,
        }
    assert model.config == {
        "format": "safetensors",
        "quantization": "BF16",
        "parameters": "32.00",
        "size": f"{sum(p.stat().st_size for p in root.glob('*.safetensors')):.2f}B",
        "safetensors": {"format": "pt", "tensor_count": "1"},
        "context_size": 4096,
    }
    config_blob = store.blob_path(document["config"]["digest"]).read_bytes()
    assert created_seconds(json.loads(config_blob)) == model.created


async def test_gated_repository_needs_a_token(fake_hub: FakeHub, source: HuggingFaceSource) -> None:
    write_quant_repo(fake_hub)
    fake_hub.start(token="s3cret")
    events: list[PullProgressEvent] = []
    with pytest.raises(HubAuthRequired) as raised:
        await source.pull(parse_reference(f"hf.co/{REPO}"), on_progress=events.append)
    assert raised.value.status == 401
    assert "gated/private" in raised.value.message
    assert "set HF_TOKEN" in raised.value.message
    assert events == [PullFailed(f"hf.co/{REPO}:latest", raised.value.message, 401)]

    fake_hub.start(token="s3cret", client_token="wrong")
    with pytest.raises(HubAuthRequired, match="gives no access"):
        await source.pull(parse_reference(f"hf.co/{REPO}"))

    fake_hub.start(token="s3cret", client_token="s3cret")
    model = await source.pull(parse_reference(f"hf.co/{REPO}"))
    assert model.tags == (f"huggingface.co/{REPO}:latest",)
    log = fake_hub.requests()
    hub_port = int(fake_hub.endpoint.rsplit(":", 1)[1])
    assert all(entry["auth"] for entry in log if entry["port"] == hub_port)
    cdn = [entry for entry in log if entry["port"] != hub_port]
    assert cdn
    assert not any(entry["auth"] for entry in cdn)  # the token never goes to the CDN


async def test_explicit_token_overrides_the_environment(
    fake_hub: FakeHub, source: HuggingFaceSource
) -> None:
    write_quant_repo(fake_hub)
    fake_hub.start(token="s3cret")
    model = await source.pull(parse_reference(f"hf.co/{REPO}"), token="s3cret")
    assert model.tags == (f"huggingface.co/{REPO}:latest",)


async def test_missing_repository_and_missing_quant(
    fake_hub: FakeHub, source: HuggingFaceSource, store: ModelStore
) -> None:
    write_quant_repo(fake_hub)
    fake_hub.start()
    with pytest.raises(ModelNotFound, match=r"hf\.co/acme/nope was not found"):
        await source.pull(parse_reference("hf.co/acme/nope"))
    with pytest.raises(ModelNotFound) as raised:
        await source.pull(parse_reference(f"hf.co/{REPO}:Q2_K"))
    assert raised.value.message == (
        f"hf.co/{REPO} has no GGUF file for quantization 'Q2_K'; available: IQ4_XS, Q4_K_M, Q8_0"
    )
    assert store.list() == []


async def test_concurrent_pulls_share_one_download(
    fake_hub: FakeHub, source: HuggingFaceSource
) -> None:
    write_quant_repo(fake_hub)
    fake_hub.start()
    first, second = await asyncio.gather(
        source.pull(parse_reference(f"hf.co/{REPO}")),
        source.pull(parse_reference(f"hf.co/{REPO}:latest")),
    )
    assert first == second
    gets = [e for e in fake_hub.requests() if e["method"] == "GET" and "/cdn/" in e["path"]]
    assert len(gets) == 1


@pytest.mark.llama
async def test_pulled_gguf_chats_through_llama_server(
    fake_hub: FakeHub, settings: Settings, llama_server: Path
) -> None:
    write_quant_repo(fake_hub)
    fake_hub.start()
    runner = ModelRunner(settings)
    await runner.start()
    try:
        source = HuggingFaceSource(settings, runner.store, runner.bus)
        await source.pull(parse_reference(f"hf.co/{REPO}:Q4_K_M"))
        question = [{"role": "user", "content": "hi"}]
        chat = runner.chat(f"hf.co/{REPO}:Q4_K_M", question, max_tokens=8)
        deltas = [delta async for delta in chat]
        assert deltas
        assert all(isinstance(delta, str) for delta in deltas)
    finally:
        await runner.stop()


async def test_purge_cancels_a_hugging_face_pull_so_its_model_does_not_come_back(
    fake_hub: FakeHub, settings: Settings
) -> None:
    write_tiny_gguf(  # 9 MB, sent in 1 MiB pieces: 9 s at 1 MB/s
        fake_hub.repo(REPO) / "Tiny-Q4_K_M.gguf",
        n_embd=256,
        n_ff=1024,
        file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M,
    )
    fake_hub.start(throttle=1_000_000)
    runner = ModelRunner(settings)
    await runner.start()
    try:
        events = runner.subscribe()
        pull = asyncio.ensure_future(runner.pull(f"hf.co/{REPO}"))
        while not isinstance(await asyncio.wait_for(anext(events), 10), PullProgressed):
            pass  # downloading now
        await runner.purge()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(pull, 10)
        assert await runner.list_models() == []
    finally:
        await runner.stop()
