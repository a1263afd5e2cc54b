"""The gateway's HTTP front: OpenAI's routes, at the top and under a namespace or a service.

    POST /v1/completions, /v1/chat/completions; GET /v1/models
    the same under /namespaces/{namespace}/v1/ and /namespaces/{namespace}/services/{service}/v1/

Every refusal is in OpenAI's error shape with the status its client maps to its own exception.
The server under it is gateway/front_server.py; /metrics and the probes are on aiohttp, on their own port.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from inferfleet.gateway.forward import Forwarder, send_error
from inferfleet.gateway.http1 import Exchange
from inferfleet.gateway.metrics import GatewayMetrics
from inferfleet.gateway.registry import Registry
from inferfleet.gateway.slots import RefusedError
from inferfleet.planning.prefix_routing import prefix_blocks
from inferfleet.planning.routing import (
    RouteError,
    Scope,
    ServiceRoute,
    bad_request,
    resolve_route,
)

MAX_BODY_BYTES = 8 << 20
ROUTE = re.compile(
    r"(?:/namespaces/(?P<namespace>[^/]+)(?:/services/(?P<service>[^/]+))?)?"
    r"/v1/(?P<api>chat/completions|completions|models)"
)
METHODS = {"completions": ("POST",), "chat/completions": ("POST",), "models": ("GET", "HEAD")}


@dataclass
class Front:
    registry: Registry
    forwarder: Forwarder
    metrics: GatewayMetrics

    async def handle(self, exchange: Exchange) -> None:
        """Every request the front server reads: a route, or OpenAI's 404 or 405."""
        request = exchange.request
        match = ROUTE.fullmatch(request.path)
        if match is None:
            error = RouteError(
                404, "invalid_request_error", "not_found", f"There is no route {request.path}."
            )
            send_error(exchange, error)
            return
        api, allowed = match["api"], METHODS[match["api"]]
        if request.method not in allowed:
            message = f"{request.path} takes {' or '.join(allowed)}, not {request.method}."
            error = RouteError(405, "invalid_request_error", "method_not_allowed", message)
            send_error(exchange, error, (("Allow", ", ".join(allowed)),))
            return
        scope = Scope(match["namespace"], match["service"])
        if api == "models":
            self.models(exchange, scope)
        else:
            await self.completions(exchange, scope, api)

    async def completions(self, exchange: Exchange, scope: Scope, api: str) -> None:
        started = asyncio.get_running_loop().time()
        raw = exchange.request.body
        body = _parse(raw)
        if isinstance(body, RouteError):
            send_error(exchange, body)
            return
        route = resolve_route(self.registry.routes(), body.get("model"), scope)
        if isinstance(route, RouteError):
            send_error(exchange, route)
            return
        self.metrics.arrivals.labels(*route.key).inc()
        if body.get("model") is None:
            raw = json.dumps({**body, "model": route.model}).encode()
        try:
            pool = self.registry.pools[route.key]
            blocks = prefix_blocks(body, chat=api == "chat/completions") if pool.prefix_affinity else ()
            await self.forwarder.forward(exchange, pool, f"/v1/{api}", raw, blocks)
        except RefusedError as refused:
            send_error(exchange, refused.error)
        self.metrics.responses.labels(*route.key, str(exchange.status)).inc()
        self.metrics.duration.labels(*route.key).observe(asyncio.get_running_loop().time() - started)

    def models(self, exchange: Exchange, scope: Scope) -> None:
        routes = sorted(
            (r for r in self.registry.routes() if _in_scope(r, scope)), key=lambda r: (r.model, r.key)
        )
        data = [
            {"id": r.model, "object": "model", "created": 0, "owned_by": f"{r.namespace}/{r.name}"}
            for r in routes
        ]
        exchange.reply(200, json.dumps({"object": "list", "data": data}).encode(), "application/json")


def refusal_body(status: int, message: str) -> bytes:
    """The front server's own refusals (malformed HTTP, a body too large) in OpenAI's error shape."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    code = {400: "bad_request", 413: "request_entity_too_large"}.get(status, "server_error")
    return json.dumps(RouteError(status, kind, code, message).body()).encode()


def _in_scope(route: ServiceRoute, scope: Scope) -> bool:
    return scope.namespace in (None, route.namespace) and scope.service in (None, route.name)


def _parse(raw: bytes) -> dict[str, Any] | RouteError:
    try:
        body = json.loads(raw)
    except ValueError as e:
        return bad_request(f"The body is not valid JSON: {e}")
    if not isinstance(body, dict):
        return bad_request("The body must be a JSON object.")
    return body


def build_metrics_app(registry: CollectorRegistry, ready: Callable[[], bool]) -> web.Application:
    """/metrics, /healthz, and /readyz: 200 once `ready()` (the caches synced)."""

    async def serve_metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(request: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="the InferenceService and EndpointSlice caches are not synced")

    app = web.Application()
    app.router.add_get("/metrics", serve_metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
