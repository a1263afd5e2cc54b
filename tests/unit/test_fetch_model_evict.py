"""`inferfleet fetch-model SOURCE --evict` as a process: the eviction Job's entrypoint removes a
model from a node's cache under its fetch lock, and a later fetch downloads it again."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferfleet.localcluster.file_standin import Traffic, build_fake_model
from inferfleet.localcluster.hf_standin import HubStandin
from inferfleet.localcluster.waiting import wait_for
from inferfleet.weights.sources import build_cache_key, parse_source

MODEL = build_fake_model()


@dataclass(frozen=True)
class Hub:
    url: str
    traffic: Traffic


URI = "hf://acme/tiny-llama"
TOKEN = "hf_test_token"


@pytest.fixture
def hub() -> Iterator[Hub]:
    standin = HubStandin("acme/tiny-llama", MODEL, token=TOKEN)
    yield Hub(standin.start(), standin.traffic)
    standin.stop()


def run(root: Path, hub: Hub, *extra: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_"))}
    env = {**clean, "HF_HOME": str(root.parent / "hf-home"), "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
    return subprocess.Popen(
        [sys.executable, "-m", "inferfleet", "fetch-model", URI, "--cache-root", str(root), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr.open("w") if stderr else subprocess.PIPE,
        text=True,
    )


def outcome(process: subprocess.Popen[str]) -> tuple[int, dict[str, object]]:
    stdout, _ = process.communicate(timeout=60)
    return process.returncode, json.loads(stdout.strip().splitlines()[-1])


def model_dir(root: Path) -> Path:
    return root / build_cache_key(parse_source(URI))


def test_evict_removes_every_revision_and_ref_and_a_fetch_downloads_again(hub: Hub, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    code, fetched = outcome(run(root, hub))
    assert code == 0, fetched
    assert Path(str(fetched["path"])).is_dir()

    on_disk = sum(p.stat().st_size for p in model_dir(root).rglob("*") if p.is_file() and p.name != ".lock")
    termination = tmp_path / "termination-log"
    code, evicted = outcome(run(root, hub, "--evict", "--termination-log", str(termination)))
    assert code == 0, evicted
    assert json.loads(termination.read_text()) == evicted
    assert (evicted["evicted"], evicted["revisions"]) == (True, [fetched["revision"]])
    assert evicted["bytes"] == on_disk >= int(str(fetched["bytes"])), "every file but the lock, counted"
    assert sorted(p.name for p in model_dir(root).iterdir()) == [".lock"], "the lock stays, nothing else"

    served = hub.traffic.total
    code, again = outcome(run(root, hub))
    assert code == 0, again
    assert again["from_cache"] is False
    assert hub.traffic.total - served >= int(str(fetched["bytes"])), "downloaded again"


def test_evict_waits_for_a_fetch_holding_the_models_lock(hub: Hub, tmp_path: Path) -> None:
    root, log = tmp_path / "cache", tmp_path / "evict.stderr"
    code, fetched = outcome(run(root, hub))
    assert code == 0, fetched
    with open(model_dir(root) / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running fetch of the model holds it
        evicting = run(root, hub, "--evict", stderr=log)
        wait_for(lambda: "waiting for a fetch" in log.read_text(), timeout=30, what="the eviction to wait")
        assert Path(str(fetched["path"])).is_dir(), "nothing removed while the fetch holds the lock"
        fcntl.flock(lock, fcntl.LOCK_UN)
    code, evicted = outcome(evicting)
    assert (code, evicted["evicted"]) == (0, True)
    assert not Path(str(fetched["path"])).exists()


def test_evicting_a_model_the_node_does_not_hold_changes_nothing(hub: Hub, tmp_path: Path) -> None:
    code, evicted = outcome(run(tmp_path / "cache", hub, "--evict"))
    assert (code, evicted["evicted"], evicted["bytes"]) == (0, False, 0)
    assert hub.traffic.total == 0, "an eviction never calls the source"


def test_evicting_a_bad_uri_is_a_usage_error(hub: Hub, tmp_path: Path) -> None:
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferfleet",
            "fetch-model",
            "oci://r/m",
            "--evict",
            "--cache-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2
    assert json.loads(process.stdout)["error"] == "Unsupported"
