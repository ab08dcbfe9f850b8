"""ModelRunner: the one facade both front ends (the TUI and the HTTP API) hold.

Everything a front end does goes through here: store operations (run in a worker thread, since they
hash and copy files), loading models into llama-server processes, proxying OpenAI requests to them,
and streaming chat. State changes come back as events from `subscribe()`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelrunner.core.distribution.progress import PullProgressEvent
from modelrunner.core.distribution.pull import Puller, PullStatus
from modelrunner.core.distribution.push import PushProgress, PushResult
from modelrunner.core.distribution.registry import RegistryClient
from modelrunner.core.errors import CoreError, InvalidInput, ModelNotFound
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import (
    Event,
    ModelsChanged,
    RunnerEvicted,
    SystemSampled,
)
from modelrunner.core.inference.argument_check import check_arguments
from modelrunner.core.inference.configure import ConfigEntry, ConfigureRequest, apply_configure
from modelrunner.core.inference.llama_build import resolve_llama_server
from modelrunner.core.inference.metrics import EngineMetrics, exposition, model_label
from modelrunner.core.inference.modes import COMPLETION, mode_for_path
from modelrunner.core.inference.pool import RunnerInfo, RunnerPool
from modelrunner.core.inference.sandbox import sandbox_tool
from modelrunner.core.inference.scheduler import EvictionPreview
from modelrunner.core.inference.upstream import UpstreamResponse
from modelrunner.core.log_stream import stream_logs
from modelrunner.core.references import parse_reference
from modelrunner.core.seeding import seed_default_model
from modelrunner.core.settings import Settings
from modelrunner.core.store import fsck as store_fsck
from modelrunner.core.store import housekeeping, updates
from modelrunner.core.store.export_stream import stream_export
from modelrunner.core.store.store import ModelStore, StoredModel
from modelrunner.core.system.gpu import GpuSample
from modelrunner.core.system.host import HostSample

if TYPE_CHECKING:
    from modelrunner.core.distribution.huggingface import HuggingFaceSource

log = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"


class ModelRunner:
    """Stored models, running models, and conversations with them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.models_path)
        self.bus = EventBus()
        self.pool = RunnerPool(settings, self.store, self.bus)
        self.registry = RegistryClient(settings)
        """The one OCI registry client: its sessions and tokens are shared by pulls and pushes."""
        self.puller = Puller(settings, self.store, self.bus, lambda: self.registry)
        self._huggingface: HuggingFaceSource | None = None
        self.metrics = EngineMetrics()
        """modelrunner's own Prometheus series, merged with every runner's in metrics_text()."""
        self._seeding: asyncio.Task[StoredModel | None] | None = None
        self._counting: asyncio.Task[None] | None = None
        self._warming: asyncio.Task[None] | None = None
        self._started = False
        self._streams_ending = asyncio.Event()
        """Set by end_streams: followed logs end instead of waiting for new lines."""

    async def start(self) -> None:
        """Open the store; import the default model in the background if the store is empty."""
        if self._started:
            return
        self._started = True
        self._streams_ending.clear()
        await asyncio.to_thread(self.store.list)
        self._counting = asyncio.create_task(self._count_events(self.bus.subscribe()))
        self._warming = asyncio.create_task(self._warm_up())
        await self.puller.resume_pending()
        if self.settings.seed_default_model:
            self._seeding = asyncio.create_task(self.ensure_default_model())

    async def stop(self) -> None:
        """Stop every llama-server; safe to call more than once."""
        if self._seeding is not None and not self._seeding.done():
            self._seeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._seeding
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        await self.puller.close()
        await self.pool.close()
        if self._counting is not None:
            self._counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counting
        await self.registry.close()
        self._started = False

    def subscribe(self) -> AsyncIterator[Event]:
        """Events published from now on (engine builds, runner states, store changes)."""
        return self.bus.subscribe()

    # -- the store -------------------------------------------------------------------------

    async def list_models(self) -> list[StoredModel]:
        """Every stored model."""
        return await asyncio.to_thread(self.store.list)

    async def get_model(self, reference: str) -> StoredModel:
        """The model a tag, digest, ID or ID prefix names."""
        return await asyncio.to_thread(self.store.get, reference)

    async def find_model(self, reference: str) -> StoredModel:
        """Like get_model, then DMR's fallback: the one model whose repository ends in the name."""
        return await asyncio.to_thread(self.store.find, reference)

    async def tag_model(self, source: str, target: str) -> str:
        """Give a stored model another tag; returns the tag as stored."""
        stored = await asyncio.to_thread(self.store.tag, source, target)
        self.bus.publish(ModelsChanged())
        return stored

    async def remove_model(self, reference: str, *, force: bool = False) -> list[dict[str, str]]:
        """Untag or delete a model with DMR's semantics; unloads it first when deleted."""
        model = await self.get_model(reference)
        result = await asyncio.to_thread(self.store.remove, reference, force=force)
        if any("Deleted" in entry for entry in result):
            await self.pool.unload([model.id])
        self.bus.publish(ModelsChanged())
        return result

    async def purge(self) -> None:
        """Delete every model (DMR's DELETE /models/purge): pulls are cancelled and every runner
        is stopped first, busy or not, since their files are about to go.

        Raises:
            CoreError: 500 "error while purging models: …" (e.g. the store root holds no
                layout.json, which DMR also refuses to wipe).
        """
        for pull in self.puller.active():
            await self.puller.cancel(pull.reference)
        if self._huggingface is not None:
            await self._huggingface.cancel_all()
        await self.pool.unload(None, include_busy=True)
        try:
            await asyncio.to_thread(self.store.reset)
        except CoreError as error:
            log.warning("failed to purge models: %s", error.message)
            raise CoreError(f"error while purging models: {error.message}") from error
        finally:
            self.bus.publish(ModelsChanged())
        log.info("purged the model store at %s", self.store.root)

    async def package_model(
        self,
        gguf: Path,
        reference: str,
        *,
        mmproj: Path | None = None,
        chat_template: Path | None = None,
        context_size: int | None = None,
        licenses: Sequence[Path] = (),
    ) -> StoredModel:
        """Store a local GGUF (with its shards, mmproj, template, licenses) under a tag."""
        tag = parse_reference(reference).normalized
        model = await asyncio.to_thread(
            self.store.package_gguf,
            gguf,
            tag,
            mmproj=mmproj,
            chat_template=chat_template,
            context_size=context_size,
            licenses=licenses,
        )
        self.bus.publish(ModelsChanged())
        return model

    async def load_archive(self, chunks: AsyncIterator[bytes]) -> str:
        """Store a model from DMR's export tarball (POST /models/load); returns its ID."""
        self.settings.models_path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.settings.models_path) as spool:
            async for chunk in chunks:
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            model_id = await asyncio.to_thread(self.store.load_archive, spool)
        self.bus.publish(ModelsChanged())
        return model_id

    async def export_model(self, reference: str) -> AsyncIterator[bytes]:
        """DMR's export tarball of a model (GET /models/{name}/export), produced as it is read.

        The model is resolved (ModelNotFound, InvalidReference) before this returns, so an error
        can still be answered with a status; the bytes are then written by a thread, a bounded
        number of chunks ahead of the reader, and never held whole in memory.
        """
        export = await asyncio.to_thread(self.store.open_export, reference)
        return stream_export(export)

    async def repackage_model(
        self, source: str, target: str, *, context_size: int | None
    ) -> StoredModel:
        """DMR's repackage: the source with a new context size, layers shared, tagged target."""
        model = await asyncio.to_thread(
            self.store.repackage, source, target, context_size=context_size
        )
        self.bus.publish(ModelsChanged())
        return model

    async def ensure_default_model(self) -> StoredModel | None:
        """Import the default model into an empty store; None when not wanted or not known."""
        return await seed_default_model(self)

    # -- engine configuration and metrics ----------------------------------------------------

    async def configure(self, request: ConfigureRequest) -> None:
        """DMR's _configure: context size, runtime flags, speculative draft, keep_alive, mode.

        Then, as DMR, the model's completion runner (what a chat request uses, whatever mode
        was configured) loads in the background; the answer does not wait for it, and a
        failure is logged and published (`PreloadFailed`).

        Raises:
            InvalidInput: a flag outside the allowlist, a bad value (400).
            ModelNotFound: the model or its draft is not stored (404).
            Conflict: the model's runner is busy (409).
        """
        model_id = await self._model_id(request.model)
        await self._check_runtime_flags(request.config.runtime_flags)
        await apply_configure(
            request, resolve=self._model_id, pool=self.pool, configs=self.pool.configs
        )
        self.pool.preload(model_id, COMPLETION)

    async def _check_runtime_flags(self, flags: Sequence[str]) -> None:
        """Let llama-server's parser refuse bad values (`--threads x`) before they are stored;
        without a binary yet (none built) the runner's start says it instead."""
        if not flags:
            return
        try:
            binary = await asyncio.to_thread(resolve_llama_server, self.settings)
        except CoreError:
            return  # a bad LLAMA_SERVER_PATH: every start reports it
        if binary is not None:
            await check_arguments(binary.path, flags)

    async def configurations(self, reference: str | None = None) -> list[ConfigEntry]:
        """Stored _configure entries (of one model, or all), skipping models no longer stored."""
        model_id = None if reference is None else await self._model_id(reference)
        stored = {model.id for model in await self.list_models()}
        return [e for e in self.pool.configs.entries(model_id) if e.model_id in stored]

    async def forget_configs(self, references: Sequence[str] | None = None) -> int:
        """Drop stored _configure entries (all when None); returns how many went."""
        ids = None if references is None else [await self._model_id(r) for r in references]
        return self.pool.configs.forget(ids)

    async def metrics_text(self) -> str:
        """One Prometheus exposition: every ready runner's llamacpp:* series with a model
        label, and ours (requests, latency, tokens/s, loads, evictions, runner states)."""
        infos = self.pool.running()
        runners = [r for i in infos if (r := self.pool.get(i.model_id, i.mode)) is not None]
        states = collections.Counter(info.state for info in infos)
        waiting = {(model_label(info.reference), info.mode): info.waiting for info in infos}
        return await exposition(self.pool.upstream, runners, self.metrics, states, waiting)

    async def _warm_up(self) -> None:
        """Find llama-server and probe the sandbox now, so the first request does not wait.

        Nothing is built here: without a binary, the first request builds it (with progress).
        """
        try:
            if await asyncio.to_thread(resolve_llama_server, self.settings) is not None:
                await self.pool.engine()
            await asyncio.to_thread(sandbox_tool, self.settings.sandbox)
        except CoreError as error:  # the first request reports it where someone sees it
            log.info("warm-up: %s", error.message)

    async def _model_id(self, reference: str) -> str:
        return (await self.find_model(reference)).id

    async def _count_events(self, events: AsyncIterator[Event]) -> None:
        """Feed the metrics from the core's events for the runner's life."""
        async for event in events:
            self.metrics.on_event(event)
            if isinstance(event, RunnerEvicted):
                model = model_label(event.reference)
                self.metrics.observe_eviction(model, event.reason, event.mode)

    # -- distribution ----------------------------------------------------------------------

    async def pull(
        self,
        reference: str,
        *,
        on_progress: Callable[[PullProgressEvent], None] | None = None,
        token: str | None = None,
    ) -> StoredModel:
        """Pull a model from its OCI registry or from Hugging Face (hf.co/...), verified.

        A second pull of the same model joins the first. A new pull publishes PullStarted on the
        bus before any network I/O ("queued" while it waits for a slot, then "resolving");
        progress and the outcome are published on the bus and given to `on_progress`. `token`
        is a Hugging Face token (DMR's "bearer-token").
        """
        ref = parse_reference(reference)
        if ref.is_huggingface:
            return await self.huggingface().pull(ref, on_progress=on_progress, token=token)
        return await self.puller.pull(ref.normalized, on_progress=on_progress)

    def huggingface(self) -> HuggingFaceSource:
        """The Hugging Face source, made on first use (huggingface_hub takes 0.5 s to import)."""
        if self._huggingface is None:
            from modelrunner.core.distribution.huggingface import HuggingFaceSource

            self._huggingface = HuggingFaceSource(self.settings, self.store, self.bus)
        return self._huggingface

    def pulls(self) -> list[PullStatus]:
        """The registry pulls under way."""
        return self.puller.active()

    async def cancel_pull(self, reference: str) -> bool:
        """Stop a pull; its verified partial blobs stay for the next attempt."""
        return await self.puller.cancel(parse_reference(reference).normalized)

    async def push(
        self,
        reference: str,
        target: str | None = None,
        *,
        on_progress: Callable[[PushProgress], None] | None = None,
    ) -> PushResult:
        """Push a stored model to its registry (or to `target`), byte for byte."""
        await self.get_model(reference)
        destination = parse_reference(target) if target else None
        return await self.registry.push_model(
            self.store, reference, destination, on_progress=on_progress
        )

    async def login(self, registry: str, username: str, password: str) -> None:
        """Check credentials against a registry, then keep them for later pulls and pushes."""
        await self.registry.login(registry, username, password)

    async def logout(self, registry: str) -> bool:
        """Forget a registry's saved credentials; False when there were none."""
        return await self.registry.logout(registry)

    # -- inference -------------------------------------------------------------------------

    async def engine_status(self) -> str:
        """DMR-style status of the llama.cpp backend: "Running: llama.cpp <version>" or why not."""
        binary = await asyncio.to_thread(resolve_llama_server, self.settings)
        if binary is None:
            return "Not Installed: llama-server will be built on first use"
        return f"Running: llama.cpp {binary.version}"

    async def ensure_engine(self) -> str:
        """Find or build llama-server now (instead of on the first request); returns its path."""
        binary = await self.pool.engine()
        return str(binary.path)

    async def forward(
        self,
        reference: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        keep_alive: float | None = None,
    ) -> UpstreamResponse:
        """Send one OpenAI-style request to the model's llama-server, loading it first if needed.

        The request holds a slot of the runner (so it is never evicted under it) until the
        caller closes the returned response, which it must do.

        The path chooses the runner's mode, as in DMR: /v1/embeddings goes to the model's
        embedding runner, /rerank and /score to its reranking one, the rest to completion.

        Args:
            path: What llama-server is asked, e.g. "/v1/chat/completions".
            keep_alive: Seconds the model stays loaded once idle (0: unload after this
                request, negative: never); None keeps the runner's setting.

        Raises:
            InvalidInput: No runner mode serves `path`.
        """
        mode = _upstream_mode(path)
        lease = await self.pool.checkout(reference, mode=mode, keep_alive=keep_alive)
        try:
            response = await self.pool.upstream.request(lease.runner, "POST", path, body, headers)
        except BaseException:
            lease.release()
            raise
        started = time.monotonic()
        model = lease.runner.reference

        def finished() -> None:
            lease.release()
            seconds = time.monotonic() - started
            self.metrics.observe_request(model, response.status, seconds, mode=mode)

        response.on_close = finished
        return response

    async def load(
        self, reference: str, path: str = "/v1/chat/completions", *, keep_alive: float | None = None
    ) -> None:
        """Load the model's runner for `path` and return once it is ready, asking it nothing
        (DMR's `X-Preload-Only: true`, sent by `docker model run` before its first prompt).

        Raises:
            InvalidInput: No runner mode serves `path`.
        """
        mode = _upstream_mode(path)
        lease = await self.pool.checkout(reference, mode=mode, keep_alive=keep_alive)
        lease.release()

    async def chat(
        self, reference: str, messages: list[dict[str, Any]], **options: Any
    ) -> AsyncIterator[str]:
        """Stream the assistant's answer to a conversation, as text deltas.

        A conversation without a system message gets settings.system_prompt first; options
        (temperature, max_tokens, ...) override settings.chat_options.
        """
        if self.settings.system_prompt and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": self.settings.system_prompt}, *messages]
        payload: dict[str, Any] = {
            **self.settings.chat_options,
            **options,
            "model": reference,
            "messages": messages,
        }
        started = time.monotonic()
        first: float | None = None
        count = 0
        status = 500
        model = model_label(reference)
        try:
            async with self.pool.lease(reference) as runner:
                model = runner.reference
                async for delta in self.pool.upstream.chat_deltas(runner, payload):
                    first = first or time.monotonic()
                    count += 1
                    yield delta
            status = 200
        finally:
            ended = time.monotonic()
            self.metrics.observe_request(
                model, status, ended - started, None if first is None else first - started
            )
            if first is not None:
                self.metrics.observe_generation(model, count, ended - first)

    async def preview(self, reference: str) -> EvictionPreview:
        """What loading a model would do now: start it, which idle runners it would stop, or why
        it cannot ("loading X would stop Y and Z, needs 1.2 GB, 3.4 GB free")."""
        return await self.pool.preview(reference)

    async def readings(self) -> tuple[HostSample, GpuSample]:
        """CPU, RAM and GPUs now, with each runner's processes and GPU memory attributed."""
        pids = {info.pid: info.key.label for info in self.pool.running() if info.pid is not None}
        host = await self.pool.host.read(list(pids))
        gpus = await self.pool.gpu.read(pids)
        return host, gpus

    # -- system readings (the TUI's gauges) ------------------------------------------------

    async def sample_system(self, interval: float = 1.0) -> AsyncIterator[SystemSampled]:
        """Read CPU, RAM and GPUs every `interval` seconds for as long as the caller iterates.

        Each sample is published on the bus and yielded. Nothing is read while nobody samples,
        so the headless API pays nothing for the TUI's gauges.
        """
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            host, gpus = await self.readings()
            sample = SystemSampled(host, gpus)
            self.bus.publish(sample)
            yield sample
            # A fixed cadence; after a long pause (a slow consumer) it restarts from now.
            due = max(due + interval, loop.time())
            await asyncio.sleep(due - loop.time())

    def running(self) -> list[RunnerInfo]:
        """The llama-server processes that are loaded or loading."""
        return self.pool.running()

    async def unload(
        self, references: Sequence[str] | None = None, *, include_busy: bool = True
    ) -> int:
        """Stop the runners of some models, in every mode (all when None); returns how many
        stopped.

        With `include_busy=False` (DMR's POST /engines/unload) runners serving a request are
        left alone, and a name that matches no stored model counts as nothing to unload.
        """
        if references is None:
            return await self.pool.unload(None, include_busy=include_busy)
        ids = []
        for reference in references:
            try:
                ids.append((await self.get_model(reference)).id)
            except ModelNotFound:
                if include_busy:
                    raise
        return await self.pool.unload(ids, include_busy=include_busy)

    # -- housekeeping (core/store/housekeeping.py, fsck.py, updates.py) ---------------------

    def logs(self, *, follow: bool, engines: bool = True) -> AsyncGenerator[bytes, None]:
        """GET /logs: the service and engine logs merged by time; new lines too with `follow`.

        Raises:
            LogNotFound: There is no service log (checked now, before anything is streamed).
            LogsUnavailable: Log files are turned off (no log directory).
        """
        return stream_logs(
            self.settings.log_dir, follow=follow, engines=engines, until=self._streams_ending
        )

    def end_streams(self) -> None:
        """End every followed log (at shutdown: its client would otherwise keep the server up)."""
        self._streams_ending.set()

    async def disk_usage(self) -> housekeeping.DiskUsage:
        """The store's and the engine's disk usage, each file counted once (GET /engines/df)."""
        from modelrunner.core.inference.llama_build import install_dir

        engine_dir = install_dir(self.settings).parent
        return await asyncio.to_thread(housekeeping.disk_usage, self.store, engine_dir)

    async def prune(
        self, *, dry_run: bool, older_than: float | None = None
    ) -> housekeeping.PruneReport:
        """Free unreferenced blobs, stale partials, orphans and temp files (or list them).

        Blobs of pulls under way are kept; `older_than` is in seconds (None: 7 days, 0: all).
        """
        keep = {layer.layer for pull in self.puller.active() for layer in pull.layers}
        report = await asyncio.to_thread(
            housekeeping.prune, self.store, dry_run=dry_run, older_than=older_than, keep=keep
        )
        if not dry_run and any(item.kind == "manifest" for item in report.items):
            self.bus.publish(ModelsChanged())
        return report

    async def fsck(self, *, repair: bool = False) -> store_fsck.FsckReport:
        """Re-hash every blob and manifest; report problems, or repair what can be repaired."""
        report = await asyncio.to_thread(store_fsck.fsck, self.store, repair=repair)
        if repair and not report.ok:
            self.bus.publish(ModelsChanged())
        return report

    async def check_updates(self) -> list[updates.UpdateStatus]:
        """For each registry tag: "update available", "up to date" or "unreachable: …"."""
        return await updates.check_updates(self.store, self.registry)


def _upstream_mode(path: str) -> str:
    """The runner mode serving an upstream path ("/v1/embeddings" -> embedding).

    Raises:
        InvalidInput: The path is not absolute, or no mode serves it.
    """
    if not path.startswith("/"):
        raise InvalidInput(f"invalid upstream path {path!r}")
    return mode_for_path(path)
