"""llama-server's own parser refuses bad runtime-flag values before they are stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrunner.core.errors import InvalidInput
from modelrunner.core.inference.argument_check import check_arguments, refusal

pytestmark = pytest.mark.llama


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--threads", "x"],
            "llama-server refused --threads: expects a number (usage: -t, --threads N number of",
        ),
        (
            ["--temp", "0.5", "--flash-attn", "maybe"],
            "llama-server refused --flash-attn: unknown value for --flash-attn: 'maybe'",
        ),
        (["-ctk", "q9_0"], "llama-server refused -ctk"),
        (["--threads"], "llama-server refused --threads"),
    ],
)
async def test_bad_values_are_refused_in_llama_servers_words(
    llama_server: Path, flags: list[str], said: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await check_arguments(llama_server, flags)
    assert said in refused.value.message


@pytest.mark.parametrize(
    "flags",
    [
        ["--threads", "2", "--temp", "0.5", "--top-k", "3", "-fa", "on"],
        ["--reasoning-budget", "-1"],
        ["--samplers"],  # takes the first sentinel as its value; the next one still stops it
        [],
    ],
)
async def test_good_flags_pass_quickly(llama_server: Path, flags: list[str]) -> None:
    await check_arguments(llama_server, flags)


async def test_a_binary_that_cannot_run_says_nothing(tmp_path: Path) -> None:
    await check_arguments(tmp_path / "missing", ["--threads", "x"])


def test_output_without_the_parsers_line_still_names_the_flags() -> None:
    assert refusal("something else went wrong\n", ["--foo"]) == (
        "invalid runtime flags '--foo': llama-server refused them"
    )
