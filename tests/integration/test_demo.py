"""`inferfleet demo` end to end in its short mode: every request through the gateway, as a user runs it.

The demo is its own process (the command `make demo` runs): it enters its own private network,
starts the local cluster, Prometheus, the operator (with the node weights cache on), the gateway
with the chart's RBAC, engines at the pods' IPs and the load, and writes report.md and
samples.json at the end. It runs once for the tests of this module.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

DURATION_SECONDS = 60
"""The 1B service's first burst starts at 15 s: a minute sees it woken from zero."""

DemoRun = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The short demo, run once: its report.md and samples.json."""
    report = tmp_path_factory.mktemp("demo") / "report"
    command = [sys.executable, "-m", "inferfleet", "demo", "--duration", str(DURATION_SECONDS),
               "--report-dir", str(report), "--name", f"inferfleet-demo-test-{os.getpid()}"]  # fmt: skip
    # Bounded by the demo's own --duration, its start-up waits and the load's 30 s grace.
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return (report / "report.md").read_text(), json.loads((report / "samples.json").read_text())


def test_the_short_demo_serves_every_request_through_the_gateway_and_reports_the_door(
    demo_run: DemoRun,
) -> None:
    markdown, recorded = demo_run

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
    [row] = [
        line for line in markdown.splitlines() if line.startswith("| llama-3-1-8b | llama-3.1-8b-instruct |")
    ]
    assert float(row.split("|")[6]) > 0  # the "peak arrivals at the door (req/s)" column

    # The 1B service slept at zero until its burst: the gateway held the first request and woke it.
    asleep = recorded["llama-3-2-1b"]
    assert asleep["samples"][0]["desired"] == 0
    assert asleep["served"]["gateway"]["activations"] == 1
    assert asleep["served"]["first_answer"] is not None
    assert "woke the service from zero 1 time" in markdown


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_the_report_marks_cold_and_warm_starts_and_a_warm_one_waited_for_no_fetch(demo_run: DemoRun) -> None:
    markdown, recorded = demo_run
    starts = [(name, s) for name, service in recorded.items() for s in service["starts"]]
    kinds = Counter(s["kind"] for _, s in starts)
    assert kinds["cold"] >= 1, kinds
    assert kinds["warm"] >= 1, kinds

    for name, start in starts:
        created = _at(start["created"])
        fetches = [f for f in recorded[name]["fetches"] if f["node"] == start["node"]]
        if start["kind"] == "warm":
            # The node already held the copy: its only fetch completed in an earlier second than
            # the pod was created, and nothing was fetched there for the pod.
            [fetch] = fetches
            assert fetch["completed"] is not None, (name, start)
            assert _at(fetch["completed"]) < created, (name, start)
        elif start["kind"] == "cold":
            # No copy when the pod was created: no fetch on its node had completed by then.
            assert all(f["completed"] is None or _at(f["completed"]) > created for f in fetches), (
                name,
                start,
            )
        # Each start is a row of the report: service, pod, node, created, warm or cold, start to Ready.
        [row] = [line for line in markdown.splitlines() if line.startswith(f"| {name} | {start['pod']} |")]
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert (cells[2], cells[4]) == (start["node"] or "-", f"**{start['kind']}**")
        if start["seconds"] is not None:
            assert cells[5] == f"{start['seconds']:.0f}"  # from the API's timestamps

    # A cold start waited for its node's fetch (KWOK completes a fetch's pod after the demo's
    # fetch_seconds; the engine starts once its node holds the weights), a warm one did not.
    fetch_seconds = recorded["llama-3-1-8b"]["fetch_seconds"]
    assert fetch_seconds is not None
    assert fetch_seconds > 0
    seconds = {
        kind: [s["seconds"] for _, s in starts if s["kind"] == kind and s["seconds"] is not None]
        for kind in ("cold", "warm")
    }
    assert seconds["cold"], seconds
    assert seconds["warm"], seconds
    gap = statistics.median(seconds["cold"]) - statistics.median(seconds["warm"])
    assert gap >= fetch_seconds * 0.9, seconds
    assert f"completes {fetch_seconds:g} s after it starts, a stand-in for the download" in markdown

    # Side by side with what the operator learned from the same pods (status.startup).
    learned = recorded["llama-3-1-8b"]["startup"]
    assert learned is not None
    assert learned["samples"] >= 1, learned
    side_by_side = [
        [cell.strip() for cell in line.split("|")[1:-1]]
        for line in markdown.splitlines()
        if line.startswith("| llama-3-1-8b | ") and line.count("|") == 7
    ]
    assert [cells[3:] for cells in side_by_side] == [
        [_median(learned.get("coldSeconds")), _median(learned.get("warmSeconds")), str(learned["samples"])]
    ]


def _median(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
