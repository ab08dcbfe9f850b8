"""select_files: DMR's Hugging Face quant, shard, mmproj and template rules, as a table."""

from __future__ import annotations

import pytest

from modelrunner.core.distribution.hf_select import (
    available_quants,
    quant_label,
    select_files,
)
from modelrunner.core.errors import ModelNotFound

BARTOWSKI = [
    "Llama-3.2-1B-Instruct-IQ3_M.gguf",
    "Llama-3.2-1B-Instruct-IQ4_XS.gguf",
    "Llama-3.2-1B-Instruct-Q3_K_L.gguf",
    "Llama-3.2-1B-Instruct-Q4_0.gguf",
    "Llama-3.2-1B-Instruct-Q4_0_4_4.gguf",
    "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
    "Llama-3.2-1B-Instruct-Q4_K_S.gguf",
    "Llama-3.2-1B-Instruct-Q8_0.gguf",
    "Llama-3.2-1B-Instruct-f16.gguf",
    "README.md",
    "config.json",
]
LOWER = ["qwen2.5-0.5b-instruct-q4_k_m.gguf", "qwen2.5-0.5b-instruct-q8_0.gguf", "LICENSE"]
DOTTED = ["model.Q2_K.gguf", "model.Q5_K_M.gguf", "model.Q8_0.gguf"]
SPLIT = [
    "Big-Q8_0/Big-Q8_0-00001-of-00002.gguf",
    "Big-Q8_0/Big-Q8_0-00002-of-00002.gguf",
    "Big-Q4_K_M-00002-of-00003.gguf",
    "Big-Q4_K_M-00001-of-00003.gguf",
    "Big-Q4_K_M-00003-of-00003.gguf",
]
UNLABELLED_SPLIT = ["a-00001-of-00002.gguf", "a-00002-of-00002.gguf", "b.gguf"]
VISION = [
    "gemma-3-4b-it-Q4_K_M.gguf",
    "gemma-3-4b-it-Q8_0.gguf",
    "mmproj-gemma-3-4b-it-bf16.gguf",
    "mmproj-gemma-3-4b-it-F16.gguf",
    "mmproj-gemma-3-4b-it-f32.gguf",
    "chat_template.jinja",
]


@pytest.mark.parametrize(
    ("files", "tag", "weights"),
    [
        # an explicit quant, case-insensitive both ways
        (BARTOWSKI, "Q8_0", ["Llama-3.2-1B-Instruct-Q8_0.gguf"]),
        (BARTOWSKI, "q8_0", ["Llama-3.2-1B-Instruct-Q8_0.gguf"]),
        (LOWER, "Q8_0", ["qwen2.5-0.5b-instruct-q8_0.gguf"]),
        (BARTOWSKI, "F16", ["Llama-3.2-1B-Instruct-f16.gguf"]),
        # a quant is a whole label: Q4_0 is not Q4_0_4_4, Q4_K is not Q4_K_M
        (BARTOWSKI, "Q4_0", ["Llama-3.2-1B-Instruct-Q4_0.gguf"]),
        (BARTOWSKI, "Q4_0_4_4", ["Llama-3.2-1B-Instruct-Q4_0_4_4.gguf"]),
        # IQ quants
        (BARTOWSKI, "IQ4_XS", ["Llama-3.2-1B-Instruct-IQ4_XS.gguf"]),
        (BARTOWSKI, "iq3_m", ["Llama-3.2-1B-Instruct-IQ3_M.gguf"]),
        # latest / main / empty -> Q4_K_M
        (BARTOWSKI, "latest", ["Llama-3.2-1B-Instruct-Q4_K_M.gguf"]),
        (BARTOWSKI, "main", ["Llama-3.2-1B-Instruct-Q4_K_M.gguf"]),
        (BARTOWSKI, "", ["Llama-3.2-1B-Instruct-Q4_K_M.gguf"]),
        (LOWER, "latest", ["qwen2.5-0.5b-instruct-q4_k_m.gguf"]),
        # no Q4_K_M: the lexically first file
        (DOTTED, "latest", ["model.Q2_K.gguf"]),
        (DOTTED, "Q5_K_M", ["model.Q5_K_M.gguf"]),
        # split GGUF: every shard in order, in the root or in a quant directory
        (SPLIT, "latest", [f"Big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]),
        (SPLIT, "Q8_0", [f"Big-Q8_0/Big-Q8_0-0000{i}-of-00002.gguf" for i in (1, 2)]),
        # fallback to the first file takes its shards
        (UNLABELLED_SPLIT, "latest", ["a-00001-of-00002.gguf", "a-00002-of-00002.gguf"]),
        # a single unlabelled GGUF is taken for any quant (nothing says otherwise)
        (["model.gguf"], "Q8_0", ["model.gguf"]),
        (["model.gguf"], "latest", ["model.gguf"]),
    ],
)
def test_gguf_weights(files: list[str], tag: str, weights: list[str]) -> None:
    selection = select_files(files, tag)
    assert selection.format == "gguf"
    assert list(selection.weights) == weights


def test_mmproj_prefers_f16_and_template_is_taken() -> None:
    selection = select_files(VISION, "latest")
    assert selection.weights == ("gemma-3-4b-it-Q4_K_M.gguf",)
    assert selection.mmproj == "mmproj-gemma-3-4b-it-F16.gguf"
    assert selection.chat_template == "chat_template.jinja"
    assert selection.files == (
        "gemma-3-4b-it-Q4_K_M.gguf",
        "mmproj-gemma-3-4b-it-F16.gguf",
        "chat_template.jinja",
    )


@pytest.mark.parametrize(
    ("projectors", "chosen"),
    [
        (["mmproj-x-f32.gguf", "mmproj-x-BF16.gguf"], "mmproj-x-BF16.gguf"),  # contains f16
        (["mmproj-x-f32.gguf", "mmproj-x-q8_0.gguf"], "mmproj-x-f32.gguf"),  # else the first
        (["x-mmproj-f16.gguf"], "x-mmproj-f16.gguf"),
    ],
)
def test_mmproj_fallbacks(projectors: list[str], chosen: str) -> None:
    assert select_files(["x-Q4_K_M.gguf", *projectors], "latest").mmproj == chosen


def test_mmproj_is_never_the_model() -> None:
    selection = select_files(["mmproj-F16.gguf", "model-Q8_0.gguf"], "latest")
    assert selection.weights == ("model-Q8_0.gguf",)


def test_tokenizer_config_json_is_not_a_template() -> None:
    selection = select_files(["m-Q4_K_M.gguf", "tokenizer_config.json"], "latest")
    assert selection.chat_template is None


def test_missing_quant_lists_the_available_ones() -> None:
    with pytest.raises(ModelNotFound) as raised:
        select_files(BARTOWSKI, "Q2_K", repository="hf.co/bartowski/llama")
    message = raised.value.message
    assert "hf.co/bartowski/llama" in message
    assert "'Q2_K'" in message
    assert "available: F16, IQ3_M, IQ4_XS, Q3_K_L, Q4_0, Q4_0_4_4, Q4_K_M, Q4_K_S, Q8_0" in message
    assert raised.value.status == 404


def test_no_weights_at_all() -> None:
    with pytest.raises(ModelNotFound, match="no GGUF or safetensors"):
        select_files(["README.md", "config.json"], "latest")


def test_safetensors_takes_weights_and_configs() -> None:
    files = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "vocab.txt",
        "chat_template.jinja",
        "README.md",
        "LICENSE",
        "pytorch_model.bin",
        ".gitattributes",
    ]
    selection = select_files(files, "latest")
    assert selection.format == "safetensors"
    assert selection.weights == (
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    )
    assert set(selection.extras) == {
        "model.safetensors.index.json",
        "config.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "vocab.txt",
        "chat_template.jinja",
        "README.md",
    }


def test_gguf_wins_over_safetensors() -> None:
    selection = select_files(["model.safetensors", "model-Q4_K_M.gguf"], "latest")
    assert selection.format == "gguf"


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("model.Q5_K_M.gguf", "Q5_K_M"),
        ("Big-Q8_0-00001-of-00002.gguf", "Q8_0"),
        ("x-IQ2_XXS.gguf", "IQ2_XXS"),
        ("x-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("x-bf16.gguf", "bf16"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model.gguf", None),
        ("qwen2.5-7b.gguf", None),
    ],
)
def test_quant_label(name: str, label: str | None) -> None:
    assert quant_label(name) == label


def test_available_quants_ignore_projectors() -> None:
    assert available_quants(VISION) == ["Q4_K_M", "Q8_0"]
