"""The llama-server sandbox: bubblewrap's command line, what it blocks, a real sandboxed chat."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from modelrunner.core.errors import RunnerFailed
from modelrunner.core.inference import sandbox
from modelrunner.core.inference.llama_server import LlamaServer, sandbox_paths
from modelrunner.core.inference.sandbox import (
    SandboxPaths,
    bwrap_argv,
    darwin_profile,
    find_bwrap,
    parse_switch,
    sandbox_environment,
    sandbox_tool,
)
from modelrunner.core.inference.upstream import UpstreamClient
from tests.inference.engine_fakes import FakeBundle

BASH = Path("/usr/bin/bash")


@pytest.fixture
def bwrap() -> Path:
    found = find_bwrap()
    if found is None:
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    return found


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 (the host's network namespace)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(2)
    yield server
    server.close()


def run_probe(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def probe_paths(model_dir: Path, runtime_dir: Path) -> SandboxPaths:
    """The paths a runner gets, with bash standing in for llama-server."""
    return SandboxPaths(binary=BASH, read_only=(model_dir,), writable=(runtime_dir,))


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    model_dir = tmp_path / "bundle" / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "model.gguf").write_text("GGUF weights")
    runtime_dir = tmp_path / "mr-runtime"
    runtime_dir.mkdir()
    return model_dir, runtime_dir


def test_tmpfs_comes_first_and_the_host_is_left_out(tmp_path: Path) -> None:
    paths = SandboxPaths(
        Path("/opt/llama/bin/llama-server"), (tmp_path / "model",), (tmp_path / "run",)
    )
    argv = bwrap_argv(Path("/usr/bin/bwrap"), ["llama-server", "-m", "x"], paths, environ={})
    assert argv[1:3] == ["--tmpfs", "/tmp"]
    assert argv[argv.index("--bind") + 1 : argv.index("--bind") + 3] == [str(tmp_path / "run")] * 2
    assert ["--ro-bind", str(tmp_path / "model"), str(tmp_path / "model")] == argv[
        argv.index(str(tmp_path / "model")) - 1 : argv.index(str(tmp_path / "model")) + 2
    ]
    for flag in ("--unshare-all", "--die-with-parent", "--clearenv", "--dev", "--proc"):
        assert flag in argv
    assert "--new-session" not in argv  # would put llama-server out of the SIGTERM's group
    assert "--share-net" not in argv
    assert str(Path.home()) not in argv
    assert argv[-4:] == ["--", "llama-server", "-m", "x"]


def test_the_environment_is_cleared_but_device_selection_passes() -> None:
    environment = sandbox_environment(
        {"HOME": "/root", "CUDA_VISIBLE_DEVICES": "1", "LLAMA_ARG_LOG_FILE": "/x", "AWS_KEY": "k"}
    )
    assert environment["HOME"] == "/tmp"
    assert environment["CUDA_VISIBLE_DEVICES"] == "1"
    assert "LLAMA_ARG_LOG_FILE" not in environment
    assert "AWS_KEY" not in environment


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_switch({}) is None
    assert parse_switch({"MODELRUNNER_SANDBOX": "1"}) is True
    assert parse_switch({"MODELRUNNER_SANDBOX": "off"}) is False
    with pytest.raises(RunnerFailed, match="MODELRUNNER_SANDBOX"):
        parse_switch({"MODELRUNNER_SANDBOX": "maybe"})
    assert sandbox_tool(False) is None
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    monkeypatch.setattr("sys.platform", "linux")
    assert sandbox_tool(None) is None  # automatic: run bare when bubblewrap cannot work
    with pytest.raises(RunnerFailed, match="bubblewrap"):
        sandbox_tool(True)


def test_runner_paths_cover_every_model_file_and_nothing_else(tmp_path: Path) -> None:
    model = tmp_path / "bundle" / "model"
    draft = tmp_path / "draft" / "model"
    bundle = FakeBundle(model.parent, model / "m.gguf", chat_template=model / "t.jinja")
    paths = sandbox_paths(
        Path("/bin/llama"), tmp_path / "run", bundle, FakeBundle(draft.parent, draft / "d.gguf")
    )
    assert paths.read_only == (model, draft)
    assert paths.writable == (tmp_path / "run",)


def test_the_macos_profile_denies_network_and_writes_and_allows_the_runner(
    tmp_path: Path,
) -> None:
    runtime = tmp_path / "mr-1-x"
    models = tmp_path / 'models "quoted"'
    profile = darwin_profile(
        SandboxPaths(Path("/opt/llama/bin/llama-server"), (models,), (runtime,))
    )
    assert profile.startswith("(version 1)\n")
    assert "(allow default)" in profile
    for rule in ("(deny network*)", "(deny file-write*)", "(deny job-creation)",
                 "(deny dynamic-code-generation)", "(deny file-map-executable)"):  # fmt: skip
        assert rule in profile
    assert '(global-name "com.apple.launchservicesd")' in profile
    assert f'(allow network-bind network-inbound\n    (subpath "{runtime.resolve()}"))' in profile
    assert (
        f'(allow file-write*\n    (literal "/dev/null")\n    (subpath "{runtime.resolve()}"))'
        in (profile)
    )
    assert '(subpath "/opt/llama/bin")' in profile
    assert '\\"quoted\\"' in profile  # string literals are escaped
    assert profile.count("(") == profile.count(")")


def test_a_tcp_connection_fails_inside_and_works_outside(
    bwrap: Path, listener: socket.socket, dirs: tuple[Path, Path]
) -> None:
    port = listener.getsockname()[1]
    connect = [str(BASH), "-c", f"echo hello > /dev/tcp/127.0.0.1/{port}"]
    inside = run_probe(bwrap_argv(bwrap, connect, probe_paths(*dirs)))
    assert inside.returncode != 0
    assert "connect" in inside.stderr  # bash ran and tried: the host's port is not there
    outside = run_probe(connect)
    assert outside.returncode == 0, outside.stderr
    accepted, _ = listener.accept()
    accepted.close()


def test_only_the_model_is_readable_and_only_the_runtime_dir_writable(
    bwrap: Path, dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, runtime_dir = dirs
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    in_home = Path.home() / "credentials"
    in_home.write_text("key")
    paths = probe_paths(model_dir, runtime_dir)

    def sandboxed(script: str) -> subprocess.CompletedProcess[str]:
        return run_probe(bwrap_argv(bwrap, [str(BASH), "-c", script], paths))

    assert sandboxed(f"cat {model_dir / 'model.gguf'}").stdout == "GGUF weights"
    assert sandboxed(f"cat {secret}").returncode != 0
    assert sandboxed(f"cat {in_home}").returncode != 0
    assert sandboxed("cat /etc/passwd").returncode != 0
    assert sandboxed(f"echo x > {model_dir / 'new'}").returncode != 0
    assert sandboxed(f"echo x > {runtime_dir / 'ok'}").returncode == 0
    assert (runtime_dir / "ok").read_text() == "x\n"
    assert sandboxed("echo $HOME").stdout.strip() == "/tmp"
    # The control: the same reads work without the sandbox.
    assert run_probe(["cat", str(secret)]).stdout == "top secret"
    assert run_probe(["cat", str(in_home)]).returncode == 0


@pytest.mark.llama
async def test_a_sandboxed_llama_server_answers_a_chat(
    bwrap: Path, llama_server: Path, tiny_gguf: Path
) -> None:
    server = LlamaServer(
        llama_server,
        FakeBundle(tiny_gguf.parent, tiny_gguf, config={"context_size": 256}),
        model_id="sha256:sandboxed",
        reference="ai/tiny",
        sandbox=True,
    )
    assert server.sandboxed
    assert server.command[0] == str(bwrap)
    assert server.command[server.command.index("--") + 1 :] == server.argv
    client = UpstreamClient()
    try:
        await server.start(ready_timeout=120)
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        response = await client.request(
            server, "POST", "/v1/chat/completions", json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            assert response.status == 200
            answer = json.loads(await response.read())
        finally:
            await response.aclose()
        assert answer["choices"][0]["message"]["role"] == "assistant"
        inner = [p for p in psutil.process_iter(["name", "cmdline"])
                 if p.info["name"] == "llama-server"
                 and str(server.socket_path) in (p.info["cmdline"] or [])]  # fmt: skip
        assert inner, "llama-server runs as a child of bwrap"
    finally:
        await client.close()
        await server.stop()
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in inner)
    assert not server.runtime_dir.exists()


def test_no_bwrap_means_an_unsandboxed_runner(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELRUNNER_SANDBOX", "0")
    bundle = FakeBundle(tmp_path, tmp_path / "m.gguf")
    server = LlamaServer(Path("/bin/true"), bundle, model_id="x", reference="x")
    try:
        assert not server.sandboxed
        assert server.command == server.argv
    finally:
        shutil.rmtree(server.runtime_dir, ignore_errors=True)
    assert os.environ["MODELRUNNER_SANDBOX"] == "0"
