"""The interactive `modelrunner run` session, as DMR's: `> ` prompt, `\"\"\"` multi-line
messages, slash commands (/set system, /set num_ctx, /?, /bye), Ctrl-C handling and a line
history kept between sessions on a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from modelrunner.server.cli.client import ApiClient, ServerError

PROMPT = "> "
CONTINUATION = ". "
BLOCK = '"""'
EXIT_COMMANDS = ("/bye", "/exit")
HISTORY_ENTRIES = 100
"""Lines kept in the history file (DMR keeps its last 100 too)."""
NO_HISTORY_VARIABLES = ("DOCKER_MODEL_NOHISTORY", "MODELRUNNER_NOHISTORY")

HELP = f"""Available commands:
  /set system <text>   Set the system message (an empty text clears it)
  /set num_ctx <n>     Set the model's context size (it reloads with it)
  /bye, /exit          Leave the chat (Ctrl-D on an empty line too)
  /?, /help            Show this help

Use {BLOCK} to begin and to end a multi-line message.
Ctrl-C stops an answer while it streams.
"""

Answer = Callable[[list[dict[str, Any]]], str]
"""Streams the assistant's answer to `messages` to the terminal and returns its text."""


class LineReader:
    """Lines from stdin after a prompt: readline editing and history on a real terminal."""

    def __init__(self, stdin: TextIO, out: TextIO, history: Path | None = None) -> None:
        self.stdin = stdin
        self.out = out
        self.history = history
        self._readline: Any = None
        if stdin is sys.stdin and stdin.isatty() and out is sys.stdout:
            with contextlib.suppress(ImportError):
                import readline

                self._readline = readline
                readline.set_history_length(HISTORY_ENTRIES)
                if history is not None:
                    with contextlib.suppress(OSError):
                        readline.read_history_file(history)

    def read(self, prompt: str) -> str | None:
        """One line without its newline; None at end of input. Ctrl-C raises KeyboardInterrupt."""
        if self._readline is not None:
            try:
                return input(prompt)
            except EOFError:
                return None
        self.out.write(prompt)
        self.out.flush()
        line = self.stdin.readline()
        return line.rstrip("\n") if line else None

    def save(self) -> None:
        """Write the history file (best effort: a read-only home only loses the history)."""
        if self._readline is None or self.history is None:
            return
        with contextlib.suppress(OSError):
            self.history.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.history)


def default_history() -> Path | None:
    """Where the history lives (the state dir), or None when a NOHISTORY variable is set."""
    if any(os.environ.get(name) for name in NO_HISTORY_VARIABLES):
        return None
    from modelrunner.core.errors import CoreError
    from modelrunner.core.settings import Settings

    try:
        return Settings.load().state_dir / "history"
    except CoreError:  # a broken config must not stop a chat; it only loses the history
        return None


class ChatSession:
    """One conversation: the history of turns lives in memory for the session."""

    def __init__(
        self,
        client: ApiClient,
        model: str,
        reader: LineReader,
        answer: Answer,
        system_prompt: str = "",
    ) -> None:
        self.client = client
        self.model = model
        self.reader = reader
        self.answer = answer
        self.system_prompt = system_prompt
        self.turns: list[dict[str, Any]] = []

    @property
    def out(self) -> TextIO:
        return self.reader.out

    def run(self) -> int:
        """Chat until EOF, /bye or /exit; returns the exit status (0)."""
        self.out.write(f"Chatting with {self.model}. Type /? for help, /bye or Ctrl-D to leave.\n")
        try:
            for text, typed in self._messages():
                if typed and text.startswith("/"):
                    if self._command(text):
                        return 0
                    continue
                self._turn(text)
        finally:
            self.reader.save()
        return 0

    def _messages(self) -> Iterator[tuple[str, bool]]:
        """Each message, and whether it was typed on one line (a slash command can only be);
        multi-line blocks come joined. Ends at end of input."""
        while True:
            try:
                line = self.reader.read(PROMPT)
            except KeyboardInterrupt:
                self.out.write("\nUse Ctrl + d or /bye to exit.\n")
                continue
            if line is None:
                self.out.write("\n")
                return
            text = line.strip()
            typed = not text.startswith(BLOCK)
            if not typed:
                block = self._block(text)
                if block is None:
                    return
                text = block.strip()
            if text:
                yield text, typed

    def _block(self, first: str) -> str | None:
        """A `\"\"\"` block from its first line on; None at end of input, "" after Ctrl-C."""
        rest = first[len(BLOCK) :]
        if rest.endswith(BLOCK):
            return rest[: -len(BLOCK)]
        lines = [rest] if rest else []
        while True:
            try:
                line = self.reader.read(CONTINUATION)
            except KeyboardInterrupt:
                self.out.write("\n")
                return ""
            if line is None:
                return None
            if line.rstrip().endswith(BLOCK):
                lines.append(line.rstrip()[: -len(BLOCK)])
                return "\n".join(lines)
            lines.append(line)

    def _turn(self, text: str) -> None:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        self.turns.append({"role": "user", "content": text})
        try:
            reply = self.answer([*messages, *self.turns])
        except KeyboardInterrupt:  # the partial answer is not kept, as DMR
            self.turns.pop()
            self.out.write("\n")
            return
        except ServerError as error:  # e.g. the context is full: say so, keep the session
            self.turns.pop()
            print(f"modelrunner: {error.message}", file=sys.stderr)
            return
        self.turns.append({"role": "assistant", "content": reply})

    def _command(self, text: str) -> bool:
        """Run a slash command; True when it ends the session."""
        words = text.split(maxsplit=2)
        name = words[0].lower()
        if name in EXIT_COMMANDS:
            return True
        if name in ("/?", "/help"):
            self.out.write(HELP)
        elif name == "/set" and len(words) >= 2 and words[1].lower() == "system":
            self.system_prompt = text.split(maxsplit=2)[2] if len(words) == 3 else ""
            said = "Set system message." if self.system_prompt else "Cleared system message."
            self.out.write(said + "\n")
        elif name == "/set" and len(words) >= 2 and words[1].lower() in ("num_ctx", "parameter"):
            self._set_context(text.split()[1:])
        else:
            self.out.write(f"Unknown command '{words[0]}'. Type /? for help\n")
        return False

    def _set_context(self, words: list[str]) -> None:
        if words[0].lower() == "parameter":  # DMR's deprecated spelling
            words = words[1:]
        if len(words) != 2 or words[0].lower() != "num_ctx" or not words[1].isdigit():
            self.out.write("Usage: /set num_ctx <n> (a whole number of tokens)\n")
            return
        size = int(words[1])
        body: Mapping[str, Any] = {"model": self.model, "context-size": size}
        try:
            self.client.request("POST", "/engines/_configure", json=body)
        except ServerError as error:
            print(f"modelrunner: {error.message}", file=sys.stderr)
            return
        self.out.write(f"Set num_ctx to {size}\n")
