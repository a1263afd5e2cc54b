"""The gateway's HTTP front: OpenAI's routes, at the top and under a namespace or a service.

    POST /v1/completions, /v1/chat/completions; GET /v1/models
    the same under /namespaces/{namespace}/v1/ and /namespaces/{namespace}/services/{service}/v1/

Every refusal is in OpenAI's error shape with the status its client maps to its own exception.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from inferfleet.gateway.forward import Forwarder, error_response
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
PREFIXES = ("/v1", "/namespaces/{namespace}/v1", "/namespaces/{namespace}/services/{service}/v1")
COMPLETIONS = "/{api:(chat/)?completions}"


@dataclass
class Front:
    registry: Registry
    forwarder: Forwarder
    metrics: GatewayMetrics

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
        for prefix in PREFIXES:
            app.router.add_post(prefix + COMPLETIONS, self.completions)
            app.router.add_get(prefix + "/models", self.models)
        return app

    async def completions(self, request: web.Request) -> web.StreamResponse:
        started = asyncio.get_running_loop().time()
        body = _parse(await request.read())
        if isinstance(body, RouteError):
            return error_response(body)
        route = resolve_route(self.registry.routes(), body.get("model"), _scope(request))
        if isinstance(route, RouteError):
            return error_response(route)
        self.metrics.arrivals.labels(*route.key).inc()
        raw = await request.read()
        if body.get("model") is None:
            raw = json.dumps({**body, "model": route.model}).encode()
        try:
            api = request.match_info["api"]
            pool = self.registry.pools[route.key]
            blocks = prefix_blocks(body, chat=api == "chat/completions") if pool.prefix_affinity else ()
            response = await self.forwarder.forward(request, pool, f"/v1/{api}", raw, blocks)
        except RefusedError as refused:
            response = error_response(refused.error)
        self.metrics.responses.labels(*route.key, str(response.status)).inc()
        self.metrics.duration.labels(*route.key).observe(asyncio.get_running_loop().time() - started)
        return response

    async def models(self, request: web.Request) -> web.Response:
        scope = _scope(request)
        routes = sorted(
            (r for r in self.registry.routes() if _in_scope(r, scope)), key=lambda r: (r.model, r.key)
        )
        data = [
            {"id": r.model, "object": "model", "created": 0, "owned_by": f"{r.namespace}/{r.name}"}
            for r in routes
        ]
        return web.json_response({"object": "list", "data": data})


def _scope(request: web.Request) -> Scope:
    return Scope(request.match_info.get("namespace"), request.match_info.get("service"))


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


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own refusals (no route, wrong method, body too large) in OpenAI's error shape."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        error = RouteError(
            e.status, "invalid_request_error", e.reason.lower().replace(" ", "_"), e.text or e.reason
        )
        return error_response(error)
    return response


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
