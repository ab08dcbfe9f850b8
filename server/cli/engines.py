"""CLI verbs for the engine: ps, unload (stop), status and configure, over DMR's /engines routes."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from modelrunner.core.errors import CoreError
from modelrunner.core.references import display_name, parse_reference
from modelrunner.server.cli import output
from modelrunner.server.cli.client import ApiClient, CliError, ServerError

DEFAULT_KEEP_ALIVE = 300.0
"""DMR's idle timeout, which `ps` counts from when a runner has no keep_alive of its own."""

MODES = ("completion", "embedding", "reranking")

_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ps, unload (stop), status and configure to the `modelrunner` parser."""
    ps = commands.add_parser("ps", help="list running models", description="List running models.")
    ps.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    ps.set_defaults(handler=cmd_ps)

    unload = commands.add_parser(
        "unload",
        aliases=["stop"],
        help="unload running models from memory (a model answering a request stays)",
        description="Unload running models from memory; they stay stored.",
    )
    unload.add_argument("models", nargs="*", default=[], metavar="MODEL")
    unload.add_argument("--all", action="store_true", help="unload every idle model")
    unload.add_argument(
        "--backend", help="only this backend's runners (llama.cpp), and forget their configs"
    )
    unload.set_defaults(handler=cmd_unload, parser=unload)

    status = commands.add_parser(
        "status",
        help="check whether the server is running, and its engine",
        description="Check whether the modelrunner server is running; exit 1 when it is not.",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=cmd_status)

    configure = commands.add_parser(
        "configure",
        aliases=["config"],
        help="set a model's context size, keep-alive or llama-server flags; `configure show`",
        description="Set how a model runs, then load it in the background.\n"
        "`configure show [MODEL]` prints the stored settings.",
        epilog="example: modelrunner configure ai/smollm2 --context-size 4096 -- --temp 0.2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure.add_argument("model", metavar="MODEL", help="the model, or `show`")
    configure.add_argument(
        "runtime_flags",
        nargs="*",
        default=[],
        metavar="-- FLAG",
        help="llama-server flags after `--` (DMR's allowlist); after `show`: the model",
    )
    configure.add_argument("--context-size", type=int, help="context size in tokens (-1: model's)")
    configure.add_argument(
        "--keep-alive", help='how long it stays loaded when idle: "10m", "1h", "0", "-1" (forever)'
    )
    configure.add_argument("--mode", choices=MODES, help="the runner to configure (completion)")
    think = configure.add_mutually_exclusive_group()
    think.add_argument(
        "--think", action="store_true", default=None, help="let the model reason (unlimited)"
    )
    think.add_argument(
        "--no-think", dest="think", action="store_false", help="turn the model's reasoning off"
    )
    configure.set_defaults(handler=cmd_configure, parser=configure)


def go_duration(text: str) -> float | None:
    """Seconds in a Go duration string ("5m0s", "1h0m0s", "-1"); None when it is not one."""
    text = text.strip()
    if text in ("0", "-1"):
        return float(text)
    body = text.lstrip("+-")
    total, position = 0.0, 0
    for match in _GO_PART.finditer(body):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        return None
    return -total if text.startswith("-") else total


def _unix_time(text: str) -> float | None:
    """An RFC 3339 time as Go marshals it; None for Go's zero time or anything unreadable."""
    if not text or text.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def until(entry: Mapping[str, Any], now: float) -> str:
    """DMR's UNTIL column: when an idle runner will be unloaded."""
    if entry.get("loading"):
        return "Loading..."
    raw = entry.get("keep_alive")
    keep_alive = go_duration(raw) if isinstance(raw, str) else None
    if keep_alive is None:
        keep_alive = DEFAULT_KEEP_ALIVE
    if keep_alive < 0:
        return "Forever"
    last_used = _unix_time(str(entry.get("last_used", "")))
    if entry.get("in_use") or last_used is None:
        return f"{output.human_duration(keep_alive)} from now"
    remaining = last_used + keep_alive - now
    if remaining <= 0:
        return "Expiring"
    return f"{output.human_duration(remaining)} from now"


def _ps_name(name: str) -> str:
    if name.startswith("sha256:"):
        return output.short_id(name)
    return display_name(name)


def ps_rows(entries: Sequence[Mapping[str, Any]], now: float | None = None) -> list[list[str]]:
    """One row per runner: MODEL NAME, BACKEND, MODE, UNTIL."""
    now = time.time() if now is None else now
    return [
        [
            _ps_name(str(entry.get("model_name", ""))),
            str(entry.get("backend_name", "")),
            str(entry.get("mode", "")),
            until(entry, now),
        ]
        for entry in entries
    ]


def cmd_ps(client: ApiClient, args: argparse.Namespace) -> int:
    entries = client.json_list("GET", "/engines/ps")
    if args.json:
        print(output.pretty_json(entries))
    else:
        print(output.table(("MODEL NAME", "BACKEND", "MODE", "UNTIL"), ps_rows(entries)))
    return 0


def cmd_unload(client: ApiClient, args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.all and args.models:
        parser.error("give either MODEL names or --all, not both")
    if not args.all and not args.models:
        parser.error("give MODEL names or --all")
    for name in args.models:
        parse_reference(name)  # a malformed name never reaches the server
    body = {"all": args.all, "backend": args.backend or "", "models": args.models}
    answer = client.json_object("POST", "/engines/unload", json=body)
    count = int(answer.get("unloaded_runners", 0))
    if count:
        print(f"Unloaded {count} model(s).")
        return 0
    busy = busy_runners(client, None if args.all else args.models)
    if args.all and busy:
        print(f"No idle models to unload: {len(busy)} busy (loading or answering) stays.")
    elif args.all:
        print("No models are running.")
    elif busy:
        print(f"{', '.join(busy)} is busy (loading or answering); it stays.")
    else:
        print("No such model(s) running.")
    return 0


def busy_runners(client: ApiClient, names: Sequence[str] | None) -> list[str]:
    """Which of `names` (None: any model) have a runner loading or answering, as typed."""
    entries = client.json_list("GET", "/engines/ps")
    busy = [
        str(entry.get("model_name", ""))
        for entry in entries
        if entry.get("in_use") or entry.get("loading")
    ]
    if names is None:
        return busy
    return [name for name in names if any(_same_model(name, running) for running in busy)]


def _same_model(typed: str, running: str) -> bool:
    if typed == running:
        return True
    try:
        return parse_reference(typed).normalized == parse_reference(running).normalized
    except CoreError:
        return False


_STATUS_ORDER = ("Running", "Error", "Not Installed", "Installing")


def status_rows(backends: Mapping[str, Any]) -> list[list[str]]:
    """BACKEND, STATUS, DETAILS; running first, as DMR sorts them."""
    rows = []
    for name, text in backends.items():
        state, _, details = str(text).partition(": ")
        rows.append([name, state, details])

    def order(row: list[str]) -> tuple[int, str]:
        rank = _STATUS_ORDER.index(row[1]) if row[1] in _STATUS_ORDER else len(_STATUS_ORDER)
        return rank, row[0]

    return sorted(rows, key=order)


def cmd_status(client: ApiClient, args: argparse.Namespace) -> int:
    endpoint = f"{client.host}/engines/v1/"
    try:
        client.list_models()
        backends = client.json_object("GET", "/engines/status")
    except CliError:
        if args.json:
            print(output.pretty_json({"running": False, "backends": {}, "endpoint": endpoint}))
        raise
    if args.json:
        print(output.pretty_json({"running": True, "backends": backends, "endpoint": endpoint}))
        return 0
    print("modelrunner is running\n")
    print(output.table(("BACKEND", "STATUS", "DETAILS"), status_rows(backends)))
    return 0


def cmd_configure(client: ApiClient, args: argparse.Namespace) -> int:
    if args.model == "show":
        return show_configs(client, args.runtime_flags)
    parse_reference(args.model)  # a malformed name never reaches the server
    body: dict[str, Any] = {"model": args.model}
    if args.context_size is not None:
        body["context-size"] = args.context_size
    if args.runtime_flags:
        body["runtime-flags"] = list(args.runtime_flags)
    if args.keep_alive is not None:
        body["keep_alive"] = args.keep_alive
    if args.mode:
        body["mode"] = args.mode
    if args.think is not None:
        body["llamacpp"] = {"reasoning-budget": -1 if args.think else 0}
    client.request("POST", "/engines/_configure", json=body)
    print(f'Configured "{args.model}".')
    return 0


def show_configs(client: ApiClient, rest: Sequence[str]) -> int:
    """`configure show [MODEL]`: the stored configs, as DMR prints them (2-space JSON)."""
    if len(rest) > 1:
        raise CliError(f"configure show takes one MODEL at most, not {len(rest)}")
    params = {"model": rest[0]} if rest else None
    try:
        entries = client.json_list("GET", "/engines/_configure", params=params)
    except ServerError as error:
        if error.status == 404 and rest:
            raise CliError(f"no such model: {rest[0]}") from error
        raise
    print(json.dumps(entries, indent=2, ensure_ascii=False))
    return 0
