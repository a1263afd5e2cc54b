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
import json
from collections.abc import Iterable
from dataclasses import dataclass

from inferfleet.gateway.http1 import Exchange
from inferfleet.gateway.metrics import GatewayMetrics
from inferfleet.gateway.pool import ServicePool
from inferfleet.gateway.slots import Activate, take_slot
from inferfleet.gateway.upstream import Answer, EngineClient, UpstreamError
from inferfleet.planning.routing import RetryBudget, RouteError, compute_retry, compute_retry_backoff

PASSED_REQUEST_HEADERS = {
    "authorization": "Authorization",
    "accept": "Accept",
    "content-type": "Content-Type",
}
CLIENT_OR_UPSTREAM_ERRORS = (UpstreamError, ConnectionError)
"""A broken engine connection, or a client gone while its answer is written."""


@dataclass(frozen=True)
class Failure:
    """A try that failed before anything reached the client."""

    reason: str
    status: int | None = None
    """The engine's 502/503; None for a connection that failed or broke."""
    payload: bytes = b""
    content_type: str = "application/json"


def send_error(exchange: Exchange, error: RouteError, headers: Iterable[tuple[str, str]] = ()) -> None:
    """Answer `error` in OpenAI's shape, with Retry-After when it has one."""
    if error.retry_after is not None:
        headers = (*headers, ("Retry-After", str(error.retry_after)))
    exchange.reply(error.status, json.dumps(error.body()).encode(), "application/json", headers)


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
        self, exchange: Exchange, pool: ServicePool, path: str, body: bytes, blocks: tuple[int, ...] = ()
    ) -> None:
        """Proxy one request and answer it; raises slots.RefusedError when it never reaches an
        engine. `blocks`: its prompt's leading block hashes, for prefix-affinity routing."""
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
                outcome = await self._try(exchange, endpoint, path, body, labels, started)
            finally:
                pool.release(endpoint)
            if outcome is None:
                pool.report_success(endpoint)
                return
            if outcome.status is None:
                pool.report_failure(endpoint)
            excluded = excluded | {endpoint}
            untried = any(e not in excluded for e in pool.endpoints)
            # A refused connection never reached an engine: trying an endpoint not tried yet costs
            # the fleet nothing and cannot answer twice, so it spends no attempt and no budget
            # (a new replica Ready a moment before it listens must not use up a burst's retries).
            if not (outcome.reason == "connect" and untried):
                if not compute_retry(outcome.status, False, attempt, self.max_attempts):
                    return _give_up(exchange, outcome, endpoint)
                if not self.budget.try_spend(loop.time()):
                    return _give_up(exchange, outcome, endpoint)
                attempt += 1
            self.metrics.retries.labels(*labels, outcome.reason).inc()
            if not untried:
                # Nowhere else to go: the next try is on an endpoint that just failed (a replica
                # that is Ready but not yet listening, say), so give it a moment instead of
                # spending every attempt within a millisecond.
                await asyncio.sleep(compute_retry_backoff(attempt - 1))

    async def _try(
        self,
        exchange: Exchange,
        endpoint: str,
        path: str,
        body: bytes,
        labels: tuple[str, str],
        started: float,
    ) -> Failure | None:
        """None once answered; the Failure of a try that sent the client nothing."""
        sent = exchange.request.headers
        headers = {name: sent[key] for key, name in PASSED_REQUEST_HEADERS.items() if key in sent}
        try:
            answer = await self.client.post(endpoint, path, headers, body)
        except UpstreamError as e:
            return Failure(e.reason)
        try:
            await answer.head
            if answer.status in (502, 503):
                payload = await answer.read()
                return Failure(
                    str(answer.status), answer.status, payload, answer.content_type or "application/json"
                )
            if answer.content_type == "text/event-stream":
                return await self._stream(exchange, answer, labels, started)
            payload = await answer.read()
        except UpstreamError as e:
            return Failure(e.reason)
        finally:
            self.client.release(answer)  # a connection whose answer was not read whole is closed
        self.metrics.first_byte.labels(*labels).observe(asyncio.get_running_loop().time() - started)
        exchange.reply(answer.status, payload, answer.content_type or "application/octet-stream")
        return None

    async def _stream(
        self, exchange: Exchange, answer: Answer, labels: tuple[str, str], started: float
    ) -> Failure | None:
        first = await answer.next_piece()
        if first is None:
            return Failure("empty stream")
        exchange.open_stream(answer.status, first)
        self.metrics.first_byte.labels(*labels).observe(asyncio.get_running_loop().time() - started)
        # From here bytes have reached the client: whatever happens, this try is the answer.
        try:
            await answer.relay(exchange.push, exchange.write)
        except CLIENT_OR_UPSTREAM_ERRORS as e:
            if exchange.client_gone:
                return None
            with contextlib.suppress(*CLIENT_OR_UPSTREAM_ERRORS):
                await exchange.write(_stream_error_event(f"the replica failed mid-stream ({_reason(e)})"))
        exchange.end_stream()
        return None


def _give_up(exchange: Exchange, failure: Failure, endpoint: str) -> None:
    if failure.status is not None:
        exchange.reply(failure.status, failure.payload, failure.content_type)
        return
    message = f"the replica at {endpoint} failed ({failure.reason}) and no retry was left"
    send_error(exchange, RouteError(502, "server_error", "upstream_failed", message))


def _reason(error: BaseException) -> str:
    if isinstance(error, UpstreamError):
        return error.reason
    return "reset"
