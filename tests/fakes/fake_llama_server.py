"""A stand-in for llama-server: /health and streamed /v1/chat/completions, Unix socket or TCP."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

from aiohttp import web


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fake-llama-server")
    parser.add_argument("--model", "-m", default="")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--version", action="store_true")
    parser.add_argument(
        "--fake-start-delay", type=float, default=0.0, help="seconds of 503 on /health"
    )
    parser.add_argument("--fake-crash", action="store_true", help="exit 3 during loading")
    parser.add_argument("--fake-ignore-sigterm", action="store_true")
    parser.add_argument("--fake-reply", default="Hello from the fake server.")
    parser.add_argument("--fake-pid-file", default="")
    args, _unknown = parser.parse_known_args(argv)
    return args


def sse(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def make_app(args: argparse.Namespace, ready_at: float) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        if time.monotonic() < ready_at:
            return web.json_response(
                {"error": {"message": "Loading model", "code": 503}}, status=503
            )
        return web.json_response({"status": "ok"})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            error = {
                "code": 400,
                "message": "'messages' must be a non-empty list",
                "type": "invalid_request_error",
            }
            return web.json_response({"error": error}, status=400)
        last = str(messages[-1].get("content", ""))
        if last == "fail mid-stream":
            words: list[str] = ["partial"]
        else:
            words = args.fake_reply.split(" ")
        if not body.get("stream"):
            message = {"role": "assistant", "content": " ".join(words)}
            return web.json_response(
                {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index, word in enumerate(words):
            text = word if index == 0 else " " + word
            chunk = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text}}],
            }
            await response.write(sse(chunk))
        if last == "fail mid-stream":
            await response.write(
                sse({"error": {"code": 500, "message": "fake failure", "type": "server_error"}})
            )
        else:
            done = {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            await response.write(sse(done))
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve(args: argparse.Namespace) -> None:
    ready_at = time.monotonic() + args.fake_start_delay
    if args.fake_crash:  # die while "loading", before the socket exists
        await asyncio.sleep(0.05)
        print("error: fake crash while loading the model", file=sys.stderr, flush=True)
        os._exit(3)
    runner = web.AppRunner(make_app(args, ready_at))
    await runner.setup()
    site: web.BaseSite
    if args.host.endswith(".sock"):
        site = web.UnixSite(runner, args.host)
    else:
        site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    print(f"fake llama-server listening on {args.host}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if not args.fake_ignore_sigterm:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.version:
        print("version: 0 (fake)", file=sys.stderr)
        return
    if args.fake_ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fake_pid_file:
        with open(args.fake_pid_file, "w") as handle:
            handle.write(str(os.getpid()))
    print("argv: " + " ".join(sys.argv[1:]), file=sys.stderr, flush=True)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
