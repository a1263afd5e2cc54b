"""Run the naive baseline operator as a background process, like OperatorProcess runs inferfleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from inferfleet.localcluster.ports import free_port
from inferfleet.localcluster.waiting import GiveUpError, wait_for

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    """This environment, with the repository on the path so `bench` imports from any directory."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return dict(os.environ) | {"PYTHONPATH": path}


@dataclass
class NaiveOperatorProcess:
    kubeconfig: Path
    log_path: Path
    liveness_port: int = 0
    metrics_port: int = 0
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.liveness_port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, *, timeout_seconds: float = 60) -> None:
        self.liveness_port = self.liveness_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.reconcile.naive_operator", "--kubeconfig", str(self.kubeconfig),
             "--liveness", self.liveness_url, "--metrics-port", str(self.metrics_port),
             "--verbose"],  # as OperatorProcess runs inferfleet: the same log level
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=_env(),
        )  # fmt: skip
        wait_for(
            self.healthy, timeout=timeout_seconds, what=f"naive operator liveness at {self.liveness_url}"
        )

    def healthy(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise GiveUpError(f"the naive operator is not running; log: {self.log_path}")
        with urllib.request.urlopen(self.liveness_url, timeout=2) as r:
            return bool(r.status == 200)

    def stop(self, *, timeout_seconds: float = 30) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
