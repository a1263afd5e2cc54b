"""`inferfleet demo` end to end in its short mode: every request through the gateway, as a user runs it.

The demo is its own process (the command `make demo` runs): it enters its own private network,
starts the local cluster, Prometheus, the operator, the gateway with the chart's RBAC, engines at
the pods' IPs and the load, and writes report.md and samples.json at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DURATION_SECONDS = 60
"""The 1B service's first burst starts at 15 s: a minute sees it woken from zero."""


def test_the_short_demo_serves_every_request_through_the_gateway_and_reports_the_door(tmp_path: Path) -> None:
    report = tmp_path / "report"
    command = [sys.executable, "-m", "inferfleet", "demo", "--duration", str(DURATION_SECONDS),
               "--report-dir", str(report), "--name", f"inferfleet-demo-test-{os.getpid()}"]  # fmt: skip
    # Bounded by the demo's own --duration, its start-up waits and the load's 30 s grace.
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    markdown = (report / "report.md").read_text()
    recorded = json.loads((report / "samples.json").read_text())

    assert {"llama-3-1-405b", "llama-3-1-70b", "llama-3-1-8b", "llama-3-2-1b"} <= set(recorded)
    for name, service in recorded.items():
        served = service["served"]
        # Every request the load sent arrived at the gateway's door, and every one was answered.
        assert served["sent"] > 0, name
        assert served["gateway"]["arrivals"] == served["sent"], name
        assert (served["ok"], served["errors"]) == (served["sent"], 0), (name, served["error_samples"])
        assert served["gateway"]["responses"] == {"200": served["ok"]}, name
        assert f"the gateway counted {served['sent']} arrivals" in markdown

    # The autoscaled 8B's door: arrivals the autoscaler reads, next to its replicas in the report.
    arrivals = [s["door"]["arrival_rate"] for s in recorded["llama-3-1-8b"]["samples"]]
    assert max(a for a in arrivals if a is not None) > 0
    [row] = [line for line in markdown.splitlines() if line.startswith("| llama-3-1-8b ")]
    assert float(row.split("|")[6]) > 0  # the "peak arrivals at the door (req/s)" column

    # The 1B service slept at zero until its burst: the gateway held the first request and woke it.
    asleep = recorded["llama-3-2-1b"]
    assert asleep["samples"][0]["desired"] == 0
    assert asleep["served"]["gateway"]["activations"] == 1
    assert asleep["served"]["first_answer"] is not None
    assert "woke the service from zero 1 time" in markdown
