"""The CLI's text output: DMR's table, row order, `<none>`, durations, host selection."""

from __future__ import annotations

from typing import Any

import pytest

from modelrunner.server.cli.client import CliError, model_path, resolve_host
from modelrunner.server.cli.output import human_duration, list_rows, model_table, table

NOW = 1_800_000_000.0


def model(model_id: str, *tags: str, created: float = NOW - 90) -> dict[str, Any]:
    config = {"parameters": "135M", "quantization": "Q4_1", "architecture": "llama", "size": "1MB"}
    return {"id": model_id, "tags": list(tags), "created": int(created), "config": config}


def test_table_is_borderless_and_left_aligned() -> None:
    assert table(("A", "LONGER"), [("xyz", "1"), ("", "22")]) == "A    LONGER\nxyz  1\n     22"


def test_one_row_per_tag_sorted_base_then_variant_untagged_shown() -> None:
    models = [
        model("sha256:" + "a" * 64, "docker.io/ai/zeta:latest"),
        model("sha256:" + "b" * 64, "docker.io/ai/gemma3:v1", "docker.io/ai/gemma3:latest"),
        model("sha256:" + "c" * 64),
        model("sha256:" + "d" * 64, "huggingface.co/org/m:Q4_K_M", "docker.io/myorg/x:latest"),
    ]
    names = [row[0] for row in list_rows(models, NOW)]
    assert names == ["<none>", "gemma3", "gemma3:v1", "hf.co/org/m:Q4_K_M", "myorg/x", "zeta"]


def test_row_cells() -> None:
    [row] = list_rows([model("sha256:" + "0123456789ab" + "f" * 52, "docker.io/ai/x:latest")], NOW)
    assert row == ["x", "135M", "Q4_1", "llama", "0123456789ab", "About a minute ago", "-", "1MB"]


def test_context_column_prefers_context_size_then_gguf() -> None:
    first = model("sha256:" + "a" * 64, "ai/a")
    first["config"]["context_size"] = 4096
    second = model("sha256:" + "b" * 64, "ai/b")
    second["config"]["gguf"] = {"llama.context_length": "8192"}
    text = model_table([first, second], NOW)
    assert "4096" in text
    assert "8192" in text


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (59 * 60, "59 minutes"),
        (3600, "About an hour"),
        (47 * 3600, "47 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration_matches_go_units(seconds: float, words: str) -> None:
    assert human_duration(seconds) == words


def test_host_selection() -> None:
    assert resolve_host("localhost:1234") == "http://localhost:1234"
    assert resolve_host(None, {"MODEL_RUNNER_HOST": "unix:///tmp/x.sock"}) == "unix:///tmp/x.sock"
    assert resolve_host(None, {}) == "http://localhost:12434"


def test_model_names_keep_slashes_in_paths() -> None:
    assert model_path("hf.co/org/m:Q4") == "hf.co/org/m:Q4"
    assert model_path(f"ai/x@sha256:{'a' * 64}") == f"ai/x@sha256:{'a' * 64}"


@pytest.mark.parametrize("name", ["a b?", "ai/../x", "Upper"])
def test_malformed_names_never_become_paths(name: str) -> None:
    with pytest.raises(CliError, match="invalid model reference"):
        model_path(name)
