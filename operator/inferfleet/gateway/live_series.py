"""With `--workers N`: the series of deleted services and endpoints leave /metrics.

prometheus_client's multiprocess files cannot forget a series, so a gateway serving services
that come and go would export every one it ever saw, until its pod restarts. Each worker writes
the label keys its registry serves, (namespace, service) and (namespace, service, endpoint), to
`live_<pid>.json` in the metrics directory whenever that set changes (a service or endpoint added
or deleted: never per request). The supervisor serves a series whose key is live in a running
worker, and a series without those labels always; until some running worker has written its
file it filters nothing. A request that ends after its service was deleted still counts in its
worker's file, but its service is no longer live, so its series stay gone.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from inferfleet.planning.queue_queries import SERVICE_SERIES_LABEL

Key = tuple[str, ...]
LIVE_FILE_PREFIX = "live_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def live_file(metrics_dir: str | Path, pid: int) -> Path:
    return Path(metrics_dir) / f"{LIVE_FILE_PREFIX}{pid}.json"


class LiveKeys:
    """One worker's live keys, written to its file on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: set[Key] = set()

    def add(self, key: Key) -> None:
        if key not in self.keys:
            self.keys.add(key)
            self._write()

    def discard(self, key: Key) -> None:
        gone = {k for k in self.keys if k[: len(key)] == key}
        if gone:
            self.keys -= gone
            self._write()

    def _write(self) -> None:
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(sorted(self.keys)))
        os.replace(partial, self.path)  # the supervisor never reads half a file


def read_live(metrics_dir: str | Path, pids: Iterable[int]) -> frozenset[Key] | None:
    """The union of the running workers' live keys; None when none has written its file."""
    live: set[Key] | None = None
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            keys = json.loads(live_file(metrics_dir, pid).read_text())
            live = (live or set()) | {tuple(k) for k in keys}
    return None if live is None else frozenset(live)


def keep_sample(labels: Mapping[str, str], live: frozenset[Key]) -> bool:
    """Whether a series is served: one of no service, or of a live service (and endpoint)."""
    namespace, service = labels.get("namespace"), labels.get(SERVICE_SERIES_LABEL)
    if namespace is None or service is None:
        return True
    endpoint = labels.get("endpoint")
    key = (namespace, service) if endpoint is None else (namespace, service, endpoint)
    return key in live


class LiveCollector:
    """The workers' summed series (MultiProcessCollector) less those no running worker serves."""

    def __init__(self, metrics_dir: str, pids: Callable[[], Iterable[int]]) -> None:
        self.metrics_dir = metrics_dir
        self.pids = pids
        self.summed = MultiProcessCollector(None, path=metrics_dir)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        live = read_live(self.metrics_dir, self.pids())
        for metric in self.summed.collect():  # type: ignore[no-untyped-call]
            if live is not None:
                metric.samples = [s for s in metric.samples if keep_sample(s.labels, live)]
            yield metric
