"""One request, proxied: a slot, a try on an engine, and another try elsewhere when it is safe.

A try that fails before the first byte reached the client (connect error, reset, the engine's
502/503) is retried on another endpoint, within `max_attempts` and the retry budget. A streamed
answer is passed through chunk by chunk as the engine writes it, each chunk written to the client's
socket from the engine connection's callback (gateway/upstream.py); the client's response starts
only with the engine's first chunk, so a replica that dies before its first token is still retried.
Once bytes reached the client nothing is retried: a broken stream ends with an error event. A
client that goes away cancels the handler; the engine connection is closed with it, so the engine
stops generating and the slot is free at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from inferfleet.gateway.chunked import push_chunk
from inferfleet.gateway.metrics import GatewayMetrics
from inferfleet.gateway.pool import ServicePool
from inferfleet.gateway.slots import Activate, take_slot
from inferfleet.gateway.upstream import Answer, EngineClient, Push, UpstreamError
from inferfleet.planning.routing import RetryBudget, RouteError, compute_retry, compute_retry_backoff

PASSED_REQUEST_HEADERS = ("Authorization", "Accept", "Content-Type")
CLIENT_OR_UPSTREAM_ERRORS = (UpstreamError, aiohttp.ClientError, ConnectionError)
"""A broken engine connection, or a client gone while its answer is written."""


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
    client: EngineClient
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
            answer = await self.client.post(endpoint, path, headers, body)
        except UpstreamError as e:
            return Failure(e.reason)
        try:
            await answer.head
            if answer.status in (502, 503):
                payload = await answer.read()
                return Failure(str(answer.status), answer.status, payload, answer.content_type)
            if answer.content_type == "text/event-stream":
                return await self._stream(request, answer, labels, started)
            payload = await answer.read()
        except UpstreamError as e:
            return Failure(e.reason)
        finally:
            self.client.release(answer)  # a connection whose answer was not read whole is closed
        self.metrics.first_byte.labels(*labels).observe(asyncio.get_running_loop().time() - started)
        content_type = answer.content_type or "application/octet-stream"
        return web.Response(body=payload, status=answer.status, content_type=content_type)

    async def _stream(
        self, request: web.Request, answer: Answer, labels: tuple[str, str], started: float
    ) -> web.StreamResponse | Failure:
        first = await answer.next_piece()
        if first is None:
            return Failure("empty stream")
        response = _HeadWithFirstChunk(
            status=answer.status, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        if request.version >= (1, 1):
            response.enable_chunked_encoding()  # the framing _pusher writes; HTTP/1.0 ends at close
        await response.prepare(request)
        self.metrics.first_byte.labels(*labels).observe(asyncio.get_running_loop().time() - started)
        # From here bytes have reached the client: whatever happens, this try is the answer.
        try:
            await response.write(first)
            await answer.relay(_pusher(request, response), response.write)
        except CLIENT_OR_UPSTREAM_ERRORS as e:
            if _client_gone(request):
                return response
            with contextlib.suppress(*CLIENT_OR_UPSTREAM_ERRORS):
                await response.write(_stream_error_event(f"the replica failed mid-stream ({_reason(e)})"))
        with contextlib.suppress(*CLIENT_OR_UPSTREAM_ERRORS):
            await response.write_eof()
        return response


class _HeadWithFirstChunk(web.StreamResponse):
    """Its headers leave in one write with the first chunk, as aiohttp's `web.Response` sends its
    body: a stream is opened only once the engine's first chunk is here, and a write of its own for
    the headers cost the gateway ~30 µs a request (and the client a read)."""

    _send_headers_immediately = False


def _pusher(request: web.Request, response: web.StreamResponse) -> Push:
    """Each piece as one HTTP chunk straight to the client's socket, from the engine connection's
    callback (gateway/chunked.py); none when the response is not chunked (HTTP/1.0): the handler
    then writes every piece through aiohttp."""
    transport = request.transport
    if transport is None or not response.chunked:
        return lambda data: False
    return functools.partial(push_chunk, transport)


def _client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def _reason(error: BaseException) -> str:
    if isinstance(error, UpstreamError):
        return error.reason
    return "reset"
