"""`modelrunner pull`, `push`, `login` and `logout`: progress as the server streams it."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from modelrunner.core.references import parse_reference
from modelrunner.server.cli.client import ApiClient, CliError, model_path
from modelrunner.server.cli.progress_bars import ProgressDisplay


def follow(
    messages: Iterator[dict[str, Any]],
    mode: str,
    *,
    as_json: bool,
    out: TextIO | None = None,
    display: ProgressDisplay | None = None,
) -> int:
    """Show a progress stream; print its success message; an error message fails the command.

    `mode` is "pull" or "push"; `display` (with its own `out`) replaces the one made for `out`,
    for tests that set a width or a TTY.
    """
    printer = ProgressDisplay(out or sys.stdout, mode) if display is None else display
    out = printer.out
    for message in messages:
        if as_json:
            out.write(json.dumps(message) + "\n")
            out.flush()
        kind = message.get("type")
        if kind == "progress" and not as_json:
            printer.update(message)
        elif kind == "warning":
            print(f"Warning: {message.get('message', '')}", file=sys.stderr)
        elif kind == "error":
            printer.finish(success=False)
            raise CliError(str(message.get("message", "failed")).removeprefix("Error: "))
        elif kind == "success" and not as_json:
            printer.finish(success=True)
            print(message.get("message", ""), file=out)
    return 0


def pull(
    client: ApiClient, reference: str, *, as_json: bool = False, out: TextIO | None = None
) -> int:
    """POST /models/create for `reference` (sending HF_TOKEN for Hugging Face), showing progress
    on `out` (stdout by default)."""
    body: dict[str, Any] = {"from": reference}
    if ref_token := _hf_token(reference):
        body["bearer-token"] = ref_token
    messages = client.stream_progress("/models/create", body)
    return follow(messages, "pull", as_json=as_json, out=out)


def push(client: ApiClient, name: str, *, as_json: bool = False) -> int:
    """POST /models/{name}/push, showing progress."""
    path = f"/models/{model_path(name)}/push"
    return follow(client.stream_progress(path), "push", as_json=as_json)


def cmd_pull(client: ApiClient, args: argparse.Namespace) -> int:
    return pull(client, parse_reference(args.model).normalized, as_json=args.json)


def cmd_push(client: ApiClient, args: argparse.Namespace) -> int:
    return push(client, args.model, as_json=args.json)


def _hf_token(reference: str) -> str | None:
    """DMR's CLI sends HF_TOKEN as the bearer token for hf.co references."""
    import os

    if parse_reference(reference).is_huggingface:
        return os.environ.get("HF_TOKEN") or None
    return None


def cmd_login(client: ApiClient, args: argparse.Namespace) -> int:
    """Check the credentials against the registry, then save them where the server reads them."""
    import asyncio

    from modelrunner.core.distribution.registry import RegistryClient
    from modelrunner.core.settings import Settings

    try:
        username = args.username or input("Username: ")
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Password: ")
    except EOFError:
        print()  # end the prompt's line
        raise CliError(
            "no username or password given: pass -u USERNAME, and the password on stdin "
            "with --password-stdin"
        ) from None
    if not username or not password:
        raise CliError("a username and a password are needed")

    async def login() -> None:
        registry = RegistryClient(Settings.load())
        try:
            await registry.login(args.registry, username, password)
        finally:
            await registry.close()

    asyncio.run(login())
    print("Login Succeeded")
    return 0


def cmd_logout(client: ApiClient, args: argparse.Namespace) -> int:
    from modelrunner.core.distribution.credentials import CredentialStore
    from modelrunner.core.settings import Settings

    if CredentialStore(Settings.load()).remove_login(args.registry):
        print(f"Removing login credentials for {args.registry}")
        return 0
    raise CliError(f"not logged in to {args.registry}")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register pull, push, login and logout on the CLI's subcommand table."""
    pull = commands.add_parser("pull", help="pull a model from a registry or Hugging Face")
    pull.add_argument(
        "model", help="e.g. ai/smollm2, registry.example/org/m:v1, hf.co/org/repo:Q4_K_M"
    )
    pull.add_argument("--json", action="store_true", help="print DMR's progress messages as NDJSON")
    pull.set_defaults(handler=cmd_pull)
    push = commands.add_parser("push", help="push a stored model to its registry")
    push.add_argument("model")
    push.add_argument("--json", action="store_true", help="print DMR's progress messages as NDJSON")
    push.set_defaults(handler=cmd_push)
    login = commands.add_parser("login", help="save credentials for a registry (checked first)")
    login.add_argument("registry", help="e.g. registry.example:5000 or docker.io")
    login.add_argument("-u", "--username")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.set_defaults(handler=cmd_login)
    logout = commands.add_parser("logout", help="forget a registry's saved credentials")
    logout.add_argument("registry")
    logout.set_defaults(handler=cmd_logout)
