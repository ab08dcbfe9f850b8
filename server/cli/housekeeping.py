"""CLI verbs for store housekeeping: df, prune, purge, fsck, updates (over the HTTP API)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from modelrunner.server.cli import output
from modelrunner.server.cli.client import ApiClient, CliError

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def decimal_size(size: float) -> str:
    """go-units CustomSize("%.2f %s", size, 1000, ...), as DMR's df prints sizes: "1.50 MB"."""
    unit = 0
    while size >= 1000 and unit < len(_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.2f} {_UNITS[unit]}"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add df, prune, purge, fsck and updates to the `modelrunner` parser."""
    df = commands.add_parser("df", help="show disk usage of models and the inference engine")
    df.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    df.set_defaults(handler=cmd_df)

    prune = commands.add_parser(
        "prune", help="remove unreferenced blobs, stale partial downloads and leftovers"
    )
    prune.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    prune.add_argument(
        "--all-partials",
        action="store_true",
        help="remove every partial download not touched in the last minute (default: 7 days old)",
    )
    prune.add_argument("--json", action="store_true", help="print the report as JSON")
    prune.set_defaults(handler=cmd_prune)

    purge = commands.add_parser("purge", help="remove all models (asks first)")
    purge.add_argument(
        "-f", "--force", action="store_true", help="remove them without asking for confirmation"
    )
    purge.set_defaults(handler=cmd_purge)

    fsck = commands.add_parser("fsck", help="re-hash every blob and manifest; report problems")
    fsck.add_argument("--repair", action="store_true", help="repair what can be repaired")
    fsck.add_argument("--json", action="store_true", help="print the report as JSON")
    fsck.set_defaults(handler=cmd_fsck)

    updates = commands.add_parser("updates", help="check the registries for newer models")
    shape = updates.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the statuses as JSON")
    shape.add_argument(
        "--pull", action="store_true", help="then pull every tag whose registry has a newer model"
    )
    updates.set_defaults(handler=cmd_updates)


def df_text(usage: Mapping[str, Any]) -> str:
    """DMR's TYPE SIZE table, then how the models' bytes divide (each file counted once)."""
    rows = [["Models", decimal_size(int(usage.get("models_disk_usage", 0)))]]
    engine = int(usage.get("default_backend_disk_usage", 0))
    if engine:
        rows.append(["Inference engine", decimal_size(engine)])
    lines = [output.table(("TYPE", "SIZE"), rows)]
    models: Sequence[Mapping[str, Any]] = usage.get("models") or []
    if models:
        model_rows = [
            [
                _name(model),
                output.short_id(str(model.get("id", ""))),
                decimal_size(int(model.get("size", 0))),
                decimal_size(int(model.get("unique", 0))),
                decimal_size(int(model.get("shared", 0))),
            ]
            for model in models
        ]
        headers = ("MODEL", "MODEL ID", "SIZE", "UNIQUE", "SHARED")
        lines += ["", output.table(headers, model_rows)]
    breakdown = [
        ("Shared by several models", "models_shared"),
        ("Partial downloads", "partials"),
        ("Unreferenced blobs", "unreferenced"),
        ("Other (index, orphans, temp files)", "other"),
    ]
    lines.append("")
    lines += [f"{label}: {decimal_size(int(usage.get(key, 0)))}" for label, key in breakdown]
    apparent = int(usage.get("apparent_disk_usage", 0))
    if apparent > int(usage.get("models_disk_usage", 0)):
        lines.append(
            f"(Counting hard links twice, as DMR does, would say {decimal_size(apparent)}.)"
        )
    return "\n".join(lines)


def _name(model: Mapping[str, Any]) -> str:
    tags = model.get("tags") or []
    return str(tags[0]) if tags else output.UNTAGGED


def cmd_df(client: ApiClient, args: argparse.Namespace) -> int:
    usage = client.json_object("GET", "/engines/df")
    print(output.pretty_json(usage) if args.json else df_text(usage))
    return 0


def prune_text(report: Mapping[str, Any]) -> str:
    """The list of what goes, then "Would free X" (dry run) or "Freed X"."""
    items: Sequence[Mapping[str, Any]] = report.get("items") or []
    rows = [
        [str(item.get("kind", "")), decimal_size(int(item.get("size", 0))), str(item.get("path"))]
        for item in items
    ]
    lines = [output.table(("KIND", "SIZE", "PATH"), rows)] if rows else ["Nothing to prune."]
    lines += [f"error: {error}" for error in report.get("errors") or []]
    verb = "Would free" if report.get("dry_run") else "Freed"
    lines.append(f"{verb} {decimal_size(int(report.get('freed', 0)))}")
    return "\n".join(lines)


def cmd_prune(client: ApiClient, args: argparse.Namespace) -> int:
    params = {
        "dry_run": "true" if args.dry_run else "false",
        "all_partials": "true" if args.all_partials else "false",
    }
    report = client.json_object("POST", "/models/prune", params=params)
    print(output.pretty_json(report) if args.json else prune_text(report))
    return 1 if report.get("errors") else 0


def cmd_purge(client: ApiClient, args: argparse.Namespace) -> int:
    """As `docker model purge`: confirm unless --force, unload every model, wipe the store."""
    if not args.force:
        print("WARNING! This will remove the entire models directory.", file=sys.stderr)
        print("Are you sure you want to continue? [y/N] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            print(file=sys.stderr)
            raise CliError("no answer (stdin is closed): `purge --force` purges without asking")
        if answer.strip() not in ("y", "Y"):
            print("Operation cancelled.", file=sys.stderr)
            return 0
    client.json_object("POST", "/engines/unload", json={"all": True})
    client.purge()
    return 0


def fsck_text(report: Mapping[str, Any]) -> str:
    """One line per problem (and what repair did), then a summary."""
    problems: Sequence[Mapping[str, Any]] = report.get("problems") or []
    lines = []
    for problem in problems:
        line = f"{problem.get('kind')}: {problem.get('subject')}: {problem.get('detail')}"
        if problem.get("repaired"):
            line += f" (repaired: {problem['repaired']})"
        lines.append(line)
    checked = (
        f"checked {_count(report.get('blobs_checked', 0), 'blob')} "
        f"({decimal_size(int(report.get('bytes_checked', 0)))}) and "
        f"{_count(report.get('manifests_checked', 0), 'model')}"
    )
    if not problems:
        lines.append(f"No problems: {checked}.")
    else:
        hint = "" if report.get("repair") else "; run `modelrunner fsck --repair` to repair"
        lines.append(f"{_count(len(problems), 'problem')}: {checked}{hint}.")
    return "\n".join(lines)


def _count(number: object, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def cmd_fsck(client: ApiClient, args: argparse.Namespace) -> int:
    report = client.json_object("POST", "/models/fsck", params={"repair": str(args.repair).lower()})
    print(output.pretty_json(report) if args.json else fsck_text(report))
    return 0 if report.get("ok") or args.repair else 1


def cmd_updates(client: ApiClient, args: argparse.Namespace) -> int:
    statuses = client.json_list("GET", "/models/updates")
    if args.json:
        print(output.pretty_json(statuses))
        return 0
    rows = [
        [str(s.get("tag")), output.short_id(str(s.get("model_id", ""))), str(s.get("status"))]
        for s in statuses
    ]
    print(output.table(("MODEL", "MODEL ID", "STATUS"), rows) if rows else "No registry models.")
    if not args.pull:
        return 0
    newer = [str(s["tag"]) for s in statuses if s.get("status") == "update available"]
    return pull_updates(client, newer)


def pull_updates(client: ApiClient, tags: Sequence[str]) -> int:
    """Pull each tag in turn (one failure does not stop the rest); 1 if any failed."""
    from modelrunner.server.cli.transfer import pull

    failed: list[str] = []
    for tag in tags:
        print(f"\nPulling {tag}")
        try:
            pull(client, tag)
        except CliError as error:
            print(f"modelrunner: cannot update {tag}: {error.message}", file=sys.stderr)
            failed.append(tag)
    updated = len(tags) - len(failed)
    print(f"\nUpdated {updated} model(s).")
    if failed:
        print(f"Failed to update {len(failed)}: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
