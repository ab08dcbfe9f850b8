"""Pull `hf.co/org/repo[:QUANT]` from the Hugging Face Hub (or HF_ENDPOINT) into the store.

The Hub's native API, through `huggingface_hub`: `model_info` (commit and lastModified), a
recursive `list_repo_tree` at that commit, then one HEAD and a GET per chosen file. Files are
downloaded with `huggingface_hub`'s own `http_get` into our staging directory
(`<cache_dir>/huggingface/<org>--<repo>/<commit>/<path>.incomplete`), not its cache: its cache
writes to a per-process temporary name that a restart never reuses, while ours resumes with a
Range request after a crash, kill or restart. LFS files are checked against their sha256.

GGUF repositories become a V0.1 artifact (`build_gguf_artifact`: shards, mmproj, template),
safetensors repositories a V0.2 one over every downloaded file (`hf_artifact`); either is created
at the repository's lastModified and stored under `huggingface.co/org/repo:<tag>`. A tag already
in the store is not fetched again (DMR never refreshes a Hugging Face pull).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, get_hf_file_metadata, get_token, hf_hub_url
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils._headers import build_hf_headers

from modelrunner.core.distribution.hf_artifact import build_directory_artifact
from modelrunner.core.distribution.hf_select import Selection, select_files
from modelrunner.core.distribution.progress import LayerMeter, PullProgressEvent
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
from modelrunner.core.references import ModelReference
from modelrunner.core.settings import Settings
from modelrunner.core.store.gguf_metadata import format_size
from modelrunner.core.store.package import Artifact, build_gguf_artifact
from modelrunner.core.store.store import ModelStore, StoredModel

__all__ = ["HubAuthRequired", "HuggingFaceSource", "Selection", "select_files"]

PARALLEL_DOWNLOADS = 4
"""Files fetched at once, as DMR."""
POLL_INTERVAL = 0.1
"""Seconds between progress samples of the files being written."""
METADATA_TIMEOUT = 10.0
"""Seconds a HEAD for a file's metadata may take."""

ProgressCallback = Callable[[PullProgressEvent], None]


class HubAuthRequired(CoreError):
    """The repository is gated or private and no (or no sufficient) token was given."""

    status = 401


class HubUnavailable(CoreError):
    """The Hub could not be reached or answered with an unexpected error."""

    status = 502


class HubRateLimited(CoreError):
    """The Hub refused the request for now (HTTP 429)."""

    status = 429


class _Cancelled(Exception):
    """Raised inside a download thread once its pull was cancelled."""


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of the repository at the pulled commit."""

    path: str
    size: int
    sha256: str | None
    """The LFS sha256 (hex), the layer digest to expect; None for small, non-LFS files."""

    @property
    def layer_id(self) -> str:
        """What progress events call this file: its digest when known, else its path."""
        return f"sha256:{self.sha256}" if self.sha256 else self.path


@dataclass(frozen=True, slots=True)
class _Hub:
    """Where and as whom to talk to the Hub, read from the environment at pull time."""

    endpoint: str
    token: str | None

    @classmethod
    def from_environment(cls, token: str | None) -> _Hub:
        endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
        return cls(endpoint or hf_constants.ENDPOINT, token or get_token())

    @property
    def auth(self) -> str | bool:
        return self.token or False


def hub_error(error: BaseException, name: str, hub: _Hub) -> CoreError:
    """A CoreError a user can act on for an error of `huggingface_hub` or its HTTP client."""
    status = None
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
    if isinstance(error, GatedRepoError) or status in (401, 403):
        if hub.token:
            return HubAuthRequired(
                f"{name} is gated/private and HF_TOKEN gives no access to it (HTTP {status}): "
                "request access on Hugging Face or use a token that has it"
            )
        return HubAuthRequired(
            f"{name} is gated/private (or does not exist): set HF_TOKEN to a Hugging Face "
            "token with access to it"
        )
    if isinstance(error, RepositoryNotFoundError):
        return ModelNotFound(f"{name} was not found on Hugging Face ({hub.endpoint})")
    if isinstance(error, RevisionNotFoundError | RemoteEntryNotFoundError):
        return ModelNotFound(f"{name}: {error}")
    if status == 429:
        return HubRateLimited(f"Hugging Face is rate-limiting requests for {name}; try later")
    if isinstance(error, HfHubHTTPError):
        return HubUnavailable(f"Hugging Face answered HTTP {status} for {name}: {error}")
    if isinstance(error, httpx2.HTTPError):
        return HubUnavailable(f"cannot reach {hub.endpoint} for {name}: {error}")
    if isinstance(error, OSError):
        return CoreError(f"cannot download {name}: {error}")
    return CoreError(f"cannot pull {name}: {error}")


class _ProgressHook:
    """A tqdm stand-in for `http_get`: stops the transfer once the pull is cancelled."""

    def __init__(self, cancelled: threading.Event, **_: Any) -> None:
        self._cancelled = cancelled

    def __enter__(self) -> _ProgressHook:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, _count: int | None = None) -> None:
        if self._cancelled.is_set():
            raise _Cancelled


class _Download:
    """The staged files of one pull, downloaded in worker threads and sampled for progress."""

    def __init__(
        self, hub: _Hub, repository: str, commit: str, stage: Path, files: list[RemoteFile]
    ) -> None:
        self.hub, self.repository, self.commit, self.stage = hub, repository, commit, stage
        self.files = files
        self.states = {file.path: "queued" for file in files}
        self.cancelled = threading.Event()

    def target(self, file: RemoteFile) -> Path:
        return self.stage.joinpath(*file.path.split("/"))

    def on_disk(self, file: RemoteFile) -> int:
        """Bytes of the file downloaded so far (finished or partial)."""
        target = self.target(file)
        for path in (target, target.with_name(target.name + ".incomplete")):
            with contextlib.suppress(OSError):
                return path.stat().st_size
        return 0

    def fetch(self, file: RemoteFile) -> None:
        """Download one file (blocking), resuming a partial one left by an earlier attempt."""
        target = self.target(file)
        if target.is_file() and target.stat().st_size == file.size:
            self.states[file.path] = "done"
            return
        self.states[file.path] = "downloading"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".incomplete")
        url = hf_hub_url(
            self.repository, file.path, revision=self.commit, endpoint=self.hub.endpoint
        )
        metadata = get_hf_file_metadata(
            url, token=self.hub.auth, timeout=METADATA_TIMEOUT, endpoint=self.hub.endpoint
        )
        headers = build_hf_headers(token=self.hub.auth)
        location = metadata.location or url
        if urlsplit(location).netloc != urlsplit(url).netloc:
            headers.pop("authorization", None)  # a signed CDN URL: the token stays with the Hub
        with partial.open("r+b" if partial.exists() else "wb") as handle:
            resume = handle.seek(0, os.SEEK_END)
            if resume > file.size:
                handle.seek(0)
                handle.truncate()
                resume = 0
            http_get(
                location,
                handle,
                resume_size=resume,
                headers=headers,
                expected_size=file.size,
                displayed_filename=file.path,
                tqdm_class=cast(Any, lambda **kwargs: _ProgressHook(self.cancelled, **kwargs)),
            )
        os.replace(partial, target)
        self.states[file.path] = "done"

    def discard(self, file: RemoteFile) -> None:
        """Forget a finished file whose content turned out wrong."""
        self.target(file).unlink(missing_ok=True)


@contextlib.contextmanager
def _stage_lock(directory: Path) -> Iterator[None]:
    """Hold `<directory>/.lock` so that two processes never write the same partial files."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class HuggingFaceSource:
    """Pulls Hugging Face repositories into the store, one download per model at a time."""

    def __init__(self, settings: Settings, store: ModelStore, bus: EventBus) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self._inflight: dict[str, asyncio.Task[StoredModel]] = {}
        self._listeners: dict[str, list[ProgressCallback]] = {}
        self._waiters: dict[str, int] = {}

    def staging_root(self, repository: str) -> Path:
        """Where the files of `org/repo` are downloaded before they become an artifact."""
        return self.settings.cache_dir / "huggingface" / repository.replace("/", "--")

    async def pull(
        self,
        reference: ModelReference,
        *,
        on_progress: ProgressCallback | None = None,
        token: str | None = None,
    ) -> StoredModel:
        """Pull the model (or find it stored under its tag) and return it.

        `token` overrides HF_TOKEN (DMR's CLI sends it as the request's bearer token). Progress,
        PullFinished and PullFailed go to `on_progress` (on the event loop) and to the bus; a new
        download first publishes PullStarted("resolving") on the bus (there is no queue here).
        A second pull of the same tag while one runs joins it.

        Raises:
            InvalidReference: The reference is not a Hugging Face one or pins a digest.
            HubAuthRequired: The repository is gated or private and the token gives no access.
            ModelNotFound: No such repository, or no file for the requested quant.
            HubUnavailable, HubRateLimited: The Hub failed.
        """
        if not reference.is_huggingface:
            raise InvalidReference(f"{reference.display} is not a Hugging Face (hf.co) model")
        if reference.digest is not None:
            raise InvalidReference("Hugging Face models are pulled by quant tag, not by digest")
        key = reference.stored
        listeners = self._listeners.setdefault(key, [])
        if on_progress is not None:
            listeners.append(on_progress)
        task = self._inflight.get(key)
        if task is None:
            self.bus.publish(PullStarted(reference.normalized, "resolving"))
            task = asyncio.ensure_future(self._pull(reference, token))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._finish(key))
        self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._waiters.get(key) == 1:
                task.cancel()  # the last one waiting gave up: stop the download, keep partials
            raise
        finally:
            self._waiters[key] = self._waiters.get(key, 1) - 1
            if on_progress is not None:
                with contextlib.suppress(ValueError):
                    listeners.remove(on_progress)

    async def cancel_all(self) -> None:
        """Stop every pull under way (staged files stay); their callers see a cancellation."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finish(self, key: str) -> None:
        self._inflight.pop(key, None)
        self._listeners.pop(key, None)
        self._waiters.pop(key, None)

    def _report(self, key: str, event: PullProgressEvent) -> None:
        for listener in list(self._listeners.get(key, [])):
            listener(event)
        self.bus.publish(event)

    async def _pull(self, reference: ModelReference, token: str | None) -> StoredModel:
        key, name = reference.stored, reference.normalized
        try:
            with contextlib.suppress(ModelNotFound):
                cached = await asyncio.to_thread(self.store.get, key)
                size = str(cached.config.get("size", "")) or format_size(cached.size_bytes)
                self._report(key, PullFinished(name, cached.id, cached=True, size=size))
                return cached
            model = await self._download_and_store(reference, _Hub.from_environment(token))
        except CoreError as error:
            self._report(key, PullFailed(name, error.message, error.status))
            raise
        except asyncio.CancelledError:
            self._report(key, PullFailed(name, "the pull was cancelled", CANCELLED_STATUS))
            raise
        except Exception as error:  # a bug or an OS error: the pull still ends where it shows
            self._report(key, PullFailed(name, str(error) or type(error).__name__))
            raise
        self._report(key, PullFinished(name, model.id, cached=False))
        self.bus.publish(ModelsChanged())
        return model

    async def _download_and_store(self, reference: ModelReference, hub: _Hub) -> StoredModel:
        repository = reference.repository
        name = f"hf.co/{repository}"
        try:
            commit, created, files = await asyncio.to_thread(_list_repository, hub, repository)
        except CoreError:
            raise
        except Exception as error:
            raise hub_error(error, name, hub) from error
        by_path = {file.path: file for file in files}
        selection = select_files(list(by_path), reference.tag, repository=name)
        chosen = [by_path[path] for path in selection.files]
        root = self.staging_root(repository)
        download = _Download(hub, repository, commit, root / commit, chosen)
        lock = _stage_lock(root)
        await asyncio.to_thread(lock.__enter__)
        try:
            await self._fetch_all(reference, download)
            artifact = await asyncio.to_thread(_build, download.stage, selection, created)
            self._check_digests(artifact, download, name)
            model = await asyncio.to_thread(self.store.write, artifact, [reference.stored])
        finally:
            await asyncio.to_thread(lock.__exit__, None, None, None)
        await asyncio.to_thread(shutil.rmtree, root, True)
        return model

    async def _fetch_all(self, reference: ModelReference, download: _Download) -> None:
        name = f"hf.co/{reference.repository}"
        gate = asyncio.Semaphore(PARALLEL_DOWNLOADS)

        async def fetch(file: RemoteFile) -> None:
            async with gate:
                await asyncio.to_thread(download.fetch, file)

        jobs = [asyncio.ensure_future(fetch(file)) for file in download.files]
        sampler = asyncio.ensure_future(self._sample(reference, download))
        try:
            await asyncio.gather(*jobs)
        except BaseException as error:
            download.cancelled.set()
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            if isinstance(error, CoreError | asyncio.CancelledError):
                raise
            if isinstance(error, Exception):
                raise hub_error(error, name, download.hub) from error
            raise
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        self._emit(reference, download, {}, final=True)

    async def _sample(self, reference: ModelReference, download: _Download) -> None:
        meters: dict[str, LayerMeter] = {}
        while True:
            self._emit(reference, download, meters, final=False)
            await asyncio.sleep(POLL_INTERVAL)

    def _emit(
        self,
        reference: ModelReference,
        download: _Download,
        meters: dict[str, LayerMeter],
        *,
        final: bool,
    ) -> None:
        total = sum(file.size for file in download.files)
        current = {file.path: min(download.on_disk(file), file.size) for file in download.files}
        pulled = sum(current.values())
        for file in download.files:
            meter = meters.get(file.path)
            if meter is None:
                meter = meters[file.path] = LayerMeter(file.size, current[file.path])
            meter.update(current[file.path])
            if not (final or meter.due()):
                continue
            meter.mark_emitted()
            state = "done" if final else download.states[file.path]
            event = PullProgressed(
                reference=reference.normalized,
                layer=file.layer_id,
                size=file.size,
                current=current[file.path],
                total=total,
                pulled=pulled,
                state=state,
                speed=meter.speed,
                average_speed=meter.average_speed,
                eta=meter.eta,
            )
            self._report(reference.stored, event)

    @staticmethod
    def _check_digests(artifact: Artifact, download: _Download, name: str) -> None:
        """Every LFS file must hash to the sha256 the Hub lists for it."""
        expected = {download.target(file): file for file in download.files if file.sha256}
        for layer in artifact.layers:
            file = expected.get(layer.path)
            if file is not None and layer.digest != f"sha256:{file.sha256}":
                download.discard(file)
                raise HubUnavailable(
                    f"{name}: {file.path} does not match the sha256 the Hub lists for it "
                    f"({layer.digest}); it was discarded, pull again"
                )


def _list_repository(hub: _Hub, repository: str) -> tuple[str, datetime, list[RemoteFile]]:
    """The commit `main` points at, its lastModified, and every file at that commit."""
    api = HfApi(endpoint=hub.endpoint, token=hub.auth)
    info = api.model_info(repository, revision="main")
    commit = info.sha or "main"
    created = info.last_modified or datetime.now(UTC)
    files = [
        RemoteFile(entry.path, entry.size, entry.lfs.sha256 if entry.lfs else None)
        for entry in api.list_repo_tree(repository, revision=commit, recursive=True)
        if isinstance(entry, RepoFile)
    ]
    return commit, created, files


def _build(stage: Path, selection: Selection, created: datetime) -> Artifact:
    if selection.format == "safetensors":
        return build_directory_artifact(stage, selection.files, created=created)

    def local(path: str | None) -> Path | None:
        return stage.joinpath(*path.split("/")) if path is not None else None

    return build_gguf_artifact(
        stage.joinpath(*selection.weights[0].split("/")),
        mmproj=local(selection.mmproj),
        chat_template=local(selection.chat_template),
        created=created,
    )
