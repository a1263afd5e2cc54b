"""Starting and stopping the engines and proxies as processes of their own (CPU per process)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from inferfleet.localcluster.waiting import GiveUpError, wait_for

STOP_SECONDS = 10.0


@dataclass
class Process:
    name: str
    command: list[str]
    ready_url: str
    log_path: Path
    stop_signal: int = signal.SIGTERM
    _popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self._popen is not None, f"{self.name} was not started"
        return self._popen.pid

    def start(self, timeout: float = 60.0) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._popen = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, timeout=timeout, what=f"{self.name} at {self.ready_url}")
        except Exception as e:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {e}; log: {self.log_path}") from e
        return self

    def _ready(self) -> bool:
        if self._popen is None or self._popen.poll() is not None:
            code = None if self._popen is None else self._popen.returncode
            raise GiveUpError(f"{self.name} exited with {code}")
        with urllib.request.urlopen(self.ready_url, timeout=2) as r:
            return bool(r.status == 200)

    def stop(self) -> int | None:
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.send_signal(self.stop_signal)
            try:
                self._popen.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        if self._log is not None:
            self._log.close()
        return self._popen.returncode


def post_json(url: str, body: dict[str, object], timeout: float = 10.0) -> tuple[int, str, bytes]:
    """(status, content type, body) of one POST; HTTP errors are answers too."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def streams(base_url: str, model: str) -> bool:
    """Whether the server answers a streamed completion with server-sent events."""
    status, content_type, _ = post_json(
        f"{base_url}/v1/completions", {"model": model, "prompt": "probe", "max_tokens": 2, "stream": True}
    )
    return status == 200 and content_type.startswith("text/event-stream")


def has_command(command: list[str]) -> bool:
    """Whether `command --help` runs (the gateway arm waits for `inferfleet gateway` to exist)."""
    result = subprocess.run(
        [*command, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ
    )
    return result.returncode == 0
