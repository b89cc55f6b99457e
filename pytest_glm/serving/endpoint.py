"""One served deployment as seen from a client: URL, served model name, API key, and its HTTP surface.

The API key is kept out of every ``repr``/``str`` so it cannot leak into reports or tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from pytest_glm.exceptions import DeploymentError

#: Timeout of the small management calls (/health, /version, /metrics, /tokenize, /v1/models).
MANAGEMENT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible vLLM endpoint.

    :param base_url: ``http://host:port`` (no ``/v1``).
    :param model: the served model name to put in requests.
    :param api_key: bearer token, or None; never printed.
    :param request_timeout: timeout of one inference request, seconds.
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    request_timeout: float = 120.0

    def __str__(self) -> str:
        return f"{self.base_url} (model {self.model})"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def get(self, path: str, timeout: float = MANAGEMENT_TIMEOUT) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", headers=self._headers(), timeout=timeout)

    def health(self) -> bool:
        try:
            return self.get("/health", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def version(self) -> str:
        """vLLM's version from ``/version`` ('' if the server does not say)."""
        try:
            resp = self.get("/version")
            return str(resp.json().get("version", "")) if resp.status_code == 200 else ""
        except (httpx.HTTPError, ValueError):
            return ""

    def metrics_text(self) -> str:
        """The Prometheus exposition text of ``/metrics``."""
        resp = self.get("/metrics")
        resp.raise_for_status()
        return resp.text

    def tokenize(self, text: str | None = None, messages: list[dict[str, Any]] | None = None,
                 **extra: Any) -> list[int]:
        """Token ids of a prompt (``text``) or of a rendered chat (``messages``), by the server's tokenizer."""
        body: dict[str, Any] = {"model": self.model, **extra}
        if messages is not None:
            body["messages"] = messages
        else:
            body["prompt"] = text or ""
        resp = httpx.post(f"{self.base_url}/tokenize", json=body, headers=self._headers(), timeout=MANAGEMENT_TIMEOUT)
        resp.raise_for_status()
        return list(resp.json()["tokens"])

    def detokenize(self, tokens: list[int]) -> str:
        resp = httpx.post(f"{self.base_url}/detokenize", json={"model": self.model, "tokens": tokens},
                          headers=self._headers(), timeout=MANAGEMENT_TIMEOUT)
        resp.raise_for_status()
        return str(resp.json()["prompt"])

    def render_chat(self, messages: list[dict[str, Any]], **template_kwargs: Any) -> str:
        """The prompt the server renders for ``messages`` (its own chat template, generation prompt added)."""
        tokens = self.tokenize(messages=messages, add_generation_prompt=True,
                               chat_template_kwargs=template_kwargs or None)
        return self.detokenize(tokens)

    def max_model_len(self) -> int:
        """The served context length, as ``/v1/models`` reports it (0 if it does not)."""
        resp = self.get("/v1/models")
        resp.raise_for_status()
        data = [m for m in resp.json().get("data", []) if m.get("id") == self.model]
        return int(data[0].get("max_model_len") or 0) if data else 0

    def served_models(self) -> list[str]:
        resp = self.get("/v1/models")
        if resp.status_code in (401, 403):
            raise DeploymentError(f"{self.base_url} rejected the API key (HTTP {resp.status_code})",
                                  "pass the right key with --glm-api-key or the GLM_API_KEY environment variable")
        resp.raise_for_status()
        return [m["id"] for m in resp.json().get("data", [])]

    def client(self, **kwargs: Any) -> Any:
        """A synchronous ``openai.OpenAI`` client for this endpoint, with this endpoint's timeout."""
        import openai

        return openai.OpenAI(base_url=self.openai_base_url, api_key=self.api_key or "EMPTY",
                             timeout=kwargs.pop("timeout", self.request_timeout),
                             max_retries=kwargs.pop("max_retries", 0), **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` client for this endpoint, with this endpoint's timeout."""
        import openai

        return openai.AsyncOpenAI(base_url=self.openai_base_url, api_key=self.api_key or "EMPTY",
                                  timeout=kwargs.pop("timeout", self.request_timeout),
                                  max_retries=kwargs.pop("max_retries", 0), **kwargs)


#: What an answer on /health usually means for an endpoint that is not ready (yet).
NOT_READY = {
    None: "nothing answers there: the server is not started yet, or the URL or port is wrong",
    502: "a gateway in front answered for a backend that is down or not ready",
    503: "the endpoint answered but is not ready: usually the model is still loading (vLLM before its engine "
         "is up, or a Kubernetes Service in front of a starting pod), else the server is unhealthy",
    504: "a gateway in front timed out waiting for its backend",
}

#: Seconds between two looks at /health while an endpoint starts, and between two progress lines.
READY_POLL_S = 2.0
READY_SAY_S = 10.0


def _health_status(base_url: str, headers: dict[str, str]) -> tuple[int | None, str]:
    """(HTTP status of /health, or None when nothing answered; what happened, in words)."""
    try:
        resp = httpx.get(f"{base_url}/health", headers=headers, timeout=5.0)
    except httpx.HTTPError as exc:
        return None, f"no answer ({type(exc).__name__})"
    return resp.status_code, f"HTTP {resp.status_code} on /health"


def wait_until_ready(base_url: str, api_key: str | None, timeout: float, say: Any = lambda line: None,
                     clock: Any = None, sleep: Any = None) -> None:
    """Wait for an endpoint that is starting: a refused connection or 502/503/504 on /health means wait (a
    progress line every READY_SAY_S), up to ``timeout`` seconds, then fail naming what it answered and what
    that usually means. 401/403 fail at once; so does any other status. A server without /health (404)
    is left to the /v1/models check."""
    import time

    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    began = clock()
    last_said: float | None = None
    while True:
        status, what = _health_status(base_url, headers)
        if status in (200, 404):
            return
        if status in (401, 403):
            raise DeploymentError(f"{base_url} rejected the API key (HTTP {status} on /health)",
                                  "pass the right key with --glm-api-key or the GLM_API_KEY environment variable")
        if status not in NOT_READY:
            raise DeploymentError(f"{base_url} answered HTTP {status} on /health: the server is up but not healthy",
                                  "its own log says why")
        waited = clock() - began
        if waited >= timeout:
            raise DeploymentError(f"{base_url} is not ready within {timeout:g} s: {what}; {NOT_READY[status]}",
                                  "start the server, or raise --glm-startup-timeout if it is still loading")
        if last_said is None or clock() - last_said >= READY_SAY_S:
            say(f"waiting for {base_url}: {what} ({NOT_READY[status].split(':')[0]}), {waited:.0f} s of "
                f"{timeout:.0f} s")
            last_said = clock()
        sleep(READY_POLL_S)


def probe(base_url: str, api_key: str | None, served_model_name: str | None, request_timeout: float,
          startup_timeout: float = 0.0, say: Any = lambda line: None) -> Endpoint:
    """Check that an already running endpoint answers, accepts the key, and serves the model; an endpoint
    that is still starting is waited for up to ``startup_timeout`` seconds (:func:`wait_until_ready`)."""
    base_url = base_url.rstrip("/")
    if base_url.endswith("/v1"):
        base_url = base_url[:-3]
    wait_until_ready(base_url, api_key, startup_timeout, say)
    probe_ep = Endpoint(base_url, served_model_name or "", api_key, request_timeout)
    try:
        models = probe_ep.served_models()
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        raise DeploymentError(f"{base_url} answered HTTP {status} on GET /v1/models"
                              + (f": {NOT_READY[status]}" if status in NOT_READY else ""),
                              "check the URL (the OpenAI-compatible root, without /v1) and the server's log") from exc
    except httpx.HTTPError as exc:
        raise DeploymentError(f"no answer from {base_url} on GET /v1/models: {type(exc).__name__}: {exc}",
                              "check the URL and that the server is up (GET /v1/models must answer)") from exc
    if not models:
        raise DeploymentError(f"{base_url} serves no model (GET /v1/models is empty)")
    if served_model_name and served_model_name not in models:
        raise DeploymentError(f"{base_url} does not serve {served_model_name!r}",
                              f"it serves: {', '.join(models)}; fix --glm-served-model-name")
    return Endpoint(base_url, served_model_name or models[0], api_key, request_timeout)
