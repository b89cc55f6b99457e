"""A gateway in front of a real server that alters its chat-completion responses, for broken-deployment tests.

It forwards every request to the upstream server and rewrites each response body (and each SSE event of a
stream) with a function of the parsed JSON: e.g. one that lower-cases tool-call arguments, as a "helpful"
normalising gateway would, or one that drops ``token_ids``, as a gateway that only passes OpenAI's own
fields does. A rewrite may also end a stream where it is (:class:`EndStream`), as a server or gateway that
drops the rest of a stream does. It runs on its own event loop in a thread and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

Rewrite = Callable[[dict[str, Any]], dict[str, Any]]
#: Chooses the rewrite of one response from its request (path, JSON body): for gateways whose damage depends
#: on what was asked (a repeated prompt, a streamed request).
PerRequest = Callable[[str, dict[str, Any]], Rewrite]
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}


class EndStream(Exception):
    """Raised by a rewrite on an SSE event: send ``last`` (the event, rewritten), then end the stream there."""

    def __init__(self, last: dict[str, Any] | None = None) -> None:
        super().__init__("end of stream")
        self.last = last


def lowercase_arguments(body: dict[str, Any]) -> dict[str, Any]:
    for choice in body.get("choices") or []:
        for holder in (choice.get("message"), choice.get("delta")):
            for call in (holder or {}).get("tool_calls") or []:
                fn = call.get("function") or {}
                if isinstance(fn.get("arguments"), str):
                    fn["arguments"] = fn["arguments"].lower()
    return body


def drop_token_ids(body: dict[str, Any]) -> dict[str, Any]:
    body.pop("prompt_token_ids", None)
    for choice in body.get("choices") or []:
        choice.pop("token_ids", None)
    return body


def _handler(upstream: str, choose: PerRequest, session: aiohttp.ClientSession) -> Callable[..., Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        data = await request.read()
        try:
            asked = json.loads(data) if data else {}
        except ValueError:
            asked = {}
        rewrite = choose(request.path, asked if isinstance(asked, dict) else {})
        async with session.request(request.method, upstream + request.path_qs, data=data, headers=headers) as resp:
            kind = resp.headers.get("content-type", "")
            if "text/event-stream" in kind:
                out = web.StreamResponse(status=resp.status, headers={"content-type": kind})
                await out.prepare(request)
                async for raw in resp.content:
                    line = raw.decode()
                    if line.startswith("data: ") and line.strip() != "data: [DONE]":
                        try:
                            line = "data: " + json.dumps(rewrite(json.loads(line[6:]))) + "\n"
                        except EndStream as end:
                            if end.last is not None:
                                await out.write(f"data: {json.dumps(end.last)}\n\n".encode())
                            break
                    await out.write(line.encode())
                await out.write_eof()
                return out
            body = await resp.read()
            if "application/json" in kind and request.path.startswith("/v1/chat/completions"):
                body = json.dumps(rewrite(json.loads(body))).encode()
            return web.Response(status=resp.status, body=body, content_type=kind.split(";")[0] or None)

    return handle


@contextlib.contextmanager
def altering_proxy(upstream: str, rewrite: Rewrite | None = None, *, per_request: PerRequest | None = None) -> Iterator[str]:
    """Serve ``upstream`` through ``rewrite`` (or the rewrite ``per_request`` picks); yields the proxy's URL."""
    choose: PerRequest = per_request or (lambda path, body: rewrite or (lambda b: b))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def start() -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _handler(upstream.rstrip("/"), choose, session))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"], state["session"] = runner, session
        state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the altering proxy did not start within 10 s")
    try:
        yield state["url"]
    finally:
        async def stop() -> None:
            await state["session"].close()
            await state["runner"].cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
