"""The `modelrunner` command: DMR's model CLI (list, inspect, tag, rm, package, run) over HTTP."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modelrunner.core.errors import CoreError
from modelrunner.core.references import parse_reference
from modelrunner.server.cli import engines, housekeeping, logs, output, transfer
from modelrunner.server.cli.client import (
    ApiClient,
    CliError,
    NotRunning,
    ServerError,
    resolve_host,
)
from modelrunner.server.cli.run import run_model

_DESCRIPTION = """\
Manage and run the models of a modelrunner server (a Python Docker Model Runner).

The server is `modelrunner-tui --headless` (or the TUI itself). The CLI finds it at
MODEL_RUNNER_HOST (default http://localhost:12434; unix:///path/to.sock works too)."""

_EPILOG = """\
examples:
  modelrunner list
  modelrunner package --gguf ./model.gguf myorg/model:v1
  modelrunner run ai/smollm2 "Say hello"
  modelrunner tag ai/smollm2 mymodel:test
  modelrunner rm mymodel:test"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command."""
    parser = argparse.ArgumentParser(
        prog="modelrunner",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="server URL (overrides MODEL_RUNNER_HOST)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", aliases=["ls"], help="list stored models")
    listing.add_argument("model", nargs="?", help="only this repository, or this exact tag")
    shape = listing.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the models as JSON")
    shape.add_argument("--openai", action="store_true", help="print the OpenAI model list")
    shape.add_argument("-q", "--quiet", action="store_true", help="print model IDs only")
    listing.set_defaults(handler=cmd_list)

    inspect = commands.add_parser("inspect", help="show a model's details as JSON")
    inspect.add_argument("model")
    inspect.add_argument("--openai", action="store_true", help="the OpenAI view of the model")
    inspect.set_defaults(handler=cmd_inspect)

    show = commands.add_parser("show", help="show a model's details in words")
    show.add_argument("model", metavar="MODEL", help="a name, tag or model ID")
    show.set_defaults(handler=cmd_show)

    tag = commands.add_parser("tag", help="give a model another name")
    tag.add_argument("source", help="the model to tag (name, tag or ID)")
    tag.add_argument("target", help="the new name, e.g. myorg/model:v1")
    tag.set_defaults(handler=cmd_tag)

    remove = commands.add_parser("rm", aliases=["remove"], help="untag or delete models")
    remove.add_argument("models", nargs="+", metavar="MODEL", help="a name, tag or model ID")
    remove.add_argument(
        "-f", "--force", action="store_true", help="delete an ID even if it has several tags"
    )
    remove.set_defaults(handler=cmd_rm)

    package = commands.add_parser(
        "package",
        help="package local GGUF files, or repackage a stored model (--from), and load it into "
        "the server",
    )
    package.add_argument("target", metavar="MODEL", help="the name to store it under")
    package.add_argument("--gguf", type=Path, help="the GGUF (first shard)")
    package.add_argument(
        "--from",
        dest="from_model",
        metavar="MODEL",
        help="a stored model to repackage (with only --context-size, the server does it)",
    )
    package.add_argument("--mmproj", type=Path, help="a multimodal projector GGUF")
    package.add_argument("--chat-template", type=Path, help="a Jinja chat template file")
    package.add_argument("--context-size", type=int, help="the default context size in tokens")
    package.add_argument(
        "-l", "--license", action="append", type=Path, default=[], help="a license (repeatable)"
    )
    package.add_argument(
        "--push",
        action="store_true",
        help="then push MODEL to its registry through the server, which holds the credentials "
        "and reports the progress (DMR's CLI pushes directly)",
    )
    package.set_defaults(handler=cmd_package)

    run = commands.add_parser(
        "run",
        help="chat with a model (pulled first if it is not stored): one prompt, "
        "or interactively without one",
    )
    run.add_argument("model", metavar="MODEL")
    run.add_argument(
        "prompt",
        nargs="*",
        default=[],
        metavar="PROMPT",
        help="the prompt; stdin is appended when piped",
    )
    run.set_defaults(handler=cmd_run)

    transfer.add_commands(commands)

    engines.add_commands(commands)

    housekeeping.add_commands(commands)

    logs.add_commands(commands)

    version = commands.add_parser("version", help="show the client and server versions")
    version.set_defaults(handler=cmd_version)
    for choice in commands._choices_actions:  # `CMD --help` says what CMD does, as the list does
        command = commands.choices[choice.dest]
        if command.description is None and choice.help:
            command.description = choice.help[0].upper() + choice.help[1:] + "."
    return parser


def cmd_list(client: ApiClient, args: argparse.Namespace) -> int:
    if args.openai:
        print(output.pretty_json(client.openai_models()))
        return 0
    models = client.list_models()
    if args.model:
        parse_reference(args.model)  # a malformed filter is an error, not an empty list
        models = [model for model in models if output.matches(model, args.model)]
    if args.json:
        print(output.pretty_json(models))
    elif args.quiet:
        for model in models:
            print(output.short_id(str(model.get("id", ""))))
    else:
        print(output.model_table(models))
    return 0


def cmd_inspect(client: ApiClient, args: argparse.Namespace) -> int:
    model = client.openai_model(args.model) if args.openai else client.get_model(args.model)
    print(output.pretty_json(model))
    return 0


def cmd_show(client: ApiClient, args: argparse.Namespace) -> int:
    print(output.show_text(client.get_model(args.model)))
    return 0


def cmd_tag(client: ApiClient, args: argparse.Namespace) -> int:
    target = parse_reference(args.target)
    if target.digest is not None:
        raise CliError(f"invalid tag {args.target!r}: a target names a tag, not a digest")
    before = _existing(client, args.target)
    client.tag(args.source, target.name, target.tag)
    print(f'Model "{args.source}" tagged successfully with "{args.target}"')
    if before is not None and before.get("id") != client.get_model(args.target).get("id"):
        moved = output.short_id(str(before.get("id", "")))
        try:
            left = client.get_model(moved).get("tags") or []
        except ServerError:
            left = []  # the server deleted it with its last tag
        note = f'"{args.target}" was model {moved}'
        if not left:
            note += f", which is now untagged (`modelrunner rm {moved}` deletes it)"
        print(note, file=sys.stderr)
    return 0


def _existing(client: ApiClient, name: str) -> dict[str, Any] | None:
    """The model `name` names now, or None."""
    try:
        return client.get_model(name)
    except ServerError as error:
        if error.status == 404:
            return None
        raise


def cmd_rm(client: ApiClient, args: argparse.Namespace) -> int:
    status = 0
    for name in args.models:
        try:
            actions = client.remove(name, force=args.force)
        except ServerError as error:
            status = 1
            if error.status == 404:
                print(f"no such model: {name}", file=sys.stderr)
            else:
                print(f"cannot remove {name}: {error.message}", file=sys.stderr)
            continue
        except NotRunning:
            raise  # the same for every name: say it once
        except CliError as error:  # this name is malformed; the others may be fine
            status = 1
            print(f"modelrunner: {error.message}", file=sys.stderr)
            continue
        for action in actions:
            for verb, subject in action.items():
                print(f"{verb}: {subject}")
    return status


def cmd_package(client: ApiClient, args: argparse.Namespace) -> int:
    from modelrunner.server.cli.package import package_and_load

    return package_and_load(client, args)


def cmd_run(client: ApiClient, args: argparse.Namespace) -> int:
    system_prompt, options = chat_defaults()
    prompt = " ".join(args.prompt)
    return run_model(client, args.model, prompt, system_prompt=system_prompt, options=options)


def chat_defaults() -> tuple[str, dict[str, Any]]:
    """settings.system_prompt and settings.chat_options (config.toml, else their defaults)."""
    from modelrunner.core.settings import Settings

    try:
        settings = Settings.load()
    except CoreError as error:
        print(f"modelrunner: ignoring the config: {error.message}", file=sys.stderr)
        settings = Settings.load({})
    return settings.system_prompt, dict(settings.chat_options)


def cmd_version(client: ApiClient, args: argparse.Namespace) -> int:
    from modelrunner.server.cli.client import user_agent

    print(f"Client:\n Version: {user_agent().partition('/')[2]}\n")
    try:
        server = client.version()
    except CliError:
        server = "(not reachable)"
    print(f"Server:\n Version: {server}\n Endpoint: {client.host}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 failed, 2 bad usage)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        usage: argparse.ArgumentParser = getattr(args, "parser", parser)
        if args.command in ("configure", "config") and extras[0] == "--":
            args.runtime_flags += extras[1:]  # `configure MODEL --context-size N -- FLAGS`
        elif args.command in ("configure", "config"):
            usage.error(
                f"unrecognized arguments: {' '.join(extras)} "
                "(llama-server flags go after `--`: configure MODEL -- --temp 0.2)"
            )
        else:
            usage.error(f"unrecognized arguments: {' '.join(extras)}")
    handler: Callable[[ApiClient, argparse.Namespace], int] = args.handler
    try:
        with ApiClient(resolve_host(args.host)) as client:
            return handler(client, args)
    except CliError as error:
        print(f"modelrunner: {error.message}", file=sys.stderr)
    except CoreError as error:
        print(f"modelrunner: {error.message}", file=sys.stderr)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()  # `modelrunner list | head`: nothing left to say
    except json.JSONDecodeError as error:
        print(f"modelrunner: the server sent something that is not JSON: {error}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
