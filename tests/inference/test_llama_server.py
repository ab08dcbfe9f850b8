"""LlamaServer: its command line, and supervising a fake llama-server: start, crash, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from modelrunner.core.errors import InvalidInput, RunnerFailed
from modelrunner.core.inference.llama_server import (
    LlamaServer,
    build_argv,
    failure_reason,
    load_stage,
    probe_health,
    sweep_stale_runtime_dirs,
)
from modelrunner.core.inference.process import OutputLog, ProcessState, SupervisedProcess
from modelrunner.core.settings import Settings
from tests.inference.engine_fakes import FakeBundle, process_gone, wait_until

SOCKET = Path("/tmp/mr-x/llama.sock")


# --- the command line -------------------------------------------------------------------------


def test_default_command_line_follows_dmr(bundle: FakeBundle) -> None:
    argv = build_argv(Path("/bin/llama-server"), bundle, SOCKET)
    assert argv == [
        "/bin/llama-server", "-ngl", "999", "--metrics", "--model", str(bundle.gguf),
        "--host", str(SOCKET), "--port", "0", "--jinja",
    ]  # fmt: skip


def test_template_context_size_and_projector_are_passed(bundle: FakeBundle, tmp_path: Path) -> None:
    template, mmproj = tmp_path / "template.jinja", tmp_path / "mmproj.gguf"
    full = FakeBundle(bundle.root, bundle.gguf, mmproj, template, {"context_size": 4096})
    argv = build_argv(Path("llama-server"), full, SOCKET)
    tail = argv[argv.index("--port") + 2 :]
    # A model with a projector gets --mmproj and, as in DMR, no --jinja.
    assert tail == [
        "--chat-template-file",
        str(template),
        "--ctx-size",
        "4096",
        "--mmproj",
        str(mmproj),
    ]


@pytest.mark.parametrize("context_size", [None, 0, -2, "4096", True])
def test_unusable_context_sizes_are_left_out(bundle: FakeBundle, context_size: object) -> None:
    odd = FakeBundle(bundle.root, bundle.gguf, config={"context_size": context_size})
    assert "--ctx-size" not in build_argv(Path("llama-server"), odd, SOCKET)


def test_llama_args_replace_the_defaults(bundle: FakeBundle) -> None:
    argv = build_argv(Path("llama-server"), bundle, SOCKET, ("-ngl", "0", "--threads", "2"))
    assert argv[1:5] == ["-ngl", "0", "--threads", "2"]
    assert "--metrics" not in argv


def test_llama_args_from_the_environment_are_split_and_used(
    tmp_path: Path, bundle: FakeBundle
) -> None:
    settings = Settings.load(
        {
            "LLAMA_ARGS": "--temp 0.5 --chat-template 'chatml'",
            "MODELRUNNER_CONFIG": str(tmp_path / "x"),
        }
    )
    argv = build_argv(Path("llama-server"), bundle, SOCKET, settings.llama_args)
    assert argv[1:5] == ["--temp", "0.5", "--chat-template", "chatml"]


def test_a_context_size_in_llama_args_wins_over_the_packaged_one(bundle: FakeBundle) -> None:
    sized = FakeBundle(bundle.root, bundle.gguf, config={"context_size": 4096})
    argv = build_argv(Path("llama-server"), sized, SOCKET, ("--ctx-size=512",))
    assert argv.count("--ctx-size") == 0
    assert "--ctx-size=512" in argv


@pytest.mark.parametrize(
    "flag",
    [
        "--model",
        "-m",
        "--model=x.gguf",
        "--host",
        "--port",
        "--port=8080",
        "--embeddings",
        "--mmproj",
    ],
)
def test_llama_args_may_not_set_what_we_set(bundle: FakeBundle, flag: str) -> None:
    with pytest.raises(InvalidInput, match="LLAMA_ARGS"):
        build_argv(Path("llama-server"), bundle, SOCKET, ("-ngl", "0", flag))


def test_the_socket_path_is_short_enough_for_af_unix(
    fake_llama_server: Path, bundle: FakeBundle
) -> None:
    server = LlamaServer(fake_llama_server, bundle, model_id="sha256:abc", reference="ai/x")
    try:
        assert len(os.fsencode(server.socket_path)) < 100
        assert server.has_metrics
    finally:
        server.runtime_dir.rmdir()


# --- supervision against the fake server ----------------------------------------------------


def fake_server(binary: Path, bundle: FakeBundle, *flags: str, **kwargs: object) -> LlamaServer:
    states: list[ProcessState] = []
    server = LlamaServer(
        binary,
        bundle,
        model_id="sha256:abc",
        reference="ai/fake",
        llama_args=("-ngl", "0", *flags),
        on_state=lambda _, state: states.append(state),
        **kwargs,  # type: ignore[arg-type]
    )
    server.states = states  # type: ignore[attr-defined]
    return server


async def test_starts_serves_health_and_stops_cleanly(
    fake_llama_server: Path, bundle: FakeBundle, tmp_path: Path
) -> None:
    log = tmp_path / "state" / "logs" / "runner.log"
    server = fake_server(fake_llama_server, bundle, "--fake-start-delay", "0.3", log_file=log)
    await server.start(ready_timeout=30)
    try:
        assert server.ready
        assert await probe_health(server.socket_path)
        pid = server.pid
        assert pid is not None
        assert not process_gone(pid)
    finally:
        status = await server.stop()
    assert status == 0
    assert process_gone(pid)
    assert not server.runtime_dir.exists()
    assert server.states == [  # type: ignore[attr-defined]
        ProcessState.STARTING,
        ProcessState.READY,
        ProcessState.STOPPING,
        ProcessState.STOPPED,
    ]
    assert "--model" in log.read_text()  # the fake echoes its argv to stderr


async def test_a_crash_before_ready_raises_with_the_output_tail(
    fake_llama_server: Path, bundle: FakeBundle
) -> None:
    server = fake_server(fake_llama_server, bundle, "--fake-crash")
    with pytest.raises(RunnerFailed, match=r"status 3(.|\n)*fake crash while loading"):
        await server.start(ready_timeout=30)
    assert ProcessState.FAILED in server.states  # type: ignore[attr-defined]
    assert server.pid is None
    assert not server.runtime_dir.exists()


async def test_a_server_that_never_gets_ready_times_out_and_is_stopped(
    fake_llama_server: Path, bundle: FakeBundle
) -> None:
    server = fake_server(fake_llama_server, bundle, "--fake-start-delay", "60")
    with pytest.raises(RunnerFailed, match=r"not ready after 0\.5 s"):
        await server.start(ready_timeout=0.5)
    assert server.pid is None
    assert server.process.returncode is not None


async def test_sigterm_ignored_means_sigkill_after_the_grace(
    fake_llama_server: Path, bundle: FakeBundle
) -> None:
    server = fake_server(fake_llama_server, bundle, "--fake-ignore-sigterm")
    await server.start(ready_timeout=30)
    pid = server.pid
    assert pid is not None
    assert await server.stop(grace=0.2) == -signal.SIGKILL
    assert process_gone(pid)


async def test_a_crash_after_ready_is_noticed_without_polling(
    fake_llama_server: Path, bundle: FakeBundle
) -> None:
    server = fake_server(fake_llama_server, bundle)
    await server.start(ready_timeout=30)
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    await wait_until(lambda: server.state is ProcessState.FAILED)
    assert not server.ready
    assert await server.stop() == -signal.SIGKILL


async def test_a_missing_binary_is_a_runner_failure(tmp_path: Path, bundle: FakeBundle) -> None:
    server = fake_server(tmp_path / "no-such-llama-server", bundle)
    with pytest.raises(RunnerFailed, match="cannot start"):
        await server.start(ready_timeout=5)
    assert not server.runtime_dir.exists()


def test_socket_dirs_of_dead_owners_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f"mr-{dead.stdout.strip()}-abc"
    live = tmp_path / f"mr-{os.getpid()}-def"
    unrelated = tmp_path / "mr-notapid"
    for directory in (stale, live, unrelated):
        directory.mkdir()
    (stale / "llama.sock").touch()
    assert sweep_stale_runtime_dirs(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])


@pytest.mark.parametrize(
    ("line", "stage"),
    [
        ("0.00.005.383 I srv    load_model: loading model '/b/model.gguf'", "loading the model"),
        ("0.00.382.680 I cmn          init: llama threadpool init, n_threads = 2", "initialising"),
        ("0.00.437.536 I srv  llama_server: model loaded", "model loaded"),
        ("0.00.437.568 I srv  llama_server: listening on unix:///tmp/x/llama.sock", "listening"),
        ("0.09.329.225 I slot print_timing: id  3 | task 0 | prompt eval time", None),
    ],
)
def test_load_stages_are_read_from_llama_servers_output(line: str, stage: str | None) -> None:
    assert load_stage(line) == stage


LOAD_FAILURE = """\
warning: no usable GPU found, --gpu-layers option will be ignored
0.00.003.031 I srv  llama_server: initializing ...
0.00.007.800 E llama_model_load: error loading model: key general.x has wrong type
0.00.007.825 E llama_model_load_from_file_impl: failed to load model
0.00.008.094 E llama_model_load: error loading model: key general.x has wrong type
0.00.008.145 E srv    load_model: failed to load model, '/m/model.gguf'
0.00.008.491 E srv  llama_server: exiting due to model loading error""".splitlines()


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (
            LOAD_FAILURE,
            "llama_model_load: error loading model: key general.x has wrong type; "
            "llama_model_load_from_file_impl: failed to load model",
        ),
        (["starting", "", "Segmentation fault"], "starting / Segmentation fault"),
        (
            ['error while handling argument "--threads": stoi', "", "usage:", "-t, --threads N"],
            'error while handling argument "--threads": stoi',
        ),
        ([], "it wrote nothing"),
    ],
)
def test_failure_reason_is_the_error_lines_else_the_last_lines(
    lines: list[str], reason: str
) -> None:
    assert failure_reason(lines) == reason


def test_a_runners_output_file_stays_bounded_across_loads(tmp_path: Path) -> None:
    """One file per model and mode is appended to at every load: past its cap it becomes
    `<name>.1` (one generation kept), at once or at the next load."""
    path = tmp_path / "logs" / "llama-server-abc.log"
    log = OutputLog(10, path, max_file_bytes=1000)
    for index in range(30):
        log.append(f"line {index:03d} " + "x" * 40)  # 50 bytes a line with its newline
    log.close()
    rotated = path.with_name(path.name + ".1")
    assert rotated.read_text().splitlines()[-1].startswith("line 020")
    assert path.read_text().splitlines() == [f"line {i:03d} " + "x" * 40 for i in range(21, 30)]
    assert log.tail(2) == [f"line {i:03d} " + "x" * 40 for i in (28, 29)]
    path.write_text("y" * 2000)  # grown past the cap by an older version: rotated at open
    reopened = OutputLog(10, path, max_file_bytes=1000)
    reopened.append("fresh")
    reopened.close()
    assert rotated.read_text() == "y" * 2000
    assert path.read_text() == "fresh\n"


async def test_a_line_past_the_read_limit_is_passed_on_in_pieces_and_reading_goes_on() -> None:
    # A 3 MiB line (a verbose llama-server printing a long prompt) once ended the reader: the
    # pipe filled up and the child blocked on its next write, forever.
    script = (
        "import sys; out = sys.stdout.buffer; out.write(b'x' * (3 << 20) + b'\\n');"
        "out.write(b'\\xff\\xfe not utf-8\\n');"
        "[out.write(b'filler %d\\n' % i) for i in range(20000)]; out.write(b'the end\\n')"
    )
    lines: list[str] = []
    process = SupervisedProcess(
        [sys.executable, "-c", script], log=OutputLog(10, on_line=lines.append)
    )
    await process.start()
    try:
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        await process.stop(grace=0.1)
    pieces = lines.index("\ufffd\ufffd not utf-8")
    assert pieces > 1
    assert "".join(lines[:pieces]) == "x" * (3 << 20)
    assert lines[pieces + 1 :] == [f"filler {i}" for i in range(20000)] + ["the end"]
