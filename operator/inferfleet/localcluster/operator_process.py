"""Run the operator (`inferfleet run`) as a background process against a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from inferfleet.localcluster.ports import free_ports
from inferfleet.localcluster.waiting import GiveUpError, wait_for


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log_path: Path
    namespaces: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    launcher: list[str] = field(default_factory=lambda: [sys.executable, "-m", "inferfleet"])
    """The argv that runs the `inferfleet` command (another environment's, e.g. the image's)."""
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

    def command(self) -> list[str]:
        """The process's argv (ports are chosen by then)."""
        args = [*self.launcher, "run", "--kubeconfig", str(self.kubeconfig), "--verbose",
                "--liveness", self.liveness_url,
                "--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1"]  # fmt: skip
        for ns in self.namespaces:
            args += ["--namespace", ns]
        return [*args, *self.extra_args]

    def start(self, *, timeout_seconds: float = 60) -> None:
        # Distinct: the metrics server answers any path, so a shared port would pass the
        # liveness check while kopf's own health endpoint failed to bind.
        liveness, metrics = free_ports(2)
        self.liveness_port = self.liveness_port or liveness
        self.metrics_port = self.metrics_port or metrics
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=os.environ | self.env,
        )
        try:
            wait_for(self.healthy, timeout=timeout_seconds, what=f"operator liveness at {self.liveness_url}")
        except Exception as e:
            self.kill()  # a caller that sees start() fail has no process to stop
            raise RuntimeError(f"{e}; operator log tail:\n{self.log_text()[-3000:]}") from e

    def healthy(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            code = self._process.returncode if self._process else None
            raise GiveUpError(f"operator is not running (exit code {code}); log: {self.log_path}")
        with urllib.request.urlopen(self.liveness_url, timeout=2) as r:
            # kopf's probe results, with the operator's version probe: not any server on the port.
            return bool(r.status == 200 and "version" in json.loads(r.read() or b"{}"))

    def stop(self, *, timeout_seconds: float = 30) -> int | None:
        """SIGTERM and wait, as Kubernetes stops a pod; SIGKILL if it does not exit in time."""
        if self._process is None:
            return None
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._close()
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._close()

    def _close(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
