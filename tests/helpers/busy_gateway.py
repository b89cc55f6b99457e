"""A gateway in front of a real server that drops some requests under load, for the soak's tests.

It forwards every request to the upstream server as it is (streams too, byte for byte), except that every
``every``-th chat-completion request that arrives while others are in flight is answered ``502`` with
an error message, as an overloaded ingress does; a request that arrives alone always goes through, so that
one-at-a-time requests are never hit. Once :attr:`Gateway.down` is set (or ``down_after`` chat requests
have gone through) it answers everything, ``/health`` included, ``503``: a server gone, as the client sees it. It runs on its own event loop in a thread and
listens on 127.0.0.1 only; :attr:`Gateway.dropped` counts what it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from tests.helpers.altering_proxy import HOP_HEADERS

MESSAGE = "busy gateway: upstream connection dropped under load"
GONE = "busy gateway: no upstream left"


@dataclass
class Gateway:
    url: str = ""
    in_flight: int = 0
    busy_arrivals: int = 0
    dropped: int = 0
    forwarded: int = 0
    down: bool = False


def _handler(upstream: str, every: int, down_after: int | None, gateway: Gateway,
             session: aiohttp.ClientSession) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        chat = request.path.startswith("/v1/chat/completions")
        gateway.down = gateway.down or (down_after is not None and gateway.forwarded >= down_after)
        if gateway.down:
            return web.json_response({"error": {"message": GONE, "code": 503}}, status=503)
        if chat and gateway.in_flight > 0:
            gateway.busy_arrivals += 1
            if gateway.busy_arrivals % every == 0:
                gateway.dropped += 1
                return web.json_response({"error": {"message": MESSAGE, "type": "BadGateway", "code": 502}},
                                         status=502)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        data = await request.read()
        gateway.in_flight += chat
        gateway.forwarded += chat
        try:
            async with session.request(request.method, upstream + request.path_qs, data=data, headers=headers) as resp:
                kind = resp.headers.get("content-type", "")
                if "text/event-stream" in kind:
                    out = web.StreamResponse(status=resp.status, headers={"content-type": kind})
                    await out.prepare(request)
                    with contextlib.suppress(ConnectionResetError):  # a client that hung up after [DONE]
                        async for raw in resp.content.iter_any():
                            await out.write(raw)
                        await out.write_eof()
                    return out
                return web.Response(status=resp.status, body=await resp.read(), content_type=kind.split(";")[0] or None)
        finally:
            gateway.in_flight -= chat

    return handle


@contextlib.contextmanager
def busy_gateway(upstream: str, every: int = 10, down_after: int | None = None) -> Iterator[Gateway]:
    """Serve ``upstream`` through a gateway that drops every ``every``-th request arriving under load (and
    that is down once ``down_after`` chat requests have gone through)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    gateway = Gateway()
    state: dict[str, Any] = {}

    async def start() -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _handler(upstream.rstrip("/"), every, down_after, gateway, session))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"], state["session"] = runner, session
        gateway.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the busy gateway did not start within 10 s")
    try:
        yield gateway
    finally:
        async def stop() -> None:
            await state["session"].close()
            await state["runner"].cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
