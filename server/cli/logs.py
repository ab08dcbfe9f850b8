"""The `logs` verb: the server's service and engine logs (GET /logs), merged by time, to stdout."""

from __future__ import annotations

import argparse
import sys

from modelrunner.server.cli.client import ApiClient


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add logs to the `modelrunner` parser."""
    logs = commands.add_parser(
        "logs",
        help="print the server's logs (its own and its llama-servers', merged by time)",
    )
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)"
    )
    logs.add_argument(
        "--no-engines", action="store_true", help="leave out the llama-server (engine) log"
    )
    logs.set_defaults(handler=cmd_logs)


def cmd_logs(client: ApiClient, args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for chunk in client.stream_logs(follow=args.follow, engines=not args.no_engines):
        out.write(chunk)
        out.flush()
    return 0
