"""Engine load in from Prometheus: the fleet's one query per tick and the tenants' own queries.

The queries and the parsing of their answers are pure (planning.queue_queries, planning.promql);
this is the IO. Prometheus is reached over verified TLS (the system's CAs or `ca_file`), with a
bearer token or basic-auth credentials read from files for every query, so a rotated Secret is
used without a restart. Every query carries a server-side `timeout`; an answer with more than
`max_series` series (or bytes beyond what that many series take) is refused.

Failures become `MetricsUnavailableError("Prometheus query failed: <short reason>")`: that
message goes into tenants' conditions and Events, so it never holds the URL, a credential or
the text of a library's exception (requests names the URL in its errors). Logs may name the URL
with its userinfo removed (`redact_url`).

Tenant queries run on a small thread pool (`submit_override`) and report through a callback:
each service has at most one in flight, so a slow query holds only its own service and cannot
queue up behind itself.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from prometheus_client import Counter, Histogram

from inferfleet.planning.queue_queries import (
    QueueSample,
    build_fleet_query,
    parse_fleet_result,
    parse_override_result,
)
from inferfleet.runtime.config import PrometheusConfig

QUERY_SECONDS = Histogram(
    "inferfleet_prometheus_query_duration_seconds", "Prometheus query latency.", ["kind"]
)
QUERY_ERRORS = Counter("inferfleet_prometheus_query_errors_total", "Failed Prometheus queries.", ["kind"])
QUERIES = Counter("inferfleet_prometheus_queries_total", "Prometheus queries sent.", ["kind"])

FAILED = "Prometheus query failed"
BYTES_PER_SERIES = 2048
"""The answer's size limit per allowed series: a series of an instant vector takes far less."""
CUSTOM_QUERY_WORKERS = 8
log = logging.getLogger("inferfleet.prometheus")


class MetricsUnavailableError(Exception):
    """Prometheus could not answer; the message is safe to show to any tenant."""


def redact_url(url: str) -> str:
    """`url` without its userinfo and query string, for logs."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable URL>"


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def _scrub(text: str) -> str:
    """A last guard on text that reaches a message: no `scheme://user:pass@` survives."""
    return _USERINFO.sub("", text)


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (urllib3 keeps the cause in `reason` and `args`)."""
    seen: list[BaseException] = []
    todo = [error]
    while todo and len(seen) < 20:
        e = todo.pop()
        if e in seen:
            continue
        seen.append(e)
        nested = [getattr(e, "reason", None), e.__cause__, e.__context__, *e.args]
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return seen


def describe_failure(error: BaseException, timeout_seconds: float) -> str:
    """A short reason for tenants: what went wrong, never where or with which credentials."""
    chain = _chain(error)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({e.verify_message})"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return f"TLS handshake failed ({e.reason or 'no reason given'})"
    if isinstance(error, requests.ConnectTimeout):
        return f"no connection within {timeout_seconds:g}s"
    if isinstance(error, requests.Timeout):
        return f"no answer within {timeout_seconds:g}s"
    if isinstance(error, requests.ConnectionError):
        if any(isinstance(e, ConnectionRefusedError) for e in chain):
            return "connection refused"
        if any("Name or service not known" in str(e) or "getaddrinfo" in str(e) for e in chain):
            return "host name not found"
        return "cannot connect"
    if isinstance(error, OSError):
        return "cannot read the operator's Prometheus credentials"
    return f"unexpected error ({type(error).__name__})"


def describe_http_error(status: int, body: bytes) -> str:
    if status in (401, 403):
        return f"HTTP {status}: Prometheus refused the operator's credentials"
    try:
        message = str(json.loads(body).get("error") or "")
    except (ValueError, AttributeError):
        message = ""
    return f"HTTP {status}: {_scrub(message)[:300]}" if message else f"HTTP {status}"


def _read_secret(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class QueueReader:
    """Queries Prometheus as `config` says; one reader per operator."""

    def __init__(self, config: PrometheusConfig) -> None:
        if not config.url:
            raise ValueError("no Prometheus URL")
        self.config = config
        parts = urlsplit(config.url)
        self._endpoint = f"{redact_url(config.url).rstrip('/')}/api/v1/query"
        # Credentials in the URL become basic auth here, so no library error can print them.
        self._url_auth = (parts.username or "", parts.password or "") if parts.username else None
        self._verify: bool | str = config.ca_file or True
        if config.insecure_skip_verify:
            self._verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(CUSTOM_QUERY_WORKERS, thread_name_prefix="inferfleet-query")
        self._in_flight: dict[Hashable, Future[QueueSample]] = {}
        self._lock = threading.Lock()

    @property
    def safe_url(self) -> str:
        return redact_url(self.config.url or "")

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy or netrc credentials from the environment
            self._local.session = session
        return session

    def _auth(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        """Headers and basic auth for one query, from the files as they are now (rotation)."""
        c = self.config
        headers = {"Accept": "application/json"}
        if c.bearer_token_file:
            headers["Authorization"] = f"Bearer {_read_secret(c.bearer_token_file)}"
        if c.username_file and c.password_file:
            return headers, (_read_secret(c.username_file), _read_secret(c.password_file))
        return headers, self._url_auth

    def query(self, kind: str, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to (a scalar as one series without labels)."""
        QUERIES.labels(kind).inc()
        started = time.monotonic()
        try:
            return self._query(promql)
        except MetricsUnavailableError:
            QUERY_ERRORS.labels(kind).inc()
            raise
        except Exception as e:  # requests, TLS, files: all mean "no data this time"
            QUERY_ERRORS.labels(kind).inc()
            reason = describe_failure(e, self.config.timeout_seconds)
            log.warning(f"{kind} query to {self.safe_url} failed: {reason}")
            raise MetricsUnavailableError(f"{FAILED}: {reason}") from None
        finally:
            QUERY_SECONDS.labels(kind).observe(time.monotonic() - started)

    def _query(self, promql: str) -> list[dict[str, Any]]:
        c = self.config
        headers, auth = self._auth()
        data = {"query": promql, "timeout": f"{c.timeout_seconds:g}s", "limit": str(c.max_series)}
        with self._session().post(
            self._endpoint,
            data=data,
            headers=headers,
            auth=auth,
            verify=self._verify,
            timeout=c.timeout_seconds,
            allow_redirects=False,
            stream=True,
        ) as response:
            body = self._read_capped(response)
            if response.status_code != 200:
                raise MetricsUnavailableError(f"{FAILED}: {describe_http_error(response.status_code, body)}")
        return self._series(body)

    def _read_capped(self, response: requests.Response) -> bytes:
        cap = max(self.config.max_series, 1) * BYTES_PER_SERIES
        chunks, size = [], 0
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > cap:
                raise MetricsUnavailableError(f"{FAILED}: the answer is larger than {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _series(self, body: bytes) -> list[dict[str, Any]]:
        try:
            data = json.loads(body)["data"]
            kind, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError):
            raise MetricsUnavailableError(f"{FAILED}: the answer is not Prometheus' JSON") from None
        if kind == "scalar":
            return [{"metric": {}, "value": result}]
        if kind != "vector":
            msg = f"{FAILED}: the query returns a {kind}; it must return an instant vector or a scalar"
            raise MetricsUnavailableError(msg)
        if len(result) > self.config.max_series:
            msg = f"{FAILED}: {len(result)} series, more than the limit of {self.config.max_series}"
            raise MetricsUnavailableError(msg)
        return list(result)

    def read_fleet(self) -> dict[tuple[str, str], QueueSample]:
        return parse_fleet_result(self.query("fleet", build_fleet_query()))

    def read_override(self, promql: str) -> QueueSample:
        return parse_override_result(self.query("override", promql))

    def submit_override(
        self, key: Hashable, promql: str, on_done: Callable[[Future[QueueSample]], None]
    ) -> bool:
        """Runs `promql` on the pool, then `on_done` with its future (on the pool's thread).

        False, and nothing runs, while the service's previous query has not finished."""
        with self._lock:
            if key in self._in_flight:  # until its on_done has returned
                return False
            future = self._pool.submit(self.read_override, promql)
            self._in_flight[key] = future
        future.add_done_callback(on_done)  # before the key is free: one decision at a time
        future.add_done_callback(lambda done: self._finished(key, done))
        return True

    def _finished(self, key: Hashable, future: Future[QueueSample]) -> None:
        with self._lock:
            if self._in_flight.get(key) is future:
                del self._in_flight[key]

    def forget_service(self, key: Hashable) -> None:
        """Nothing of a deleted service stays (its query, if running, ends on its own)."""
        with self._lock:
            self._in_flight.pop(key, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
