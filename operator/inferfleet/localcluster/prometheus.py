"""A real Prometheus (Debian's package) on 127.0.0.1, scraping targets that tests and the demo add."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from inferfleet.localcluster.paths import cache_dir
from inferfleet.localcluster.ports import free_port
from inferfleet.localcluster.waiting import wait_for


def find_prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError(
            "prometheus is not installed; `apt-get install prometheus` (hack/setup.sh does it)"
        )
    return path


def build_config(
    targets_dir: Path, scrape_interval: str, extra_scrape_configs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": "targets",
                "file_sd_configs": [{"files": [str(targets_dir / "*.json")], "refresh_interval": "1s"}],
            },
            *extra_scrape_configs,
        ],
    }


@dataclass
class LocalPrometheus:
    workdir: Path = field(default_factory=lambda: cache_dir() / "prometheus")
    port: int = 0
    scrape_interval: str = "1s"
    extra_scrape_configs: list[dict[str, Any]] = field(default_factory=list)
    web_config: dict[str, Any] | None = None
    """Prometheus' --web.config.file (tls_server_config, basic_auth_users); None: plain HTTP."""
    ca_file: Path | None = None
    """With TLS: the CA that signed the server's certificate (to check readiness)."""
    auth: tuple[str, str] | None = None
    """With basic_auth_users: a user and password (to check readiness)."""
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        tls = self.web_config is not None and "tls_server_config" in self.web_config
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def targets_dir(self) -> Path:
        return self.workdir / "targets"

    def start(self, *, timeout_seconds: float = 60) -> None:
        self.port = self.port or free_port()
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(
            yaml.safe_dump(build_config(self.targets_dir, self.scrape_interval, self.extra_scrape_configs))
        )
        web = []
        if self.web_config is not None:
            web_file = self.workdir / "web.yml"
            web_file.write_text(yaml.safe_dump(self.web_config))
            web = [f"--web.config.file={web_file}"]
        self._log = (self.workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                find_prometheus(),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                *web,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=timeout_seconds, what=f"Prometheus ready on {self.url}")

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                f"Prometheus exited with {self._process.returncode}; see {self.workdir}/prometheus.log"
            )
        request = urllib.request.Request(f"{self.url}/-/ready")
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None
        with urllib.request.urlopen(request, timeout=2, context=context) as r:
            return bool(r.status == 200)

    def add_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape `address` (host:port on 127.0.0.1) as job `name`; picked up within ~1 s."""
        entry = [{"targets": [address], "labels": {"job": name, **(labels or {})}}]
        tmp = self.targets_dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.replace(self.targets_dir / f"{name}.json")  # atomic: Prometheus never reads half a file

    def remove_target(self, name: str) -> None:
        (self.targets_dir / f"{name}.json").unlink(missing_ok=True)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
