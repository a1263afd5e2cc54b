"""The operator runs as a background process against the cluster and serves its liveness probe."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

import inferfleet
from inferfleet.localcluster.operator_process import OperatorProcess
from tests.conftest import Cluster


def test_the_operator_connects_serves_liveness_and_stops_cleanly_on_sigterm(
    cluster: Cluster, run_operator: Callable[..., OperatorProcess], namespace: str
) -> None:
    op = run_operator(namespaces=[namespace])
    with urllib.request.urlopen(op.liveness_url, timeout=5) as r:
        body = json.loads(r.read())
    assert body["version"] == inferfleet.__version__
    assert op.stop() == 0
    log = op.log_text()
    assert "Initial authentication has finished" in log
    assert "Traceback" not in log
