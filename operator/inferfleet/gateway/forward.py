"""One request, proxied: a slot, a try on an engine, and another try elsewhere when it is safe.

A try that fails before the first byte reached the client (connect error, reset, the engine's
502/503) is retried on another endpoint, within `max_attempts` and the retry budget. A streamed
answer is passed through chunk by chunk as the engine writes it; the client's response starts only
with the engine's first chunk, so a replica that dies before its first token is still retried.
Once bytes reached the client nothing is retried: a broken stream ends with an error event. A
client that goes away cancels the handler; the engine connection is closed with it, so the engine
stops generating and the slot is free at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from inferfleet.gateway.metrics import GatewayMetrics
from inferfleet.gateway.pool import ServicePool
from inferfleet.gateway.slots import Activate, take_slot
from inferfleet.planning.routing import RetryBudget, RouteError, compute_retry, compute_retry_backoff

PASSED_REQUEST_HEADERS = ("Authorization", "Accept", "Content-Type")
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


@dataclass(frozen=True)
class Failure:
    """A try that failed before anything reached the client."""

    reason: str
    status: int | None = None
    """The engine's 502/503; None for a connection that failed or broke."""
    payload: bytes = b""
    content_type: str = "application/json"


def error_response(error: RouteError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return web.json_response(error.body(), status=error.status, headers=headers)


def _stream_error_event(message: str) -> bytes:
    error = {"error": {"message": message, "type": "server_error", "param": None, "code": "upstream_failed"}}
    return f"data: {json.dumps(error)}\n\n".encode()


@dataclass
class Forwarder:
    session: aiohttp.ClientSession
    metrics: GatewayMetrics
    budget: RetryBudget
    activate: Activate
    max_attempts: int = 3

    async def forward(
        self, request: web.Request, pool: ServicePool, path: str, body: bytes, blocks: tuple[int, ...] = ()
    ) -> web.StreamResponse:
        """Proxy one request; raises slots.RefusedError when it never reaches an engine. `blocks`:
        its prompt's leading block hashes, for prefix-affinity routing."""
        loop = asyncio.get_running_loop()
        started, labels = loop.time(), pool.route.key
        self.budget.record_request(started)
        excluded: frozenset[str] = frozenset()
        attempt = 1
        while True:
            endpoint = await take_slot(pool, self.activate, started, excluded, blocks)
            if not excluded:
                self.metrics.queue_wait.labels(*labels).observe(loop.time() - started)
            try:
                outcome = await self._try(request, endpoint, path, body, labels, started)
            finally:
                pool.release(endpoint)
            if not isinstance(outcome, Failure):
                pool.report_success(endpoint)
                return outcome
            if outcome.status is None:
                pool.report_failure(endpoint)
            excluded = excluded | {endpoint}
            untried = any(e not in excluded for e in pool.endpoints)
            # A refused connection never reached an engine: trying an endpoint not tried yet costs
            # the fleet nothing and cannot answer twice, so it spends no attempt and no budget
            # (a new replica Ready a moment before it listens must not use up a burst's retries).
            if not (outcome.reason == "connect" and untried):
                if not compute_retry(outcome.status, False, attempt, self.max_attempts):
                    return self._give_up(outcome, endpoint)
                if not self.budget.try_spend(loop.time()):
                    return self._give_up(outcome, endpoint)
                attempt += 1
            self.metrics.retries.labels(*labels, outcome.reason).inc()
            if not untried:
                # Nowhere else to go: the next try is on an endpoint that just failed (a replica
                # that is Ready but not yet listening, say), so give it a moment instead of
                # spending every attempt within a millisecond.
                await asyncio.sleep(compute_retry_backoff(attempt - 1))

    def _give_up(self, failure: Failure, endpoint: str) -> web.Response:
        if failure.status is not None:
            return web.Response(
                body=failure.payload, status=failure.status, content_type=failure.content_type
            )
        message = f"the replica at {endpoint} failed ({failure.reason}) and no retry was left"
        return error_response(RouteError(502, "server_error", "upstream_failed", message))

    async def _try(
        self,
        request: web.Request,
        endpoint: str,
        path: str,
        body: bytes,
        labels: tuple[str, str],
        started: float,
    ) -> web.StreamResponse | Failure:
        headers = {h: request.headers[h] for h in PASSED_REQUEST_HEADERS if h in request.headers}
        try:
            upstream = await self.session.post(f"http://{endpoint}{path}", data=body, headers=headers)
        except UPSTREAM_ERRORS as e:
            return Failure(_reason(e))
        try:
            if upstream.status in (502, 503):
                payload = await upstream.read()
                return Failure(str(upstream.status), upstream.status, payload, upstream.content_type)
            if upstream.content_type == "text/event-stream":
                return await self._stream(request, upstream, labels, started)
            payload = await upstream.read()
        except UPSTREAM_ERRORS as e:
            return Failure(_reason(e))
        finally:
            upstream.close()  # a response not read to the end must not go back to the pool
        self.metrics.first_byte.labels(*labels).observe(asyncio.get_running_loop().time() - started)
        return web.Response(body=payload, status=upstream.status, content_type=upstream.content_type)

    async def _stream(
        self, request: web.Request, upstream: aiohttp.ClientResponse, labels: tuple[str, str], started: float
    ) -> web.StreamResponse | Failure:
        chunks = upstream.content.iter_any().__aiter__()
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            return Failure("empty stream")
        response = web.StreamResponse(
            status=upstream.status, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        self.metrics.first_byte.labels(*labels).observe(asyncio.get_running_loop().time() - started)
        # From here bytes have reached the client: whatever happens, this try is the answer.
        try:
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except UPSTREAM_ERRORS as e:
            if _client_gone(request):
                return response
            with contextlib.suppress(*UPSTREAM_ERRORS):
                await response.write(_stream_error_event(f"the replica failed mid-stream ({_reason(e)})"))
        with contextlib.suppress(*UPSTREAM_ERRORS):
            await response.write_eof()
        return response


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _reason(error: BaseException) -> str:
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(error, asyncio.TimeoutError):
        return "timeout"
    return "reset"
