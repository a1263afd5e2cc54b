"""JSON logs name the InferenceService a line is about, also from the operator's worker threads."""

from __future__ import annotations

import json
import subprocess
import sys

# kopf.configure() installs process-wide log handlers: run it in a process of its own.
SCRIPT = """
import kopf
from inferfleet.handlers.logs import service_logger
kopf.configure(log_format=kopf.LogFormat.JSON)  # what `inferfleet run --log-json` does
body = {"apiVersion": "inferfleet.io/v1alpha1", "kind": "InferenceService",
        "metadata": {"namespace": "team-a", "name": "llama", "uid": "u-1"}}
service_logger(body).warning("scaled 1 -> 3: queue 40 over target 4 (ScaleUpQueue)")
"""


def test_a_service_log_line_in_json_carries_its_namespace_and_name() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    [line] = [json.loads(x) for x in result.stderr.splitlines() if "scaled" in x]
    assert line["message"].startswith("scaled 1 -> 3")
    assert line["severity"] == "warn"
    assert (line["object"]["namespace"], line["object"]["name"]) == ("team-a", "llama")
    assert line["object"]["kind"] == "InferenceService"
