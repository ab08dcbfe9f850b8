"""Puller: pull models from OCI registries into the store — shared, resumable, verified, reported.

One `PullJob` per normalised reference: a second `pull()` of the same reference joins the running
job, and blob downloads are shared by digest across jobs (two tags of one model download once).
A job resolves the manifest (one level of index, digest checked), refuses media types DMR does not
know (422, nothing stored), fetches and verifies the config, fetches the missing layers (several
at once, big ones in parallel ranges; `transfer.py`), and only then writes the manifest, config
and index entry under the store lock (`ModelStore.write`), tagged with the reference. A manifest
already in the store is only tagged. The persisted queue (`pull_queue.py`) lists unfinished pulls
so `resume_pending()` continues them after a restart.

Events: a new job publishes PullStarted("queued") at once, before any network I/O, and
PullStarted("resolving") when it gets one of the `max_active` slots; then PullProgressed per layer,
and it ends with exactly one PullFinished or PullFailed (a cancel is a PullFailed with status 499).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from modelrunner.core.distribution.progress import LayerMeter, PullProgressEvent
from modelrunner.core.distribution.pull_queue import PullQueue
from modelrunner.core.distribution.registry import Manifest
from modelrunner.core.distribution.transfer import BlobSource, BlobTransfer, TransferOptions
from modelrunner.core.distribution.validate import check_config, check_manifest
from modelrunner.core.errors import CoreError, InvalidReference, ModelNotFound
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import (
    CANCELLED_STATUS,
    ModelsChanged,
    PullFailed,
    PullFinished,
    PullProgressed,
    PullStarted,
)
from modelrunner.core.references import ModelReference, parse_reference
from modelrunner.core.settings import Settings
from modelrunner.core.store.package import Artifact, LayerFile
from modelrunner.core.store.store import ModelStore, StoredModel

MAX_PARALLEL_BLOBS = 4
"""Blobs downloading at once across all pulls."""
MAX_ACTIVE_PULLS = 3
"""Pulls resolving or downloading at once; later ones wait, "queued", in the order asked for."""


class RegistryLike(BlobSource, Protocol):
    """What the puller needs from `RegistryClient`."""

    async def get_manifest(self, ref: ModelReference) -> Manifest: ...

    async def read_blob(self, ref: ModelReference, digest: str, limit: int = ...) -> bytes: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class PullStatus:
    """A running pull, for `Puller.active()`."""

    reference: str
    state: str
    """"queued", "resolving", "downloading", "storing"."""
    total: int
    pulled: int
    speed: float
    eta: float | None
    layers: tuple[PullProgressed, ...]


class _Layer:
    """Progress of one layer within one job."""

    def __init__(self, digest: str, size: int, on_disk: int) -> None:
        self.digest = digest
        self.meter = LayerMeter(size, on_disk)
        self.state = "done" if on_disk >= size else "queued"


class _SharedBlob:
    """One blob download that any number of jobs wait for."""

    def __init__(self, transfer: BlobTransfer) -> None:
        self.transfer = transfer
        self.jobs: set[PullJob] = set()
        self.task: asyncio.Task[None] | None = None

    def report(self, current: int, state: str) -> None:
        for job in list(self.jobs):
            job.layer_moved(self.transfer.digest, current, state)


class PullJob:
    """One pull of one reference, whoever asked for it."""

    def __init__(self, reference: ModelReference, bus: EventBus) -> None:
        self.reference = reference
        self.key = reference.normalized
        self._bus = bus
        self.listeners: list[Callable[[PullProgressEvent], None]] = []
        self.layers: dict[str, _Layer] = {}
        self.total = 0
        self.state = "queued"
        self.task: asyncio.Task[StoredModel] | None = None
        self.ended = False
        """Whether PullFinished or PullFailed went out (a job ends once)."""

    def announce(self, state: str) -> None:
        """Enter "queued" or "resolving" and publish PullStarted (on the bus only: whoever
        passed `on_progress` started the pull, and DMR's progress stream has no such line)."""
        self.state = state
        self._bus.publish(PullStarted(self.key, state))

    def emit(self, event: PullProgressEvent) -> None:
        if isinstance(event, PullFinished | PullFailed):
            self.ended = True
        self._bus.publish(event)
        for listener in list(self.listeners):
            with contextlib.suppress(Exception):
                listener(event)

    def progress(self, layer: _Layer) -> PullProgressed:
        meter = layer.meter
        pulled = sum(entry.meter.current for entry in self.layers.values())
        return PullProgressed(
            self.key, layer.digest, meter.size, meter.current, self.total, pulled,
            layer.state, meter.speed, meter.average_speed, meter.eta,
        )  # fmt: skip

    def layer_moved(self, digest: str, current: int, state: str) -> None:
        layer = self.layers[digest]
        if state == "retrying":
            layer.meter.restart(current)
        else:
            layer.meter.update(current)
        changed = state != layer.state
        layer.state = state
        if changed or layer.meter.due():
            layer.meter.mark_emitted()
            self.emit(self.progress(layer))

    def status(self) -> PullStatus:
        layers = tuple(self.progress(layer) for layer in self.layers.values())
        pulled = sum(layer.current for layer in layers)
        speed = sum(layer.speed for layer in layers)
        eta = (self.total - pulled) / speed if speed > 0 else None
        return PullStatus(self.key, self.state, self.total, pulled, speed, eta, layers)


class Puller:
    """Pulls models into a store; the facade owns one."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        bus: EventBus,
        registry_factory: Callable[[], RegistryLike],
        *,
        options: TransferOptions | None = None,
        max_active: int = MAX_ACTIVE_PULLS,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.registry_factory = registry_factory
        self.options = options or TransferOptions()
        self.queue = PullQueue(settings.state_dir)
        self._jobs: dict[str, PullJob] = {}
        self._blobs: dict[str, _SharedBlob] = {}
        self._slots = asyncio.Semaphore(MAX_PARALLEL_BLOBS)
        self._admission = asyncio.Semaphore(max_active)
        """Slots for whole pulls; a job waits for one in state "queued"."""
        self._background: set[asyncio.Task[StoredModel]] = set()
        self._client_users: dict[int, int] = {}
        """Running jobs per client object: a factory may hand every job the same client."""

    async def pull(
        self,
        reference: str,
        *,
        on_progress: Callable[[PullProgressEvent], None] | None = None,
    ) -> StoredModel:
        """Pull a model (or join the pull already running for it) and return it as stored.

        Cancelling the caller only stops its progress reports; `cancel()` stops the pull.

        Raises:
            InvalidReference, ModelNotFound, AuthenticationRequired, UnsupportedModel (422),
            DigestMismatch, RegistryUnavailable, ...: the pull failed; nothing new is tagged.
        """
        job = self._job(reference)
        if on_progress is not None:
            for layer in job.layers.values():
                on_progress(job.progress(layer))  # catch a late joiner up
            job.listeners.append(on_progress)
        try:
            assert job.task is not None
            return await asyncio.shield(job.task)
        finally:
            if on_progress is not None:
                with contextlib.suppress(ValueError):
                    job.listeners.remove(on_progress)

    def _job(self, reference: str) -> PullJob:
        ref = parse_reference(reference)
        if ref.is_huggingface:
            raise InvalidReference(f"{ref.normalized} is a Hugging Face model, not an OCI one")
        job = self._jobs.get(ref.normalized)
        if job is None:
            self.queue.add(ref.normalized)  # if this fails, no pull started
            job = PullJob(ref, self.bus)
            self._jobs[job.key] = job
            job.announce("queued")
            job.task = asyncio.ensure_future(self._run(job))
            job.task.add_done_callback(lambda task: self._ended(job, task))
        return job

    def _ended(self, job: PullJob, task: asyncio.Task[StoredModel]) -> None:
        """Forget a finished job; a cancelled one says so, even if it never got to run."""
        self._jobs.pop(job.key, None)
        if task.cancelled() and not job.ended:
            job.emit(PullFailed(job.key, "the pull was cancelled", CANCELLED_STATUS))

    def active(self) -> list[PullStatus]:
        """The pulls running now, oldest first."""
        return [job.status() for job in self._jobs.values()]

    async def cancel(self, reference: str) -> bool:
        """Stop a running pull; its partial blobs stay for a later pull. False if none runs."""
        job = self._jobs.get(parse_reference(reference).normalized)
        if job is None or job.task is None:
            return False
        self.queue.remove(job.key)
        job.task.cancel()
        with contextlib.suppress(BaseException):
            await job.task
        return True

    async def resume_pending(self) -> None:
        """Start again, in the background, every pull the queue lists (after a restart)."""
        for reference in self.queue.pending():
            try:
                job = self._job(reference)
            except CoreError:
                self.queue.remove(reference)
                continue
            if job.task is not None:
                self._background.add(job.task)
                job.task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Stop every pull; unfinished ones stay queued (and partials stay) for the next start."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # One job

    async def _run(self, job: PullJob) -> StoredModel:
        """Wait for a slot, pull, and end with PullFinished or PullFailed (a cancel: `_ended`)."""
        try:
            async with self._admission:
                job.announce("resolving")
                model = await self._pull(job)
        except Exception as error:
            self.queue.remove(job.key)
            message = error.message if isinstance(error, CoreError) else str(error)
            status = error.status if isinstance(error, CoreError) else 500
            for layer in job.layers.values():
                if layer.state != "done":
                    layer.state = "failed"
                    job.emit(job.progress(layer))
            job.emit(PullFailed(job.key, message or type(error).__name__, status))
            raise
        self.queue.remove(job.key)
        return model

    async def _pull(self, job: PullJob) -> StoredModel:
        ref = job.reference
        client = self.registry_factory()
        self._client_users[id(client)] = self._client_users.get(id(client), 0) + 1
        try:
            manifest = await client.get_manifest(ref)
            document = check_manifest(manifest, ref)
            cached = await self._cached(job, manifest.digest, document)
            if cached is not None:
                return cached
            config_bytes = await self._config(client, ref, document)
            check_config(config_bytes, document)
            job.state = "downloading"
            layers = self._layer_files(job, document)
            await self._fetch_layers(job, client, layers)
        finally:
            await self._release(client)
        job.state = "storing"
        artifact = Artifact(manifest.raw, config_bytes, tuple(layers))
        model = await asyncio.to_thread(self.store.write, artifact, _tags(ref))
        self.bus.publish(ModelsChanged())
        job.emit(PullFinished(job.key, model.id, cached=False, size=_size(model)))
        return model

    async def _release(self, client: RegistryLike) -> None:
        """Close a client once no running job uses it (a shared client stays open meanwhile)."""
        users = self._client_users.pop(id(client), 1) - 1
        if users > 0:
            self._client_users[id(client)] = users
        else:
            await client.close()

    async def _cached(
        self, job: PullJob, model_id: str, document: dict[str, Any]
    ) -> StoredModel | None:
        """Tag and return the model when it is already stored whole (manifest and every blob).

        A model whose blobs went missing (e.g. removed by `fsck --repair`) is pulled again: the
        blobs still there are kept, the missing ones fetched.
        """
        try:
            await asyncio.to_thread(self.store.get, model_id)
        except ModelNotFound:
            return None
        digests = [document["config"]["digest"], *(d["digest"] for d in document["layers"])]
        if not all(self.store.blob_path(digest).is_file() for digest in digests):
            return None
        for tag in _tags(job.reference):
            await asyncio.to_thread(self.store.tag, model_id, tag)
        model = await asyncio.to_thread(self.store.get, model_id)
        self.bus.publish(ModelsChanged())
        job.emit(PullFinished(job.key, model.id, cached=True, size=_size(model)))
        return model

    async def _config(
        self, client: RegistryLike, ref: ModelReference, document: dict[str, Any]
    ) -> bytes:
        """The config blob, from the store if there, else the registry; digest and size checked."""
        descriptor = document["config"]
        path = self.store.blob_path(descriptor["digest"])
        if path.is_file():
            return await asyncio.to_thread(path.read_bytes)
        return await client.read_blob(ref, descriptor["digest"])

    def _layer_files(self, job: PullJob, document: dict[str, Any]) -> list[LayerFile]:
        files: list[LayerFile] = []
        for descriptor in document["layers"]:
            digest, size = descriptor["digest"], descriptor["size"]
            path = self.store.blob_path(digest)
            files.append(LayerFile(digest, size, path, str(descriptor.get("mediaType", ""))))
            job.total += size
            if digest not in job.layers:
                job.layers[digest] = _Layer(digest, size, size if path.is_file() else 0)
        return files

    async def _fetch_layers(
        self, job: PullJob, client: RegistryLike, layers: list[LayerFile]
    ) -> None:
        """Download the layers not yet in the store, sharing downloads with other jobs."""
        shared: list[_SharedBlob] = []
        for layer in {layer.digest: layer for layer in layers}.values():
            if job.layers[layer.digest].state == "done":
                continue
            blob = self._blobs.get(layer.digest)
            if blob is None:
                transfer = BlobTransfer(
                    client, job.reference, layer.digest, layer.size, layer.path,
                    options=self.options,
                )  # fmt: skip
                blob = _SharedBlob(transfer)
                transfer.on_progress = blob.report
                self._blobs[layer.digest] = blob
                blob.task = asyncio.ensure_future(self._download(blob))
            blob.jobs.add(job)
            shared.append(blob)
        try:
            await asyncio.gather(*(asyncio.shield(blob.task) for blob in shared if blob.task))
        finally:
            for blob in shared:
                blob.jobs.discard(job)
                if not blob.jobs and blob.task is not None and not blob.task.done():
                    blob.task.cancel()  # nobody waits for it any more

    async def _download(self, blob: _SharedBlob) -> None:
        digest = blob.transfer.digest
        try:
            async with self._slots:
                await blob.transfer.run()
        finally:
            self._blobs.pop(digest, None)


def _size(model: StoredModel) -> str:
    size = model.config.get("size")
    return size if isinstance(size, str) else json.dumps(model.size_bytes)


def _tags(ref: ModelReference) -> list[str]:
    """The tags a pull gives: the one named, none for a bare "repo@sha256:…" (as docker pull;
    DMR would move "latest" to it)."""
    if ref.digest is not None and not ref.tag_given:
        return []
    return [ref.stored]
