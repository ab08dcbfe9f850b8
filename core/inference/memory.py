"""MemoryEstimate: what a GGUF model needs in RAM and VRAM under llama-server, from its header only.

The parts, as llama-server allocates them (checked against its own `llama_kv_cache: size = …` and
`compute buffer size = …` lines for SmolLM2 135M and Gemma 3 270M):

- weights: the tensor bytes of every shard (and the projector); with a GPU and `-ngl 999` every
  tensor but the token embeddings goes to the GPU;
- KV cache: n_layer × cells × (n_embd_k_gqa + n_embd_v_gqa) × bytes per element (f16 by default),
  where sliding-window layers hold only `n_swa × slots + n_ubatch` cells;
- compute and output buffers: an allowance from the vocabulary, width and batch sizes;
- the process itself (binary, threads): a fixed allowance.

The numbers are estimates to decide admission, not a promise: they err on the high side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelrunner.core.store.gguf_header import GGUFHeader, KeyValue, read_header
from modelrunner.core.store.gguf_metadata import shard_paths

MiB = 1 << 20

DEFAULT_SLOTS = 4
"""llama-server's `--parallel` when auto: 4 slots sharing one unified KV cache."""
DEFAULT_UBATCH = 512
"""llama-server's `--ubatch-size`."""
PROCESS_OVERHEAD = 32 * MiB
"""llama-server's own code, threads and small buffers (measured RSS minus buffers: 15-20 MiB)."""

_KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
                  "q4_1": 20 / 32, "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}  # fmt: skip
# llama.cpp hard-codes these sliding-window patterns (every Nth layer attends globally).
_SWA_PATTERNS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}
_HOST_TENSORS = ("token_embd.weight",)
"""Tensors llama.cpp keeps in host memory even with every layer offloaded."""


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """What one llama-server for a model is expected to use, in bytes."""

    weights_bytes: int
    """Every tensor of the model (all shards) and of its projector."""
    host_weights_bytes: int
    """The part of the weights that stays in RAM when layers are offloaded (token embeddings)."""
    kv_cache_bytes: int
    compute_bytes: int
    """Compute and output buffers."""
    context_size: int
    """The context the KV cache was sized for."""
    gpu: bool = False
    """Whether the layers go to a GPU (`-ngl 999` and a GPU present)."""

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + PROCESS_OVERHEAD

    @property
    def vram_bytes(self) -> int:
        """What goes to GPU memory (0 without a GPU)."""
        if not self.gpu:
            return 0
        return (
            self.weights_bytes - self.host_weights_bytes + self.kv_cache_bytes + self.compute_bytes
        )

    @property
    def ram_bytes(self) -> int:
        """What stays in host RAM."""
        return self.total_bytes - self.vram_bytes

    def on_gpu(self, gpu: bool) -> MemoryEstimate:
        """The same model placed on a GPU (or not)."""
        return MemoryEstimate(
            self.weights_bytes,
            self.host_weights_bytes,
            self.kv_cache_bytes,
            self.compute_bytes,
            self.context_size,
            gpu,
        )


def _number(kv: Mapping[str, KeyValue], key: str) -> int | None:
    entry = kv.get(key)
    if entry is None or isinstance(entry.value, bool) or not isinstance(entry.value, int | float):
        return None
    return int(entry.value)


def _per_layer(kv: Mapping[str, KeyValue], key: str, n_layer: int) -> list[int] | None:
    """A per-layer hyper-parameter that GGUF stores as a scalar or as an array of n_layer values."""
    entry = kv.get(key)
    if entry is None:
        return None
    if isinstance(entry.value, tuple) and len(entry.value) == n_layer:
        return [int(v) if isinstance(v, int | float) else 0 for v in entry.value]
    value = _number(kv, key)
    return None if value is None else [value] * n_layer


def _swa_layers(header: GGUFHeader, arch: str, n_layer: int) -> list[bool]:
    """Which layers use a sliding window."""
    kv = header.kv
    if not _number(kv, f"{arch}.attention.sliding_window"):
        return [False] * n_layer
    pattern = kv.get(f"{arch}.attention.sliding_window_pattern")
    if pattern is not None and isinstance(pattern.value, tuple) and len(pattern.value) == n_layer:
        return [bool(v) for v in pattern.value]
    period = _number(kv, f"{arch}.attention.sliding_window_pattern") or _SWA_PATTERNS.get(arch)
    if not period:
        return [False] * n_layer  # unknown pattern: size every layer for the full context
    return [(layer + 1) % period != 0 for layer in range(n_layer)]


def kv_cache_bytes(
    header: GGUFHeader,
    context_size: int,
    *,
    slots: int = DEFAULT_SLOTS,
    ubatch: int = DEFAULT_UBATCH,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
) -> int:
    """The KV cache for `context_size` tokens (all slots share it, as in llama-server)."""
    kv = header.kv
    arch = _arch(header)
    n_layer = _number(kv, f"{arch}.block_count") or 0
    n_embd = _number(kv, f"{arch}.embedding_length") or 0
    heads = _per_layer(kv, f"{arch}.attention.head_count", n_layer) or [1] * n_layer
    heads_kv = _per_layer(kv, f"{arch}.attention.head_count_kv", n_layer) or heads
    n_swa = _number(kv, f"{arch}.attention.sliding_window") or 0
    swa = _swa_layers(header, arch, n_layer)
    k_bytes = _KV_TYPE_BYTES.get(cache_type_k, 2.0)
    v_bytes = _KV_TYPE_BYTES.get(cache_type_v, 2.0)
    total = 0.0
    for layer in range(n_layer):
        head_dim = n_embd // heads[layer] if heads[layer] else 0
        k_dim = (_number(kv, f"{arch}.attention.key_length") or head_dim) * heads_kv[layer]
        v_dim = (_number(kv, f"{arch}.attention.value_length") or head_dim) * heads_kv[layer]
        cells = context_size
        if swa[layer]:
            padded = -(-(n_swa * slots + ubatch) // 256) * 256
            cells = min(context_size, padded)
        total += cells * (k_dim * k_bytes + v_dim * v_bytes)
    return int(total)


def _arch(header: GGUFHeader) -> str:
    entry = header.kv.get("general.architecture")
    value = entry.value if entry is not None else None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else "llama"


def compute_bytes(
    header: GGUFHeader, *, slots: int = DEFAULT_SLOTS, ubatch: int = DEFAULT_UBATCH
) -> int:
    """An allowance for llama-server's compute and output buffers.

    Measured: 22.6 MiB (SmolLM2, 49k vocabulary, width 576) and 52.8 MiB (Gemma 3 270M, 262k, 640);
    this gives 27 and 82 MiB.
    """
    kv = header.kv
    arch = _arch(header)
    tokens = kv.get("tokenizer.ggml.tokens")
    n_vocab = _number(kv, f"{arch}.vocab_size") or (tokens.leaves if tokens is not None else 0)
    n_embd = _number(kv, f"{arch}.embedding_length") or 0
    n_ff = max(_per_layer(kv, f"{arch}.feed_forward_length", 1) or [0])
    output = n_vocab * 4 * slots
    return output + ubatch * 4 * (n_vocab // 8 + 8 * n_embd + 2 * n_ff)


def context_length(header: GGUFHeader) -> int:
    """The context the model was trained for (what llama-server uses when `--ctx-size` is 0)."""
    return _number(header.kv, f"{_arch(header)}.context_length") or 4096


def estimate_memory(
    gguf_path: Path,
    *,
    context_size: int | None = None,
    mmproj: Path | None = None,
    gpu: bool = False,
    slots: int = DEFAULT_SLOTS,
    cache_type_k: str = "f16",
    cache_type_v: str = "f16",
) -> MemoryEstimate:
    """Estimate what llama-server will need for a model, reading only GGUF headers (milliseconds).

    Args:
        gguf_path: The model's GGUF (any shard of a split model).
        context_size: `--ctx-size`; None, 0 or negative means the model's trained context.
        mmproj: A multimodal projector loaded beside it.
        gpu: Whether layers are offloaded to a GPU.

    Raises:
        InvalidInput: A file is not a readable GGUF.
    """
    shards = shard_paths(gguf_path)
    headers = [read_header(shard, keep_elements=1024) for shard in shards]
    first = headers[0]
    context = context_size if context_size and context_size > 0 else context_length(first)
    weights = host = 0
    for header in headers:
        for tensor in header.tensors:
            weights += tensor.n_bytes
            if tensor.name in _HOST_TENSORS:
                host += tensor.n_bytes
    if mmproj is not None:
        weights += sum(tensor.n_bytes for tensor in read_header(mmproj).tensors)
    return MemoryEstimate(
        weights_bytes=weights,
        host_weights_bytes=host,
        kv_cache_bytes=kv_cache_bytes(
            first, context, slots=slots, cache_type_k=cache_type_k, cache_type_v=cache_type_v
        ),
        compute_bytes=compute_bytes(first, slots=slots),
        context_size=context,
    ).on_gpu(gpu)


def _flag_value(argv: Sequence[str], flags: Sequence[str]) -> str | None:
    """The value of the last of `flags` in an argv (`--flag value` or `--flag=value`)."""
    found: str | None = None
    for index, arg in enumerate(argv):
        name, _, inline = arg.partition("=")
        if name in flags:
            found = inline if inline else (argv[index + 1] if index + 1 < len(argv) else None)
    return found


def estimate_for_argv(
    gguf_path: Path, argv: Sequence[str], *, mmproj: Path | None = None, gpu: bool = False
) -> MemoryEstimate:
    """Estimate for llama-server started with `argv` (its context, slots and KV cache types)."""
    context = _flag_value(argv, ("-c", "--ctx-size"))
    slots = _flag_value(argv, ("-np", "--parallel"))
    return estimate_memory(
        gguf_path,
        context_size=int(context) if context and context.lstrip("-").isdigit() else None,
        mmproj=mmproj,
        gpu=gpu and _flag_value(argv, ("-ngl", "--gpu-layers", "--n-gpu-layers")) != "0",
        slots=int(slots) if slots and slots.isdigit() and int(slots) > 0 else DEFAULT_SLOTS,
        cache_type_k=_flag_value(argv, ("-ctk", "--cache-type-k")) or "f16",
        cache_type_v=_flag_value(argv, ("-ctv", "--cache-type-v")) or "f16",
    )


def runner_slots(argv: Sequence[str]) -> int:
    """How many requests llama-server serves at once with `argv` (`--parallel`, 4 when auto)."""
    slots = _flag_value(argv, ("-np", "--parallel"))
    return int(slots) if slots and slots.isdigit() and int(slots) > 0 else DEFAULT_SLOTS
