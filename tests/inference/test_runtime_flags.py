"""The runtime-flag allowlist and its safety rules (DMR's runtime_flags tests, as a table)."""

from __future__ import annotations

import re

import pytest

from modelrunner.core.errors import InvalidInput
from modelrunner.core.inference.runtime_flags import (
    LLAMA_CPP_FLAGS,
    flag_key,
    split_raw_flags,
    validate_runtime_flags,
)

ALLOWED = [
    ["--threads", "4"],
    ["-t", "4", "--ctx-size", "8192"],
    ["--threads=4"],
    ["--temp", "0.7", "--top-k", "40", "--top-p", "0.9", "--min-p", "0.05"],
    ["-ngl", "999", "-fa", "on", "--cache-type-k", "q8_0"],
    ["--reasoning-budget", "-1"],
    ["--seed=-1"],
    ["--temp=-0.5"],
    ["--seed=0"],
    ["--jinja", "--metrics", "--embeddings", "-np", "2", "--cont-batching"],
    ["--chat-template", "chatml"],
    ["--rope-scaling", "yarn", "--yarn-orig-ctx", "4096"],
]
"""Includes the set from DMR issue #515 (threads, context, sampling, offload)."""

REJECTED = [
    (["--log-file", "x.log"], "'--log-file' is not allowed"),
    (["--mmproj", "x"], "'--mmproj' is not allowed"),
    (["--model-draft", "x"], "'--model-draft' is not allowed"),
    (["--lora", "x"], "'--lora' is not allowed"),
    (["--slot-save-path", "x"], "'--slot-save-path' is not allowed"),
    (["--chat-template-file", "x"], "'--chat-template-file' is not allowed"),
    (["--ssl-key-file", "x"], "'--ssl-key-file' is not allowed"),
    (["--api-key-file", "x"], "'--api-key-file' is not allowed"),
    (["--host", "0.0.0.0"], "'--host' is not allowed"),
    (["--log-file=x"], "'--log-file' is not allowed"),
    (["--unknown-flag"], "'--unknown-flag' is not allowed"),
    (["--grammar", "/etc/passwd"], "paths are not allowed"),
    (["--chat-template", "../x"], "paths are not allowed"),
    (["--chat-template", "./x"], "paths are not allowed"),
    (["--api-prefix", "C:\\Windows"], "paths are not allowed"),
    (["--api-prefix", "\\\\server\\share"], "paths are not allowed"),
    (["--api-prefix", "http://example.com"], "paths are not allowed"),
    (["--seed=--log-file=x"], "may not start with '-'"),
    (["--seed=-l"], "may not start with '-'"),
    (["--seed=-"], "may not start with '-'"),
    (["--seed=-."], "may not start with '-'"),
    (["--threads", "-."], "'-.' is not allowed"),
]


@pytest.mark.parametrize("flags", ALLOWED)
def test_allowed(flags: list[str]) -> None:
    assert validate_runtime_flags(flags) == tuple(flags)


@pytest.mark.parametrize(("flags", "message"), REJECTED)
def test_rejected_with_the_flag_named(flags: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)) as error:
        validate_runtime_flags(flags)
    assert error.value.status == 400


def test_an_unknown_backend_accepts_nothing() -> None:
    with pytest.raises(InvalidInput, match="not allowed for backend 'vllm'"):
        validate_runtime_flags(["--threads", "4"], backend="vllm")


def test_no_path_taking_flag_is_in_the_allowlist() -> None:
    dangerous = {"--log-file", "--mmproj", "--model-draft", "--lora", "--slot-save-path",
                 "--chat-template-file", "--ssl-key-file", "--ssl-cert-file", "--api-key-file",
                 "--model", "-m", "--host", "--port", "--path", "--grammar-file",
                 "--control-vector", "--lora-scaled", "--mmproj-url", "--model-url"}  # fmt: skip
    assert not dangerous & LLAMA_CPP_FLAGS


def test_flag_keys_and_values() -> None:
    assert flag_key("--threads=4") == "--threads"
    assert flag_key("-t") == "-t"
    assert flag_key("4") is None
    assert flag_key("-1") is None
    assert flag_key("-0.5") is None


def test_raw_flags_split_like_a_shell() -> None:
    assert split_raw_flags("--threads 4 --chat-template-kwargs '{\"a\": 1}'") == [
        "--threads", "4", "--chat-template-kwargs", '{"a": 1}',
    ]  # fmt: skip
    with pytest.raises(InvalidInput, match="cannot split"):
        split_raw_flags("--threads 'four")
