"""`modelrunner package`: build the artifact here, stream it to POST /models/load, tag it, and
with `--push` push it through the server (POST /models/{name}/push).

`--from MODEL` starts from a stored model, as DMR's: with only `--context-size` the server
repackages it (POST /models/{name}/repackage, layers shared); otherwise the model is exported
(GET /models/{name}/export) into a temporary folder, its config changed and files added here,
and the result loaded as any package. DMR's CLI first reads `MODELS_PATH` itself and writes
config-only changes straight into it; ours always goes through the server, which may be remote.

DMR's CLI pushes straight to the registry itself. Ours asks the server to push the model it has
just stored, so the credentials (`modelrunner login`, Docker's config) and the progress stream are
those of every other push.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from modelrunner.core.errors import CoreError
from modelrunner.core.references import ModelReference, parse_reference
from modelrunner.core.store.archive import read_archive, write_archive
from modelrunner.core.store.layout import copy_stream_verified, parse_digest
from modelrunner.core.store.package import (
    Artifact,
    LayerFile,
    build_gguf_artifact,
    derive_artifact,
    describe_extra_files,
    parse_manifest,
)
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
    then, with --push, push the tag through the server. `--from` starts from a stored model."""
    from_model = getattr(args, "from_model", None)
    if from_model and args.gguf:
        raise CliError(
            "Cannot specify more than one of --gguf or --from. Please use only one source."
        )
    if not from_model and not args.gguf:
        raise CliError("One of --gguf or --from is required.")
    target = parse_reference(args.target)
    if target.digest is not None:
        raise CliError(f"invalid name {args.target!r}: package under a tag, not a digest")
    if from_model:
        return package_from(client, args, target)
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
    return load_and_tag(client, artifact, args)


def load_and_tag(client: ApiClient, artifact: Artifact, args: argparse.Namespace) -> int:
    """Stream the artifact to POST /models/load, tag it, and push it with --push."""
    target = parse_reference(args.target)
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


def _say(message: str) -> None:
    print(message, file=sys.stderr)  # DMR's package prints its steps on stderr


def package_from(client: ApiClient, args: argparse.Namespace, target: ModelReference) -> int:
    """`package --from MODEL TARGET`: DMR's repackaging of a stored model."""
    licenses = [path for path in (existing_file(p, "license") for p in args.license) if path]
    chat_template = existing_file(args.chat_template, "chat template")
    mmproj = existing_file(args.mmproj, "mmproj file")
    adds_files = bool(licenses) or chat_template is not None or mmproj is not None
    push_it = bool(getattr(args, "push", False))
    if args.context_size is not None and not adds_files and not push_it:
        _say(f'Reading model from daemon: "{args.from_model}"')
        _say(f"Setting context size {args.context_size}")
        _say("Creating lightweight model variant...")
        client.repackage(args.from_model, args.target, args.context_size)
        _say("Model variant created successfully")
        return 0
    if args.context_size is None and not adds_files:
        client.tag(args.from_model, target.name, target.tag)  # nothing changes: the same model
        _say(f'Model "{args.from_model}" tagged "{args.target}"')
        return push(client, args.target) if push_it else 0
    with tempfile.TemporaryDirectory(prefix="modelrunner-package-") as folder:
        _say(f'Reading model from daemon: "{args.from_model}"')
        manifest_bytes, config_bytes, layers = export_into(client, args.from_model, Path(folder))
        if args.context_size is not None:
            _say(f"Setting context size {args.context_size}")
        for path in licenses:
            _say(f'Adding license file from "{path}"')
        if chat_template is not None:
            _say(f'Adding chat template file from "{chat_template}"')
        if mmproj is not None:
            _say(f'Adding multimodal projector file from "{mmproj}"')
        try:
            appended = describe_extra_files(
                licenses=licenses, chat_template=chat_template, mmproj=mmproj
            )
            artifact = derive_artifact(
                manifest_bytes,
                config_bytes,
                layers,
                context_size=args.context_size,
                appended=appended,
            )
        except CoreError as error:
            raise CliError(f"cannot repackage {args.from_model}: {error.message}") from error
        return load_and_tag(client, artifact, args)


def export_into(
    client: ApiClient, name: str, folder: Path
) -> tuple[bytes, bytes, tuple[LayerFile, ...]]:
    """A model's export, read as it streams: every blob verified into `folder`.

    Returns the manifest bytes, the config bytes and the layer files.
    """

    def put_blob(digest: str, stream: IO[bytes], size: int) -> None:
        copy_stream_verified(stream, folder / parse_digest(digest)[1], digest, size)

    with client.export(name) as chunks:
        manifest_bytes = read_archive(io.BufferedReader(_ChunkReader(chunks)), put_blob)
    document = parse_manifest(manifest_bytes)
    config_path = folder / parse_digest(document["config"]["digest"])[1]
    try:
        config_bytes = config_path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"the export of {name} has no config blob") from None
    layers = []
    for layer in document["layers"]:
        path = folder / parse_digest(layer["digest"])[1]
        if not path.is_file():
            raise CliError(f"the export of {name} lacks layer {layer['digest']}")
        layers.append(LayerFile(layer["digest"], layer["size"], path, str(layer["mediaType"])))
    return manifest_bytes, config_bytes, tuple(layers)


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (tarfile's stream mode reads it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
