"""GGUF header extraction into DMR's config fields."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from modelrunner.core.errors import InvalidInput
from modelrunner.core.store.gguf_metadata import (
    format_parameters,
    format_size,
    read_summary,
    shard_paths,
)
from tests.gguf_factory import write_tiny_gguf
from tests.store.dmr_fixtures import write_dummy_gguf
from tests.store.test_go_json import DUMMY_GGUF_MAP


def test_dummy_gguf_look_alike_gives_dmr_asserted_values(tmp_path: Path) -> None:
    summary = read_summary([write_dummy_gguf(tmp_path / "dummy.gguf")])
    assert (tmp_path / "dummy.gguf").stat().st_size == 2016
    assert summary.architecture == "llama"
    assert summary.quantization == "Unknown"
    assert format_parameters(summary.parameters) == "183"
    assert format_size(summary.tensor_bytes) == "864B"
    assert summary.context_length is None
    assert summary.metadata == DUMMY_GGUF_MAP


def test_tiny_llama_gguf_reports_architecture_quantization_and_context(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "t.gguf", ctx=2048, file_type=gguf.LlamaFileType.MOSTLY_Q4_1)
    summary = read_summary([path])
    assert summary.architecture == "llama"
    assert summary.quantization == "MOSTLY_Q4_1"
    assert summary.context_length == 2048
    assert summary.metadata["llama.context_length"] == "2048"
    assert summary.metadata["general.name"] == "tiny-test"
    assert summary.metadata["llama.attention.layer_norm_rms_epsilon"] == "0.000010"


def test_f16_file_type_and_parameter_count(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "f16.gguf", file_type=gguf.LlamaFileType.MOSTLY_F16)
    summary = read_summary([path])
    assert summary.quantization == "MOSTLY_F16"
    # 286-token vocab x 64 x 2 + 2 layers of (4 x 64x64 + 3 x 64x128 + 2 x 64) + 64
    assert summary.parameters == 286 * 64 * 2 + 2 * (4 * 4096 + 3 * 8192 + 128) + 64
    assert format_parameters(summary.parameters) == "118.85K"


def test_arrays_longer_than_fifty_elements_are_dropped(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "a.gguf",
        extra_kv={"x.fifty": list(range(50)), "x.many": list(range(51)), "x.words": ["a", "b"]},
    )
    metadata = read_summary([path]).metadata
    assert "x.many" not in metadata
    assert "tokenizer.ggml.tokens" not in metadata
    assert metadata["x.fifty"] == ", ".join(str(n) for n in range(50))
    assert metadata["x.words"] == "a, b"
    assert metadata["tokenizer.chat_template"].startswith("{% for m in messages %}")


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (183, "183"),
        (1000, "1K"),
        (1_500, "1.50K"),
        (135_000_000, "135M"),
        (361_820_000, "361.82M"),
    ],
)
def test_parameters_are_formatted_like_dmr(count: int, text: str) -> None:
    assert format_parameters(count) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(864, "864B"), (1_040_000, "1.04MB"), (268_800_000, "256.35MiB"), (2 * 1024**3, "2GiB")],
)
def test_sizes_are_formatted_like_dmr(size: int, text: str) -> None:
    assert format_size(size) == text


def test_shards_are_discovered_from_any_shard(sharded_gguf: list[Path]) -> None:
    assert shard_paths(sharded_gguf[1]) == sharded_gguf
    summary = read_summary(sharded_gguf)
    assert summary.metadata["split.count"] == "2"
    assert (
        summary.parameters
        == read_summary([write_tiny_gguf(sharded_gguf[0].parent / "w.gguf")]).parameters
    )


def test_missing_shard_is_reported(sharded_gguf: list[Path]) -> None:
    sharded_gguf[1].unlink()
    with pytest.raises(InvalidInput, match="missing"):
        shard_paths(sharded_gguf[0])


def test_non_gguf_and_truncated_files_are_invalid_input(tmp_path: Path, tiny_gguf: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(InvalidInput, match="not a GGUF"):
        read_summary([text])
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(InvalidInput, match="not a valid GGUF"):
        read_summary([truncated])
