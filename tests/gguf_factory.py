"""Tiny random-weight llama GGUF files that llama-server can load, for tests across the project."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""The chat template written into tiny GGUFs (a minimal role-tagged format)."""


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(6)
    for index, char in enumerate("▁abcdefghijklmnopqrstuvwxyz"):
        tokens.append(char)
        scores.append(-float(index))
        types.append(1)
    return tokens, scores, types


def _populate(
    writer: gguf.GGUFWriter,
    *,
    n_embd: int,
    n_layer: int,
    n_head: int,
    n_ff: int,
    ctx: int,
    chat_template: bool,
    name: str,
    file_type: gguf.LlamaFileType,
    extra_kv: Mapping[str, object],
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    dtype: npt.DTypeLike = np.float16 if file_type == gguf.LlamaFileType.MOSTLY_F16 else np.float32
    writer.add_name(name)
    writer.add_context_length(ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_file_type(int(file_type))
    tokens, scores, types = _vocabulary()
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    if chat_template:
        writer.add_chat_template(CHAT_TEMPLATE)
    for key, value in extra_kv.items():
        _add_value(writer, key, value)

    def weights(tensor_name: str, shape: tuple[int, ...]) -> None:
        writer.add_tensor(tensor_name, (rng.standard_normal(shape) * 0.02).astype(dtype))

    def ones(tensor_name: str, length: int) -> None:
        writer.add_tensor(tensor_name, np.ones(length, dtype=np.float32))

    vocab = len(tokens)
    weights("token_embd.weight", (vocab, n_embd))
    ones("output_norm.weight", n_embd)
    weights("output.weight", (vocab, n_embd))
    for layer in range(n_layer):
        ones(f"blk.{layer}.attn_norm.weight", n_embd)
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            weights(f"blk.{layer}.{part}.weight", (n_embd, n_embd))
        ones(f"blk.{layer}.ffn_norm.weight", n_embd)
        weights(f"blk.{layer}.ffn_gate.weight", (n_ff, n_embd))
        weights(f"blk.{layer}.ffn_up.weight", (n_ff, n_embd))
        weights(f"blk.{layer}.ffn_down.weight", (n_embd, n_ff))


def _add_value(writer: gguf.GGUFWriter, key: str, value: object) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_int32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list | tuple):
        writer.add_array(key, list(value))
    else:
        raise TypeError(f"unsupported GGUF value for {key}: {value!r}")


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_tiny_gguf(
    path: Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    ctx: int = 512,
    chat_template: bool = True,
    name: str = "tiny-test",
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.ALL_F32,
    extra_kv: Mapping[str, object] | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny llama GGUF (about 480 KB at the defaults) that llama-server can load.

    Tensors are F16 for `MOSTLY_F16` and F32 otherwise; other file types are only recorded in
    `general.file_type`. `extra_kv` adds keys (int -> int32, float -> float32, list -> array).
    """
    writer = gguf.GGUFWriter(path, "llama")
    _populate(
        writer,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        n_ff=n_ff,
        ctx=ctx,
        chat_template=chat_template,
        name=name,
        file_type=file_type,
        extra_kv=extra_kv or {},
        seed=seed,
    )
    _finish(writer)
    return path


def write_sharded_gguf(
    path: Path,
    *,
    shards: int = 2,
    n_layer: int = 2,
    ctx: int = 512,
    name: str = "tiny-test",
    seed: int = 0,
) -> list[Path]:
    """Write a tiny llama GGUF split into `<stem>-0000i-of-0000N.gguf` shards, returned in order."""
    tensor_count = 3 + 9 * n_layer
    per_shard = -(-tensor_count // shards)
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=per_shard)
    _populate(
        writer,
        n_embd=64,
        n_layer=n_layer,
        n_head=4,
        n_ff=128,
        ctx=ctx,
        chat_template=True,
        name=name,
        file_type=gguf.LlamaFileType.ALL_F32,
        extra_kv={},
        seed=seed,
    )
    _finish(writer)
    written = sorted(path.parent.glob(f"{path.stem}-*-of-*.gguf"))
    if len(written) != shards:
        raise RuntimeError(f"expected {shards} shards, gguf wrote {len(written)}")
    return written
