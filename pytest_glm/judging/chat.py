"""Send a case to the deployment, streamed or not, one at a time or many at once, and get Answers back.

Concurrency is bounded by a semaphore (the profile's load concurrency) and every request carries the
client's timeout; a request that fails becomes an Answer-less error string rather than an exception, so
that one broken request does not hide the verdicts of the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pytest_glm.judging.answers import Answer, StreamAssembler, from_response
from pytest_glm.judging.cases import Case


def _request(client: Any, case: Case, model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    request = case.request(model, **overrides)
    floor = client.timeout if isinstance(client.timeout, (int, float)) else None
    if floor is not None and "timeout" not in overrides:  # thinking-on requests may run long
        request["timeout"] = case.request_timeout(float(floor))
    return request


def ask(client: Any, case: Case, model: str, *, stream: bool, **overrides: Any) -> Answer:
    """One greedy request for ``case`` through a synchronous OpenAI client."""
    request = _request(client, case, model, overrides)
    if not stream:
        return from_response(client.chat.completions.create(**request))
    assembler = StreamAssembler()
    with client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}) as chunks:
        for chunk in chunks:
            assembler.add(chunk)
    return assembler.answer()


async def ask_async(client: Any, case: Case, model: str, *, stream: bool, **overrides: Any) -> Answer:
    request = _request(client, case, model, overrides)
    if not stream:
        return from_response(await client.chat.completions.create(**request))
    assembler = StreamAssembler()
    chunks = await client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    async for chunk in chunks:
        assembler.add(chunk)
    return assembler.answer()


def ask_concurrently(endpoint: Any, jobs: list[tuple[Case, bool]], concurrency: int) -> list[Answer | str]:
    """Send every (case, stream) job with at most ``concurrency`` in flight; results in job order, a failed
    request as its error text."""

    async def run() -> list[Answer | str]:
        client = endpoint.async_client()
        gate = asyncio.Semaphore(max(concurrency, 1))

        async def one(case: Case, stream: bool) -> Answer | str:
            async with gate:
                try:
                    return await ask_async(client, case, endpoint.model, stream=stream)
                except Exception as exc:  # reported as this job's result
                    return f"{type(exc).__name__}: {exc}"

        try:
            return list(await asyncio.gather(*(one(c, s) for c, s in jobs)))
        finally:
            await client.close()

    return asyncio.run(run())


def rejection(exc: Any, deployment: Any = None) -> str:
    """What to say about a failed request: the HTTP status and message, and for a server-side error the
    exception the launched server logged (an empty HTTP 500 says nothing by itself)."""
    status = getattr(exc, "status_code", None)
    if status is None:
        text = f"the request failed: {type(exc).__name__}: {exc}"
    else:
        text = f"the server rejected the request (HTTP {status}): {_error_message(exc) or '(empty message)'}"
    if status is None or status >= 500:
        logged = deployment.server_error() if deployment is not None else ""
        text += (f"; the server log says: {logged}" if logged else
                 "; a server-side error: its log says why" if deployment is None or not deployment.log_path else "")
    return text


def _error_message(exc: Any) -> str:
    """The server's own message ('' when it sent an empty one), else the client's description."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        for holder in (inner, body):
            if isinstance(holder, dict) and "message" in holder:
                return str(holder["message"] or "")
    return str(exc)
