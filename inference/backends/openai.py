"""Any OpenAI-compatible streaming server: vLLM's api_server, SGLang, llama.cpp.

One or several base URLs (``http://host:port/v1``). Routing and failover:

- Each endpoint has a state: healthy or not, requests in flight, consecutive
  failures, and a cool-down. A background task probes every endpoint every
  ``health_interval_s`` (``GET {base}/models``; vLLM and SGLang also answer
  ``/health``) and marks it up or down.
- A request goes to the healthy endpoint with the fewest requests in flight
  (ties: the order configured).
- Before its first token, a failing request (connection refused, 5xx, timeout)
  is retried on the next healthy endpoint, up to ``retries`` times, and the
  failed endpoint is marked down until a probe succeeds.
- After its first token, a failure is never retried behind the room's back:
  the stream raises ``EngineError`` (``EngineStalled`` when no chunk came
  within ``stall_timeout_s``), the room runner pauses and retries the beat,
  and the retry lands on another endpoint.
- ``health()`` is ready while at least one endpoint is healthy.

Structured output: ``json_schema`` requests send ``response_format`` (OpenAI's
``json_schema`` form) by default; ``structured = "vllm"`` sends vLLM's
``structured_outputs: {"json": ...}`` field instead; ``"none"`` sends neither
(the Narrator's parse_choices then reads whatever comes).

Cancellation: closing a stream closes its HTTP response; the server aborts the
request when the connection closes. ``abort(request_id)`` does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from fablecast.inference.types import (
    EngineError,
    EngineHealth,
    EngineStalled,
    FinishReason,
    GenerationDelta,
    GenerationRequest,
)


@dataclass(slots=True)
class Endpoint:
    """One OpenAI-compatible server and what routing knows about it."""

    base_url: str
    healthy: bool = False
    in_flight: int = 0
    failures: int = 0
    last_error: str = ""
    checked_at: float = 0.0


class _Retryable(Exception):
    """A failure before the first token: try another endpoint."""


class OpenAIEngine:
    """``EngineClient`` over one or several OpenAI-compatible servers.

    Options (kind ``openai``): ``base_urls`` (list, or ``base_url``), ``api_key``,
    ``max_concurrency`` (requests in flight over all endpoints), ``retries``,
    ``connect_timeout_s``, ``stall_timeout_s``, ``health_interval_s``,
    ``start_timeout_s``, ``structured`` (``response_format`` | ``vllm`` | ``none``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_urls: Sequence[str] | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 64,
        retries: int = 2,
        connect_timeout_s: float = 3.0,
        stall_timeout_s: float = 15.0,
        health_interval_s: float = 2.0,
        start_timeout_s: float = 120.0,
        structured: str = "response_format",
    ) -> None:
        urls = list(base_urls or ([base_url] if base_url else []))
        if not urls:
            raise ValueError("the openai engine needs base_urls (or base_url)")
        if structured not in ("response_format", "vllm", "none"):
            raise ValueError("structured must be response_format, vllm or none")
        self.endpoints = [Endpoint(u.rstrip("/")) for u in urls]
        self._model = model or ""
        self.api_key = api_key
        self._max_concurrency = max_concurrency
        self.retries = retries
        self.connect_timeout_s = connect_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.health_interval_s = health_interval_s
        self.start_timeout_s = start_timeout_s
        self.structured = structured
        self._client: httpx.AsyncClient | None = None
        self._prober: asyncio.Task[None] | None = None
        self._responses: dict[str, httpx.Response] = {}
        self._aborted: set[str] = set()

    @property
    def name(self) -> str:
        """``openai``."""
        return "openai"

    @property
    def model(self) -> str:
        """The model requested (discovered from the first server when not configured)."""
        return self._model

    @property
    def max_concurrency(self) -> int:
        """Requests in flight over all endpoints."""
        return self._max_concurrency

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(self.stall_timeout_s, connect=self.connect_timeout_s),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
        return self._client

    async def start(self) -> None:
        """Wait until one endpoint answers (up to ``start_timeout_s``), then keep probing."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            await self.probe()
            if any(e.healthy for e in self.endpoints):
                break
            if time.monotonic() > deadline:
                errors = "; ".join(f"{e.base_url}: {e.last_error}" for e in self.endpoints)
                raise EngineError(f"no OpenAI-compatible endpoint answered: {errors}")
            await asyncio.sleep(0.5)
        if self._prober is None:
            self._prober = asyncio.create_task(self._probe_loop(), name="openai-engine-probe")

    async def probe(self) -> None:
        """Check every endpoint once (``GET /models``); learn the model name if unset."""
        await asyncio.gather(*(self._probe(e) for e in self.endpoints))

    async def _probe(self, ep: Endpoint) -> None:
        try:
            resp = await self._http().get(f"{ep.base_url}/models", timeout=self.connect_timeout_s)
            resp.raise_for_status()
            data = resp.json()
            if not self._model and data.get("data"):
                self._model = str(data["data"][0]["id"])
            ep.healthy, ep.failures, ep.last_error = True, 0, ""
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            ep.healthy, ep.last_error = False, f"{type(exc).__name__}: {exc}"
        ep.checked_at = time.monotonic()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self.probe()

    def health(self) -> EngineHealth:
        """Ready while at least one endpoint is healthy."""
        up = [e for e in self.endpoints if e.healthy]
        detail = ", ".join(
            f"{e.base_url} {'up' if e.healthy else 'down'} ({e.in_flight})" for e in self.endpoints
        )
        return EngineHealth(bool(up), self.name, self._model, detail)

    async def abort(self, request_id: str) -> None:
        """Close the request's HTTP stream; it ends with ``abort``."""
        self._aborted.add(request_id)
        resp = self._responses.get(request_id)
        if resp is not None:
            await resp.aclose()

    async def close(self) -> None:
        """Stop probing and close connections."""
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        """Stream ``request``'s continuation as deltas, with routing and failover."""
        return self._generate(request)

    # -- internals ------------------------------------------------------------------

    def _pick(self, tried: set[str]) -> Endpoint | None:
        candidates = [e for e in self.endpoints if e.healthy and e.base_url not in tried]
        if not candidates:
            # Nothing known healthy: try an untried one anyway (probes may lag).
            candidates = [e for e in self.endpoints if e.base_url not in tried]
        if not candidates:
            return None
        return min(candidates, key=lambda e: (e.in_flight, self.endpoints.index(e)))

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream": True,
        }
        if request.frequency_penalty:
            body["frequency_penalty"] = request.frequency_penalty
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.json_schema is not None:
            schema = dict(request.json_schema)
            if self.structured == "response_format":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema, "strict": True},
                }
            elif self.structured == "vllm":
                body["structured_outputs"] = {"json": schema}
        return body

    def _mark_down(self, ep: Endpoint, why: str) -> None:
        ep.healthy = False
        ep.failures += 1
        ep.last_error = why

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[GenerationDelta]:
        if self._client is None and self._prober is None:
            raise EngineError("openai engine not started")
        rid = request.request_id
        self._aborted.discard(rid)
        try:
            # aclosing: leaving this stream early must close the HTTP response now, not at GC.
            async with contextlib.aclosing(self._route(request)) as deltas:
                async for delta in deltas:
                    yield delta
        finally:
            self._aborted.discard(rid)

    async def _route(self, request: GenerationRequest) -> AsyncGenerator[GenerationDelta, None]:
        rid = request.request_id
        tried: set[str] = set()
        last = "no endpoint"
        for _attempt in range(self.retries + 1):
            ep = self._pick(tried)
            if ep is None:
                break
            tried.add(ep.base_url)
            started = False
            try:
                async with contextlib.aclosing(self._stream(ep, request)) as deltas:
                    async for delta in deltas:
                        started = True
                        yield delta
                        if delta.finished:
                            return
                if rid in self._aborted:
                    yield GenerationDelta("", 0, finished=True, finish_reason="abort")
                    return
                raise EngineError(f"{ep.base_url} closed the stream before it finished")
            except _Retryable as exc:
                last = str(exc)
                if rid in self._aborted:
                    yield GenerationDelta("", 0, finished=True, finish_reason="abort")
                    return
                if started:
                    raise EngineError(last) from exc
                continue
        raise EngineError(f"no OpenAI-compatible endpoint could serve the request: {last}")

    async def _stream(
        self, ep: Endpoint, request: GenerationRequest
    ) -> AsyncGenerator[GenerationDelta, None]:
        rid = request.request_id
        url = f"{ep.base_url}/chat/completions"
        ep.in_flight += 1
        got_first = False
        try:
            try:
                req = self._http().build_request("POST", url, json=self._body(request))
                resp = await self._http().send(req, stream=True)
            except httpx.TimeoutException as exc:
                self._mark_down(ep, f"timeout: {exc}")
                raise _Retryable(f"{ep.base_url}: timeout connecting") from exc
            except httpx.HTTPError as exc:
                self._mark_down(ep, f"{type(exc).__name__}: {exc}")
                raise _Retryable(f"{ep.base_url}: {type(exc).__name__}: {exc}") from exc
            self._responses[rid] = resp
            try:
                if resp.status_code >= 500:
                    await resp.aread()
                    self._mark_down(ep, f"HTTP {resp.status_code}")
                    raise _Retryable(f"{ep.base_url}: HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    body = (await resp.aread()).decode(errors="replace")[:300]
                    raise EngineError(
                        f"{ep.base_url} refused the request: {resp.status_code} {body}"
                    )
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    delta = _parse_chunk(payload)
                    if delta is None:
                        continue
                    got_first = True
                    yield delta
                    if delta.finished:
                        return
            except httpx.ReadTimeout as exc:
                if rid in self._aborted:
                    return
                self._mark_down(ep, "stalled")
                raise EngineStalled(
                    f"{ep.base_url}: no token within {self.stall_timeout_s:g} s"
                ) from exc
            except (httpx.HTTPError, httpx.StreamError) as exc:
                if rid in self._aborted:
                    return
                self._mark_down(ep, f"{type(exc).__name__}: {exc}")
                if got_first:
                    raise EngineError(f"{ep.base_url} failed mid-stream: {exc!r}") from exc
                raise _Retryable(f"{ep.base_url}: {type(exc).__name__}: {exc}") from exc
            finally:
                self._responses.pop(rid, None)
                await resp.aclose()
        finally:
            ep.in_flight -= 1


def _finish(reason: Any) -> FinishReason:
    if reason in ("stop", "length", "abort"):
        return reason  # type: ignore[no-any-return]
    return "stop"


def _parse_chunk(payload: str) -> GenerationDelta | None:
    """One SSE ``data:`` payload of a chat completion stream as a delta (None: nothing new)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if "error" in data:
        raise EngineError(f"server error: {data['error']}")
    choices = data.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    text = (choice.get("delta") or {}).get("content") or ""
    reason = choice.get("finish_reason")
    if not text and reason is None:
        return None
    return GenerationDelta(
        text,
        1 if text else 0,
        finished=reason is not None,
        finish_reason=_finish(reason) if reason is not None else None,
    )
