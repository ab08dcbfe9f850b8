"""Name normalisation, stored form and display stripping, table-driven (DMR's examples first)."""

from __future__ import annotations

import pytest

from modelrunner.core.errors import InvalidReference
from modelrunner.core.references import (
    display_name,
    id_hex,
    looks_like_id,
    normalize,
    parse_reference,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "normalized", "stored", "display"),
    [
        ("gemma3", "ai/gemma3:latest", "docker.io/ai/gemma3:latest", "gemma3"),
        ("gemma3:v1", "ai/gemma3:v1", "docker.io/ai/gemma3:v1", "gemma3:v1"),
        ("myorg/model", "myorg/model:latest", "docker.io/myorg/model:latest", "myorg/model"),
        (
            "hf.co/Bartowski/Model",
            "hf.co/bartowski/model:latest",
            "huggingface.co/bartowski/model:latest",
            "hf.co/bartowski/model",
        ),
        (
            "hf.co/Org/Model:Q4_K_M",
            "hf.co/org/model:Q4_K_M",
            "huggingface.co/org/model:Q4_K_M",
            "hf.co/org/model:Q4_K_M",
        ),
        ("huggingface.co/a/b", "hf.co/a/b:latest", "huggingface.co/a/b:latest", "hf.co/a/b"),
        ("ai/smollm2:135M-Q4_1", "ai/smollm2:135M-Q4_1", "docker.io/ai/smollm2:135M-Q4_1",
         "smollm2:135M-Q4_1"),
        ("docker.io/ai/smollm2:latest", "ai/smollm2:latest", "docker.io/ai/smollm2:latest",
         "smollm2"),
        ("index.docker.io/ai/smollm2", "ai/smollm2:latest", "docker.io/ai/smollm2:latest",
         "smollm2"),
        ("model:", "ai/model:latest", "docker.io/ai/model:latest", "model"),
        ("  gemma3  ", "ai/gemma3:latest", "docker.io/ai/gemma3:latest", "gemma3"),
        ("localhost:5000/team/m:v2", "localhost:5000/team/m:v2", "localhost:5000/team/m:v2",
         "localhost:5000/team/m:v2"),
        ("registry.example.com/org/m", "registry.example.com/org/m:latest",
         "registry.example.com/org/m:latest", "registry.example.com/org/m"),
        ("org/x:latest", "org/x:latest", "docker.io/org/x:latest", "org/x"),
        (f"ai/x@{DIGEST}", f"ai/x@{DIGEST}", "docker.io/ai/x:latest", f"x@{DIGEST}"),
        ("org/a.b-c_d__e", "org/a.b-c_d__e:latest", "docker.io/org/a.b-c_d__e:latest",
         "org/a.b-c_d__e"),
        ("my-reg.example:8443/o/m", "my-reg.example:8443/o/m:latest",
         "my-reg.example:8443/o/m:latest", "my-reg.example:8443/o/m"),
    ],
)  # fmt: skip
def test_normalises_like_dmr(text: str, normalized: str, stored: str, display: str) -> None:
    reference = parse_reference(text)
    assert reference.normalized == normalized
    assert reference.stored == stored
    assert reference.display == display
    assert normalize(text) == normalized


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("my model", "spaces"),
        ("ai/../x", "'..'"),
        ("..", "'..'"),
        ("MyModel", "lower-case"),
        ("Org/model", "lower-case"),
        ("ai//x", "empty path component"),
        ("x:.bad", "tag"),
        ("x:-bad", "tag"),
        ("x:" + "a" * 129, "tag"),
        ("x@sha256:abc", "digest"),
        ("x@sha512:" + "a" * 128, "digest"),
        ("x@sha256:" + "A" * 64, "digest"),
        ("a" * 300, "at most 255"),
        ("http://registry/x", "not a URL"),
        ("-x", "not a valid name component"),
        ("a_b.c/x", "not a registry host"),
        ("x_", "not a valid name component"),
        ("bad_host_/x/y", "not a valid name component"),
    ],
)
def test_rejects_invalid_references_with_a_clear_message(text: str, says: str) -> None:
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    assert says in caught.value.message
    assert caught.value.status == 400


def test_uppercase_suggests_the_lowercase_name() -> None:
    with pytest.raises(InvalidReference, match="did you mean 'ai/mymodel'"):
        parse_reference("MyModel")


@pytest.mark.parametrize(
    ("text", "is_id", "hex_part"),
    [
        (DIGEST, True, "ab" * 32),
        ("ab" * 32, True, "ab" * 32),
        ("abababababab", True, "abababababab"),
        ("abcd", False, None),  # bare hex under 12 is a name: "beef" is ai/beef, no ID
        ("abababababa", False, None),
        ("sha256:abcd", True, "abcd"),
        ("sha256:abc", False, None),
        ("abc", False, None),
        ("gemma3", False, None),
        ("ABABABABABAB", False, None),
        ("sha512:" + "ab" * 64, False, None),
    ],
)
def test_recognises_ids_and_id_prefixes(text: str, is_id: bool, hex_part: str | None) -> None:
    assert looks_like_id(text) is is_id
    assert id_hex(text) == hex_part


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("docker.io/ai/smollm2:latest", "smollm2"),
        ("docker.io/ai/smollm2:135M-Q4_1", "smollm2:135M-Q4_1"),
        ("docker.io/myorg/x:latest", "myorg/x"),
        ("huggingface.co/bartowski/model:Q4_K_S", "hf.co/bartowski/model:Q4_K_S"),
        ("hf.co/bartowski/model:latest", "hf.co/bartowski/model"),
        ("not a tag at all", "not a tag at all"),
    ],
)
def test_display_name_of_stored_tags(stored: str, shown: str) -> None:
    assert display_name(stored) == shown


def test_with_tag_keeps_the_repository() -> None:
    assert parse_reference("hf.co/Org/M:Q8_0").with_tag("Q4_0").normalized == "hf.co/org/m:Q4_0"
