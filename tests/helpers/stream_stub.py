"""A stand-in for vLLM's streaming /v1/completions: answers every request with ``max_tokens`` SSE chunks of
one token each, as fast as it can (or ``--delay`` seconds apart), then the usage chunk and [DONE].

Used by the load runner's functional tests (in a thread) and by benchmarks/client_overhead.py (as its own
process: ``python tests/helpers/stream_stub.py --port N``), where the client, not the server, must be the
bottleneck. ``/health`` answers 200 for readiness checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time

from aiohttp import web


def make_app(delay: float = 0.0, fail_every: int = 0, tokens_per_chunk: int = 1,
             drop: str = "", metrics: str = "") -> web.Application:
    """``drop="reused"``: close a connection without answering when a second request comes on it (a keep-alive
    timer that fired as the request arrived); ``drop="all"``: close every connection without answering.
    ``metrics``: the text ``/metrics`` answers (a vLLM's ``vllm:cache_config_info``, for the KV-capacity tests)."""
    counter = {"n": 0}
    served: dict[object, int] = {}

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        served[request.protocol] = served.get(request.protocol, 0) + 1
        if drop == "all" or (drop == "reused" and served[request.protocol] > 1):
            request.transport.close()
            raise web.HTTPServiceUnavailable()  # never reaches the client: the connection is gone
        counter["n"] += 1
        if fail_every and counter["n"] % fail_every == 0:
            return web.json_response({"error": {"message": "stub failure"}}, status=500)
        prompt = body.get("prompt") or []
        n = int(body.get("max_tokens") or 16)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        sent = 0
        while sent < n:
            k = min(tokens_per_chunk, n - sent)
            chunk = {"id": "cmpl-stub", "object": "text_completion", "model": body.get("model"),
                     "choices": [{"index": 0, "text": "." * k, "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            sent += k
            if delay:
                await asyncio.sleep(delay)
        usage = {"id": "cmpl-stub", "choices": [],
                 "usage": {"prompt_tokens": len(prompt) if isinstance(prompt, list) else 1,
                           "completion_tokens": n, "total_tokens": n}}
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "stub", "max_model_len": 1 << 20}]})

    async def metrics_text(request: web.Request) -> web.Response:
        return web.Response(text=metrics, content_type="text/plain")

    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.0.0-stub"})

    app = web.Application()
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/version", version)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    return app


class StubInThread:
    """The stub served from a background thread, for tests: ``with StubInThread() as url: ...``."""

    def __init__(self, **kwargs) -> None:
        self.app = make_app(**kwargs)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._runner = runner
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> str:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("stub server did not start within 10 s")
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    print(f"stub listening on {args.port} at {time.strftime('%H:%M:%S')}", flush=True)
    web.run_app(make_app(args.delay), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
