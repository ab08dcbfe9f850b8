"""MemoryEstimate against real GGUF headers: tiny ones, SmolLM2 and Gemma 3 (sanity bounds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.core import wheel_models
from modelrunner.core.errors import InvalidInput
from modelrunner.core.inference.memory import (
    MiB,
    estimate_for_argv,
    estimate_memory,
    runner_slots,
)
from tests.gguf_factory import write_sharded_gguf, write_tiny_gguf
from tests.real_parts import REAL_CACHE_DIR


def test_a_tiny_model_kv_cache_follows_the_formula(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", n_embd=64, n_layer=2, n_head=4, ctx=512)
    estimate = estimate_memory(gguf, context_size=256)
    # n_layer x n_ctx x (n_embd_k_gqa + n_embd_v_gqa) x 2 bytes (f16)
    assert estimate.kv_cache_bytes == 2 * 256 * (64 + 64) * 2
    assert estimate.context_size == 256
    assert 0.9 * gguf.stat().st_size < estimate.weights_bytes <= gguf.stat().st_size
    assert estimate.ram_bytes == estimate.total_bytes
    assert estimate.vram_bytes == 0
    # no context given: the trained one, as llama-server's --ctx-size 0
    assert estimate_memory(gguf).context_size == 512


def test_kv_cache_types_and_slots_come_from_the_argv(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    argv = ["llama-server", "-ngl", "999", "--ctx-size", "1024", "-ctk", "q8_0", "-np", "2"]
    estimate = estimate_for_argv(gguf, argv)
    f16 = estimate_memory(gguf, context_size=1024)
    assert estimate.context_size == 1024
    assert estimate.kv_cache_bytes < f16.kv_cache_bytes
    assert runner_slots(argv) == 2
    assert runner_slots(["llama-server"]) == 4


def test_on_a_gpu_the_layers_leave_ram(tmp_path: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    cpu = estimate_memory(gguf, context_size=256)
    gpu = estimate_memory(gguf, context_size=256, gpu=True)
    assert gpu.total_bytes == cpu.total_bytes
    assert gpu.vram_bytes > gpu.kv_cache_bytes
    assert gpu.ram_bytes == cpu.total_bytes - gpu.vram_bytes
    assert gpu.ram_bytes >= gpu.host_weights_bytes > 0  # token embeddings stay on the host
    assert estimate_for_argv(gguf, ["llama-server", "-ngl", "0"], gpu=True).vram_bytes == 0


def test_every_shard_counts(tmp_path: Path) -> None:
    shards = write_sharded_gguf(tmp_path / "split.gguf", shards=2)
    estimate = estimate_memory(shards[1])
    total = sum(shard.stat().st_size for shard in shards)
    assert 0.8 * total < estimate.weights_bytes <= total


def test_not_a_gguf_is_invalid_input(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF")
    with pytest.raises(InvalidInput):
        estimate_memory(bad)


def test_smollm2_matches_what_llama_server_allocates(default_model_gguf: Path) -> None:
    estimate = estimate_memory(default_model_gguf)
    assert estimate.context_size == 8192
    # llama-server: "llama_kv_cache: size = 180.00 MiB (8192 cells, 30 layers, 4/1 seqs)"
    assert estimate.kv_cache_bytes == 180 * MiB
    # measured RSS of llama-server with this model: 306 MiB
    assert 250 * MiB < estimate.total_bytes < 450 * MiB


def test_gemma3_sliding_window_layers_hold_only_their_window() -> None:
    if not wheel_models.is_cached(wheel_models.GEMMA3, REAL_CACHE_DIR):
        pytest.skip("Gemma 3 is not cached: run `just setup`")
    gguf = wheel_models.cached_path(wheel_models.GEMMA3, REAL_CACHE_DIR)
    estimate = estimate_memory(gguf)
    assert estimate.context_size == 32768
    # llama-server: 96 MiB for 3 global layers + 37.5 MiB for 15 sliding-window layers
    assert estimate.kv_cache_bytes == int(133.5 * MiB)
    # measured RSS of llama-server with this model: 447 MiB
    assert 350 * MiB < estimate.total_bytes < 650 * MiB
    assert estimate_memory(gguf, context_size=4096).kv_cache_bytes < estimate.kv_cache_bytes
