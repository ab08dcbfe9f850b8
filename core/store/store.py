"""ModelStore: list, get, tag, remove, write, package and bundle models in DMR's on-disk store."""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from modelrunner.core.errors import (
    Conflict,
    CoreError,
    InvalidInput,
    InvalidReference,
    ModelNotFound,
    StoreCorrupt,
)
from modelrunner.core.references import ModelReference, parse_reference
from modelrunner.core.store import archive
from modelrunner.core.store.bundle import Bundle, BundleInvalid, parse_bundle, unpack_bundle
from modelrunner.core.store.index import Index, IndexEntry
from modelrunner.core.store.layout import (
    INCOMPLETE_SUFFIX,
    StoreLayout,
    StoreLock,
    atomic_write,
    copy_stream_verified,
    sha256_digest,
)
from modelrunner.core.store.package import (
    Artifact,
    LayerFile,
    build_gguf_artifact,
    created_seconds,
    derive_artifact,
    docker_view,
    index_files,
    parse_manifest,
)


@dataclass(frozen=True)
class StoredModel:
    """One model in the store, as DMR's GET /models describes it."""

    id: str
    """"sha256:<64 hex>" = sha256 of the manifest bytes as stored."""
    tags: tuple[str, ...]
    """As in models.json, e.g. "docker.io/ai/smollm2:135M-Q4_1"."""
    created: int
    """Unix seconds from the config's descriptor.created (0 if absent)."""
    config: dict[str, Any] = field(default_factory=dict)
    """The inner Docker-shaped config object (CNCF configs converted)."""
    size_bytes: int = 0
    """Sum of the layer sizes."""

    def to_api(self) -> dict[str, Any]:
        """The JSON object DMR's GET /models returns for this model."""
        return {
            "id": self.id,
            "tags": list(self.tags),
            "created": self.created,
            "config": self.config,
        }


@dataclass(frozen=True)
class _Description:
    """What a model's manifest and config say; fixed for an ID (both are content-addressed)."""

    created: int
    config: dict[str, Any]
    size: int


class ModelExport:
    """A model about to be exported: its manifest, config and opened layer blobs.

    Use as a context manager, or call close(); `write_to` streams DMR's tarball once.
    """

    def __init__(self, model_id: str, artifact: Artifact, streams: dict[str, BinaryIO]) -> None:
        self.model_id = model_id
        self.artifact = artifact
        self._streams = streams

    def write_to(self, fileobj: BinaryIO) -> None:
        """Write the export tarball (a layer listed twice is read twice, from the start)."""
        archive.write_archive(self.artifact, fileobj, self._streams)

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()

    def __enter__(self) -> ModelExport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ModelStore:
    """The local model store, byte-compatible with DMR's (`~/.docker/models`)."""

    def __init__(self, root: Path) -> None:
        self.layout = StoreLayout(root)
        self._lock = StoreLock(self.layout.lock_file)
        self._index_seen: tuple[tuple[int, ...], Index] | None = None
        """The last models.json parsed for `get`, with the stat it had."""
        self._descriptions: dict[str, _Description] = {}
        try:
            with self._lock.hold(exclusive=True):
                self.layout.initialise()
        except OSError as error:
            raise InvalidInput(
                f"cannot open the model store at {root}: {error.strerror}"
            ) from error

    @property
    def root(self) -> Path:
        return self.layout.root

    # Reading

    def _read_index(self) -> Index:
        try:
            data = self.layout.index_file.read_bytes()
        except FileNotFoundError:
            return Index()
        return Index.parse(data)

    def _write_index(self, index: Index) -> None:
        atomic_write(self.layout.index_file, index.dump())
        self._index_seen = None  # a reused inode with the same size and time must not fool get

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Index]:
        with self._lock.hold(exclusive=False):
            yield self._read_index()

    def _current_index(self) -> Index:
        """models.json as it is now, parsed once per version of the file, read without the lock.

        No lock is needed: models.json is only ever replaced whole by a rename (ours and DMR's),
        so a read sees one version or the next. Not for writers, which must hold the lock.
        """
        try:
            stat = os.stat(self.layout.index_file)
        except FileNotFoundError:
            return Index()
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        seen = self._index_seen
        if seen is not None and seen[0] == version:
            return seen[1]
        index = self._read_index()
        self._index_seen = (version, index)
        return index

    def _model(self, entry: IndexEntry) -> StoredModel:
        """Describe an entry; a missing or damaged manifest or config gives an empty config."""
        description = self._descriptions.get(entry.id)
        if description is None:
            description = self._describe(entry.id)
            if description is None:
                return StoredModel(entry.id, tuple(entry.tags), 0, {}, 0)
            self._descriptions[entry.id] = description
        tags, config = tuple(entry.tags), dict(description.config)
        return StoredModel(entry.id, tags, description.created, config, description.size)

    def _describe(self, model_id: str) -> _Description | None:
        """Read a model's manifest and config (kept: an ID's manifest and config never change)."""
        with contextlib.suppress(
            OSError, ValueError, InvalidInput, KeyError, TypeError, RecursionError
        ):
            manifest = json.loads(self.layout.manifest_path(model_id).read_bytes())
            if not isinstance(manifest, dict):
                return None
            size = sum(int(layer["size"]) for layer in manifest.get("layers") or [])
            config_blob = self.layout.blob_path(manifest["config"]["digest"]).read_bytes()
            document = json.loads(config_blob)
            if not isinstance(document, dict):
                return None
            return _Description(created_seconds(document), docker_view(document), size)
        return None

    def list(self) -> list[StoredModel]:
        """Every stored model, in models.json order (read without the lock, as `get`)."""
        return [self._model(entry) for entry in self._current_index().entries]

    def get(self, reference: str) -> StoredModel:
        """Find a model by tag (any spelling), name@digest, full ID, 64 hex, or unique ID prefix.

        Raises:
            ModelNotFound, InvalidReference, InvalidInput (ambiguous ID prefix).

        Cheap enough for every API request: models.json is parsed once per version of the file.
        """
        return self._model(self._current_index().resolve(reference))

    def find(self, reference: str) -> StoredModel:
        """Like get, then DMR's fallback: the one model whose repository ends in the name.

        "smollm2" finds "docker.io/myorg/smollm2:latest"; "tiny:v2" finds "team/tiny:v2".

        Raises:
            ModelNotFound: Nothing, or more than one model, matches (the message lists them).
        """
        try:
            return self.get(reference)
        except ModelNotFound:
            pass
        name, _, wanted_tag = reference.strip().partition(":")
        if "/" in name:
            raise ModelNotFound(f"model {reference!r} not found")
        matches: dict[str, StoredModel] = {}
        for model in self.list():
            for tag in model.tags:
                repository, _, stored_tag = tag.rpartition(":")
                if repository.rsplit("/", 1)[-1] == name and wanted_tag in ("", stored_tag):
                    matches[model.id] = model
        if len(matches) == 1:
            return next(iter(matches.values()))
        if matches:
            raise ModelNotFound(
                f"model {reference!r} not found; did you mean one of: "
                + ", ".join(sorted(t for m in matches.values() for t in m.tags))
            )
        raise ModelNotFound(f"model {reference!r} not found")

    def manifest_bytes(self, reference: str) -> bytes:
        """The raw manifest of a model.

        Raises:
            StoreCorrupt: The manifest file is missing.
        """
        with self._reading() as index:
            entry = index.resolve(reference)
            return self._read_manifest(entry.id)

    def _read_manifest(self, model_id: str) -> bytes:
        try:
            return self.layout.manifest_path(model_id).read_bytes()
        except OSError as error:
            raise StoreCorrupt(f"manifest of {model_id} is missing: {error.strerror}") from error

    def blob_path(self, digest: str) -> Path:
        """Where a blob lives (it may not exist)."""
        return self.layout.blob_path(digest)

    # Tags and removal

    def tag(self, source: str, target: str) -> str:
        """Tag a model; the tag moves off any other model. Returns the stored target tag.

        Raises:
            InvalidReference: The target is not a valid name, or names a digest.
            ModelNotFound: The source does not exist.
        """
        target_reference = _tag_reference(target)
        with self._lock.hold(exclusive=True):
            index = self._read_index()
            entry = index.resolve(source)
            stored = index.add_tag(entry.id, target_reference)
            self._write_index(index)
            return stored

    def untag(self, reference: str) -> str:
        """Take a tag off its model (the model stays); returns the tag as it was stored."""
        parsed = parse_reference(reference)
        with self._lock.hold(exclusive=True):
            index = self._read_index()
            removed = index.remove_tag(parsed)
            self._write_index(index)
            return removed

    def remove(self, reference: str, *, force: bool = False) -> builtins.list[dict[str, str]]:
        """Remove with DMR's semantics: untag a tag of a multi-tag model, else delete.

        Returns DMR's answer, e.g. [{"Untagged": "docker.io/ai/x:latest"}, {"Deleted": "sha256:…"}].

        Raises:
            Conflict: An ID (or digest) of a model with several tags, without force.
            ModelNotFound, InvalidReference, InvalidInput.
        """
        with self._lock.hold(exclusive=True):
            index = self._read_index()
            entry = index.resolve(reference)
            by_tag = self._names_tag(index, entry, reference)
            if by_tag is not None and len(entry.tags) > 1:
                removed = index.remove_tag(by_tag)
                self._write_index(index)
                return [{"Untagged": removed}]
            if by_tag is None and len(entry.tags) > 1 and not force:
                raise Conflict(
                    f"unable to delete {entry.id[7:19]} (must be forced): it is referenced by "
                    f"{len(entry.tags)} tags ({', '.join(entry.tags)})"
                )
            result = [{"Untagged": tag} for tag in entry.tags]
            self._delete(index, entry)
            return [*result, {"Deleted": entry.id}]

    def reset(self) -> None:
        """Delete everything under the root, then lay out an empty store (DMR's purge).

        Our `.lock` stays: it is the lock held while this runs, and other processes hold it too.

        Raises:
            StoreCorrupt: The root holds files but no layout.json, so it may not be a model store
                (a mistyped MODELS_PATH): nothing is deleted, as DMR refuses too. Unlike DMR,
                also when it holds anything the store does not write (a MODELS_PATH of a
                directory in use gets a layout.json at start, so that file proves nothing).
            CoreError: Something under the root could not be deleted.
        """
        root = self.layout.root
        with self._lock.hold(exclusive=True):
            found = list(root.iterdir()) if root.is_dir() else []
            entries = [path for path in found if path != self.layout.lock_file]
            if entries and not self.layout.layout_file.exists():
                raise StoreCorrupt(
                    f"refusing to reset: directory {str(root)!r} does not appear to be a model "
                    "store (missing layout.json)"
                )
            foreign = sorted(path.name for path in entries if not self._owns(path))
            if foreign:
                raise StoreCorrupt(
                    f"refusing to reset: directory {str(root)!r} holds files that are not the "
                    f"model store's ({', '.join(foreign)})"
                )
            for path in entries:
                try:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except OSError as error:
                    raise CoreError(f"removing {path}: {error.strerror or error}") from error
            self._index_seen = None
            self._descriptions.clear()
            self.layout.initialise()

    def _owns(self, path: Path) -> bool:
        """Whether an entry of the root is the store's: its files, folders, or a temp file of
        an atomic write (anything else means MODELS_PATH names someone's own directory)."""
        layout = self.layout
        own = {layout.layout_file, layout.index_file, layout.blobs_dir}
        own |= {layout.manifests_dir.parent, layout.bundles_dir.parent}
        return path in own or path.name.startswith(
            (f"{layout.layout_file.name}.tmp-", f"{layout.index_file.name}.tmp-")
        )

    @staticmethod
    def _names_tag(index: Index, entry: IndexEntry, reference: str) -> ModelReference | None:
        """The parsed reference when it names one of entry's tags (not its ID or digest)."""
        try:
            parsed = parse_reference(reference)
        except InvalidReference:
            return None
        if parsed.digest is None and index.by_tag(parsed) is entry:
            return parsed
        return None

    def _delete(self, index: Index, entry: IndexEntry) -> None:
        """Drop the entry first (so no listed model lacks files), then its files."""
        index.remove(entry.id)
        self._write_index(index)
        with contextlib.suppress(FileNotFoundError):
            self.layout.manifest_path(entry.id).unlink()
        shutil.rmtree(self.layout.bundle_path(entry.id), ignore_errors=True)
        for digest in entry.files:
            if not index.is_referenced(digest):
                with contextlib.suppress(FileNotFoundError, InvalidInput):
                    self.layout.blob_path(digest).unlink()

    # Writing

    def _place_layer(self, layer: LayerFile) -> None:
        """Store one layer blob: a hard link to the source when its hash is known, else a copy."""
        target = self.layout.blob_path(layer.digest)
        if target.exists():
            return  # blobs are content-addressed: reuse, as DMR does
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            stat = layer.path.stat()
        except OSError as error:
            raise InvalidInput(f"cannot read {layer.path}: {error.strerror}") from error
        if stat.st_size != layer.size:
            raise InvalidInput(f"{layer.path} is {stat.st_size} bytes, expected {layer.size}")
        if layer.mtime_ns is not None and stat.st_mtime_ns == layer.mtime_ns:
            partial = target.with_name(target.name + INCOMPLETE_SUFFIX)
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            try:
                os.link(layer.path, partial)
                os.replace(partial, target)
                return
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        with layer.path.open("rb") as source:
            copy_stream_verified(source, target, layer.digest, layer.size)

    def write(self, artifact: Artifact, tags: Sequence[str] = ()) -> StoredModel:
        """Store a built artifact: layer blobs, config, manifest, then the index entry and tags.

        On failure the new config and manifest are removed and the index is untouched;
        completed layer blobs are kept for reuse, like DMR.

        Raises:
            InvalidReference: A tag is invalid (checked before anything is written).
            InvalidInput: The artifact is inconsistent or a layer does not match its digest.
        """
        references = [parse_reference(tag) for tag in tags]
        document = parse_manifest(artifact.manifest_bytes)
        if document["config"]["digest"] != artifact.config_digest:
            raise InvalidInput("the manifest does not describe this config (digest mismatch)")
        listed = {layer["digest"] for layer in document["layers"]}
        if listed != {layer.digest for layer in artifact.layers}:
            raise InvalidInput("the artifact's layer files do not match its manifest")
        with self._lock.hold(exclusive=True):
            for layer in artifact.layers:
                self._place_layer(layer)
            config_path = self.layout.blob_path(artifact.config_digest)
            created_config = not config_path.exists()
            if created_config:
                atomic_write(config_path, artifact.config_bytes)
            try:
                model_id = self._install_manifest(artifact.manifest_bytes, document, references)
            except BaseException:
                if created_config and not self._read_index().is_referenced(artifact.config_digest):
                    config_path.unlink(missing_ok=True)
                raise
            return self._model(self._read_index().by_id(model_id) or IndexEntry(model_id))

    def _install_manifest(
        self, manifest_bytes: bytes, document: dict[str, Any], references: Sequence[ModelReference]
    ) -> str:
        """Write a manifest whose blobs are all present and list it; returns the model ID."""
        for digest in index_files(document):
            if not self.layout.blob_path(digest).is_file():
                raise InvalidInput(f"cannot store the model: blob {digest} is missing")
        model_id = sha256_digest(manifest_bytes)
        manifest_path = self.layout.manifest_path(model_id)
        created_manifest = not manifest_path.exists()
        if created_manifest:
            atomic_write(manifest_path, manifest_bytes)
        try:
            index = self._read_index()
            index.add(IndexEntry(id=model_id, tags=[], files=index_files(document)))
            for reference in references:
                index.add_tag(model_id, reference)
            self._write_index(index)
        except BaseException:
            if created_manifest:
                manifest_path.unlink(missing_ok=True)
            raise
        return model_id

    def package_gguf(
        self,
        gguf: Path,
        tag: str | None,
        *,
        mmproj: Path | None = None,
        chat_template: Path | None = None,
        context_size: int | None = None,
        licenses: Sequence[Path] = (),
    ) -> StoredModel:
        """Package a local GGUF (shards, mmproj, template, licenses) and store it under tag."""
        if tag is not None:
            parse_reference(tag)  # fail on a bad name before hashing gigabytes
        artifact = build_gguf_artifact(
            gguf,
            mmproj=mmproj,
            chat_template=chat_template,
            context_size=context_size,
            licenses=licenses,
        )
        return self.write(artifact, [tag] if tag is not None else [])

    # Bundles and archives

    def bundle(self, reference: str) -> Bundle:
        """The runtime bundle of a GGUF model, created (or rebuilt if unusable) on first use.

        Raises:
            InvalidInput: The model has no GGUF weights, or a layer path is unsafe.
            StoreCorrupt: A blob of the model is missing.
        """
        with self._lock.hold(exclusive=True):
            entry = self._read_index().resolve(reference)
            root = self.layout.bundle_path(entry.id)
            if root.exists():
                try:
                    return self._require_gguf(parse_bundle(root), entry.id)
                except BundleInvalid:
                    shutil.rmtree(root, ignore_errors=True)
            manifest_bytes = self._read_manifest(entry.id)
            document = parse_manifest(manifest_bytes)
            for digest in index_files(document):
                if not self.layout.blob_path(digest).is_file():
                    raise StoreCorrupt(f"blob {digest} of model {entry.id} is missing")
            config_bytes = self.layout.blob_path(document["config"]["digest"]).read_bytes()
            unpack_bundle(root, document, config_bytes, self.layout.blob_path)
            try:
                return self._require_gguf(parse_bundle(root), entry.id)
            except BundleInvalid as error:
                shutil.rmtree(root, ignore_errors=True)
                raise InvalidInput(f"model {entry.id} cannot be unpacked: {error}") from error

    @staticmethod
    def _require_gguf(bundle: Bundle | None, model_id: str) -> Bundle:
        if bundle is None:
            raise InvalidInput(
                f"model {model_id[7:19]} has no GGUF weights; llama.cpp cannot run it"
            )
        return bundle

    def open_export(self, reference: str) -> ModelExport:
        """A model's export, its files opened now: GET /models/{name}/export streams it later.

        The store lock is held only while the model is resolved and its blobs opened, so a slow
        client never holds up pulls or tags (an opened blob stays readable if it is deleted).

        Raises:
            ModelNotFound, InvalidReference: No such model (resolved as DMR's store.Read: tag,
                name@digest or ID, no partial-name fallback).
            StoreCorrupt: The manifest, config or a layer blob is missing.
        """
        with self._reading() as index:
            entry = index.resolve(reference)
            manifest_bytes = self._read_manifest(entry.id)
            document = parse_manifest(manifest_bytes)
            layers = self._layer_files(document)
            streams: dict[str, BinaryIO] = {}
            try:
                config_bytes = self._read_blob(document["config"]["digest"], entry.id)
                for layer in layers:
                    if layer.digest not in streams:
                        streams[layer.digest] = self._open_blob(layer.path, layer.digest, entry.id)
            except BaseException:
                for stream in streams.values():
                    stream.close()
                raise
        return ModelExport(entry.id, Artifact(manifest_bytes, config_bytes, layers), streams)

    def export_archive(self, reference: str, fileobj: BinaryIO) -> None:
        """Write a model as DMR's export tarball (GET /models/{name}/export)."""
        with self.open_export(reference) as export:
            export.write_to(fileobj)

    def _layer_files(self, document: dict[str, Any]) -> tuple[LayerFile, ...]:
        return tuple(
            LayerFile(
                layer["digest"],
                layer["size"],
                self.layout.blob_path(layer["digest"]),
                str(layer.get("mediaType", "")),
            )
            for layer in document["layers"]
        )

    def _read_blob(self, digest: str, model_id: str) -> bytes:
        try:
            return self.layout.blob_path(digest).read_bytes()
        except OSError as error:
            raise StoreCorrupt(f"blob {digest} of model {model_id} is missing") from error

    @staticmethod
    def _open_blob(path: Path, digest: str, model_id: str) -> BinaryIO:
        try:
            return path.open("rb")
        except OSError as error:
            raise StoreCorrupt(f"blob {digest} of model {model_id} is missing") from error

    def repackage(self, source: str, target: str, *, context_size: int | None) -> StoredModel:
        """DMR's repackage: the source with only its config changed, tagged target; no layer is
        copied (DMR's `WriteLightweight`: config and manifest written, layers shared).

        Without a context size the model is unchanged (the same ID), so this only tags it.

        Raises:
            InvalidReference: The target is not a valid tag (checked before anything is written).
            ModelNotFound: No such source (DMR's store.Read: no partial-name fallback).
            InvalidInput: The context size is out of range, or the source is a CNCF model.
            StoreCorrupt: A blob of the source is missing.
        """
        target_reference = _tag_reference(target)
        with self._lock.hold(exclusive=True):
            index = self._read_index()
            entry = index.resolve(source)
            manifest_bytes = self._read_manifest(entry.id)
            document = parse_manifest(manifest_bytes)
            layers = self._layer_files(document)
            for layer in layers:
                if not layer.path.is_file():
                    raise StoreCorrupt(
                        f"layer {layer.digest} not found in store, cannot use lightweight write"
                    )
            if context_size is None:
                stored_id = entry.id
                index.add_tag(entry.id, target_reference)
                self._write_index(index)
            else:
                config_bytes = self._read_blob(document["config"]["digest"], entry.id)
                artifact = derive_artifact(
                    manifest_bytes, config_bytes, layers, context_size=context_size
                )
                config_path = self.layout.blob_path(artifact.config_digest)
                created_config = not config_path.exists()
                if created_config:
                    atomic_write(config_path, artifact.config_bytes)
                try:
                    stored_id = self._install_manifest(
                        artifact.manifest_bytes,
                        parse_manifest(artifact.manifest_bytes),
                        [target_reference],
                    )
                except BaseException:
                    if created_config and not self._read_index().is_referenced(
                        artifact.config_digest
                    ):
                        config_path.unlink(missing_ok=True)
                    raise
            return self._model(self._read_index().by_id(stored_id) or IndexEntry(stored_id))

    def load_archive(self, fileobj: IO[bytes]) -> str:
        """Load DMR's export tarball (POST /models/load); every blob is sha256-verified.

        Returns the model ID; like DMR, the model is not tagged.

        Raises:
            InvalidInput: Not a model archive, a blob that does not match its digest, a bad
                manifest, or a config that is not a JSON object (its new blob is removed).
        """
        with self._lock.hold(exclusive=True):
            created: set[str] = set()

            def put_blob(digest: str, stream: IO[bytes], size: int) -> None:
                target = self.layout.blob_path(digest)
                if not target.exists():
                    copy_stream_verified(stream, target, digest, size)
                    created.add(digest)

            manifest_bytes = archive.read_archive(fileobj, put_blob)
            document = parse_manifest(manifest_bytes)
            config_digest = document["config"]["digest"]
            problem = self._config_problem(config_digest)
            if problem is not None:
                if config_digest in created:
                    self.layout.blob_path(config_digest).unlink(missing_ok=True)
                raise InvalidInput(f"the model's config {config_digest} {problem}")
            return self._install_manifest(manifest_bytes, document, [])

    def _config_problem(self, digest: str) -> str | None:
        """Why a stored config blob is unusable, or None (a missing one is left to the caller)."""
        try:
            document = json.loads(self.layout.blob_path(digest).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            return "is not a JSON object"
        except RecursionError:
            return "is nested too deeply"
        return None if isinstance(document, dict) else "is not a JSON object"


def _tag_reference(target: str) -> ModelReference:
    """`target` parsed as a tag to give a model (a digest reference is not one).

    Raises:
        InvalidReference: Not a valid name, or a digest reference.
    """
    reference = parse_reference(target)
    if reference.digest is not None:
        raise InvalidReference(f"cannot tag with a digest reference: {target}")
    return reference
