"""Ask llama-server's own argument parser whether flags and their values are good.

The allowlist (runtime_flags.py) says which flags may be passed; only llama-server knows what each
one takes. `llama-server FLAGS --version` parses FLAGS and exits without loading anything (about
10 ms), so a `--threads x` from `_configure` is refused up front rather than stored and then
failing every load of the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from pathlib import Path

from modelrunner.core.errors import InvalidInput

_SENTINELS = ("--version",) * 3
"""Appended after the flags: a flag missing its value(s) swallows one or two of them, and the
next still ends the run before any server starts."""

_TIMEOUT = 10.0
"""Seconds the parse may take; longer means it did not stop at --version, so nothing is said."""

_ERROR = re.compile(r'^error while handling argument "([^"]+)": (?:error: )?(.*)$')


async def check_arguments(binary: Path, flags: Sequence[str]) -> None:
    """Raise InvalidInput with llama-server's words when it refuses `flags`.

    A binary that cannot be run, or that neither accepts nor refuses in time, says nothing:
    the runner's start reports such problems itself.
    """
    if not flags:
        return
    try:
        process = await asyncio.create_subprocess_exec(
            str(binary), *flags, *_SENTINELS,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except OSError:
        return
    try:
        output, _ = await asyncio.wait_for(process.communicate(), _TIMEOUT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return
    if process.returncode != 0:
        raise InvalidInput(refusal(output.decode("utf-8", "replace"), flags))


def refusal(output: str, flags: Sequence[str]) -> str:
    """The message for flags llama-server refused: its error and the usage line of the flag."""
    lines = [line.strip() for line in output.splitlines()]
    for index, line in enumerate(lines):
        match = _ERROR.match(line)
        if match is None:
            continue
        flag, reason = match.groups()
        if reason == "stoi" or reason == "stof":
            reason = "expects a number"
        usage = next(
            (
                " ".join(candidate.split())
                for candidate in lines[index + 1 :]
                if candidate.startswith("-") and flag in candidate.replace(",", " ").split()
            ),
            "",
        )
        hint = f" (usage: {usage})" if usage else ""
        return f"invalid runtime flags: llama-server refused {flag}: {reason}{hint}"
    said = next((line for line in lines if line.lower().startswith("error")), "")
    return f"invalid runtime flags {' '.join(flags)!r}: llama-server refused them" + (
        f": {said}" if said else ""
    )
