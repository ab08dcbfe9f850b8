"""`modelrunner package`: build the artifact here, stream it to POST /models/load, tag it, and
with `--push` push it through the server (POST /models/{name}/push).

DMR's CLI pushes straight to the registry itself. Ours asks the server to push the model it has
just stored, so the credentials (`modelrunner login`, Docker's config) and the progress stream are
those of every other push.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from modelrunner.core.references import parse_reference
from modelrunner.core.store.archive import write_archive
from modelrunner.core.store.package import Artifact, build_gguf_artifact
from modelrunner.server.cli.client import ApiClient, CliError
from modelrunner.server.cli.transfer import push

_CHUNK = 1 << 20


def existing_file(path: Path | None, what: str) -> Path | None:
    """`path` made absolute, or a CliError saying why it cannot be packaged."""
    if path is None:
        return None
    resolved = path.expanduser().resolve()
    if not resolved.exists():
        raise CliError(f"{what} {path} does not exist")
    if not resolved.is_file():
        raise CliError(f"{what} {path} is not a file")
    return resolved


def archive_chunks(artifact: Artifact) -> Iterator[bytes]:
    """The artifact as DMR's export tarball, produced by a thread as the upload consumes it."""
    read_fd, write_fd = os.pipe()
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb") as sink:
                write_archive(artifact, sink)
        except BrokenPipeError:
            pass  # the upload stopped reading; its own error is the one to report
        except BaseException as error:
            failures.append(error)

    producer = threading.Thread(target=produce, name="package-archive", daemon=True)
    producer.start()
    try:
        with os.fdopen(read_fd, "rb") as source:
            while chunk := source.read(_CHUNK):
                yield chunk
    finally:
        producer.join()
    if failures:
        raise failures[0]


def package_and_load(client: ApiClient, args: argparse.Namespace) -> int:
    """DMR's local flow: build, `POST /models/load` the tarball, `POST /models/sha256:<id>/tag`;
    then, with --push, push the tag through the server."""
    target = parse_reference(args.target)
    if target.digest is not None:
        raise CliError(f"invalid name {args.target!r}: package under a tag, not a digest")
    gguf = existing_file(args.gguf, "GGUF file")
    assert gguf is not None
    licenses = [existing_file(path, "license") for path in args.license]
    print(f"Adding GGUF file from {gguf}")
    artifact = build_gguf_artifact(
        gguf,
        mmproj=existing_file(args.mmproj, "mmproj file"),
        chat_template=existing_file(args.chat_template, "chat template"),
        context_size=args.context_size,
        licenses=[path for path in licenses if path is not None],
    )
    print("Loading model into modelrunner...")
    model_id = client.load(archive_chunks(artifact))
    if model_id != artifact.id:
        raise CliError(f"the server stored {model_id}, expected {artifact.id}")
    client.tag(model_id, target.name, target.tag)
    print(f'Model {model_id[7:19]} loaded and tagged "{args.target}"')
    if not getattr(args, "push", False):
        return 0
    print(f"Pushing {args.target}...")
    try:
        return push(client, args.target)
    except CliError as error:
        raise CliError(
            f"cannot push {args.target}: {error.message} (it is stored here; retry with "
            f"`modelrunner push {args.target}`)"
        ) from error
