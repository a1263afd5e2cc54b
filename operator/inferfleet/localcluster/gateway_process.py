"""Run the gateway (`inferfleet gateway`) as a background process against a cluster, on 127.0.0.1."""

from __future__ import annotations

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
class GatewayProcess:
    kubeconfig: Path
    log_path: Path
    namespaces: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    metrics_port: int = 0
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "inferfleet", "gateway", "--kubeconfig", str(self.kubeconfig),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port)]  # fmt: skip
        for ns in self.namespaces:
            args += ["--namespace", ns]
        return [*args, *self.extra_args]

    def start(self, *, timeout_seconds: float = 60) -> None:
        """Start it and wait until it has synced its InferenceService and EndpointSlice caches."""
        port, metrics = free_ports(2)
        self.port, self.metrics_port = self.port or port, self.metrics_port or metrics
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=os.environ
        )
        try:
            wait_for(self.ready, timeout=timeout_seconds, what=f"gateway /readyz on :{self.metrics_port}")
        except Exception as e:
            self.kill()
            raise RuntimeError(f"{e}; gateway log tail:\n{self.log_text()[-3000:]}") from e

    def ready(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            code = self._process.returncode if self._process else None
            raise GiveUpError(f"gateway is not running (exit code {code}); log: {self.log_path}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as r:
            return bool(r.status == 200)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (requests in flight finish), then SIGKILL after `timeout`; the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        code = self._process.returncode
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
