"""MODEL_RUNNER_HOST gone wrong: malformed, unreachable, unresolvable, TLS to plain HTTP, a path,
no port, or another kind of server answering. Each is one line naming the host, no traceback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from modelrunner.server.cli.client import ApiClient, CliError, resolve_host
from modelrunner.server.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class OtherServer(ThreadingHTTPServer):
    """A plain HTTP server that is not modelrunner: every request gets `status` and `body`."""

    status = 200
    body = b'{"foo": 1}'
    content_type = "application/json"


class _Handler(BaseHTTPRequestHandler):
    server: OtherServer

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def other_server() -> Iterator[OtherServer]:
    server = OtherServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("http://[::1", "is not a valid URL"),
        (":::", "is not a valid URL"),
        ("ftp://127.0.0.1:12434", "scheme 'ftp'"),
        ("http://127.0.0.1:99999", "port 99999"),
        ("http://127.0.0.1:12434/v1", "root URL without a path"),
        ("http://127.0.0.1:12434/engines/v1/", "root URL without a path"),
        ("http://:12434", "no host name"),
        ("unix://", "no socket path"),
    ],
)
def test_a_malformed_host_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], host: str, words: str
) -> None:
    monkeypatch.setenv("MODEL_RUNNER_HOST", host)
    code, out, err = run_cli(capsys, "list")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"modelrunner: MODEL_RUNNER_HOST={host} ")
    assert words in err


def test_the_host_flag_is_named_when_it_is_the_bad_one(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--host", "ftp://x:1", "list")
    assert code == 1
    assert err.startswith("modelrunner: --host ftp://x:1 ")


def test_a_good_host_is_kept_as_written() -> None:
    assert resolve_host("http://127.0.0.1:12434/") == "http://127.0.0.1:12434"
    assert resolve_host("https://models.example") == "https://models.example"
    assert resolve_host(None, {"MODEL_RUNNER_HOST": "[::1]:12434"}) == "http://[::1]:12434"


def test_an_unresolvable_host_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_RUNNER_HOST", "http://nosuchhost.invalid:12434")
    code, _, err = run_cli(capsys, "list")
    assert code == 1
    assert err.count("\n") == 1
    assert "cannot resolve the host name 'nosuchhost.invalid'" in err
    assert "MODEL_RUNNER_HOST" in err


def test_https_to_a_plain_http_server_says_tls(
    other_server: OtherServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"https://127.0.0.1:{other_server.server_address[1]}"
    monkeypatch.setenv("MODEL_RUNNER_HOST", host)
    code, _, err = run_cli(capsys, "list")
    assert code == 1
    assert err.count("\n") == 1
    assert f"TLS handshake with {host} failed" in err
    assert "http://" in err  # the hint: the headless server speaks plain HTTP


def _refusing(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_a_host_without_a_port_says_which_port_was_tried() -> None:
    with (
        ApiClient("http://127.0.0.1", transport=httpx.MockTransport(_refusing)) as client,
        pytest.raises(CliError) as error,
    ):
        client.list_models()
    assert "http://127.0.0.1" in error.value.message
    assert "port 80" in error.value.message
    assert "12434" in error.value.message


def test_nothing_listening_names_the_host_and_how_to_start_the_server() -> None:
    with (
        ApiClient("http://127.0.0.1:5", transport=httpx.MockTransport(_refusing)) as client,
        pytest.raises(CliError) as error,
    ):
        client.list_models()
    assert error.value.message.startswith("cannot connect to modelrunner at http://127.0.0.1:5")
    assert "modelrunner-tui --headless" in error.value.message
    assert "port 80" not in error.value.message


@pytest.mark.parametrize(
    "argv",
    [["list"], ["list", "-q"], ["list", "--json"], ["updates"], ["rm", "x"], ["ps"], ["df"]],
)
def test_another_kind_of_server_is_named_not_a_traceback(
    other_server: OtherServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    host = f"http://127.0.0.1:{other_server.server_address[1]}"
    other_server.body = b'{"object": "list", "data": []}' if argv[0] != "df" else b"[1, 2]"
    monkeypatch.setenv("MODEL_RUNNER_HOST", host)
    code, out, err = run_cli(capsys, *argv)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert f"{host} does not answer like a modelrunner server" in err


def test_a_server_without_the_models_route_is_named(
    other_server: OtherServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ollama on 11434 answers 404 "404 page not found" to GET /models."""
    other_server.status, other_server.body = 404, b"404 page not found"
    other_server.content_type = "text/plain"
    host = f"http://127.0.0.1:{other_server.server_address[1]}"
    monkeypatch.setenv("MODEL_RUNNER_HOST", host)
    code, _, err = run_cli(capsys, "list")
    assert code == 1
    assert f"{host} does not answer like a modelrunner server" in err
    assert "404 page not found" in err


def test_an_html_error_page_is_summed_up_in_one_line(
    other_server: OtherServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A proxy in front of the server answers its own HTML page."""
    other_server.status, other_server.content_type = 502, "text/html"
    other_server.body = b"<html>\n<head><title>502 Bad Gateway</title></head>\n</html>"
    monkeypatch.setenv("MODEL_RUNNER_HOST", f"http://127.0.0.1:{other_server.server_address[1]}")
    code, _, err = run_cli(capsys, "inspect", "ai/x")
    assert code == 1
    assert err == "modelrunner: HTTP 502 Bad Gateway (an HTML page)\n"
