"""The local Prometheus scrapes exporters on 127.0.0.1 and answers PromQL."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Gauge

from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import wait_for
from inferfleet.metrics.prometheus import MetricsUnavailableError, QueueReader
from inferfleet.planning.queue_queries import QueueSample
from inferfleet.runtime.config import PrometheusConfig
from inferfleet.sim.exporter import start_text_exporter


@pytest.fixture
def exporter() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge("vllm:num_requests_waiting", "Requests waiting", ["model_name"], registry=registry)
    exporter = start_text_exporter(registry)
    try:
        yield exporter.address, gauge
    finally:
        exporter.stop()


def test_prometheus_scrapes_an_added_target_and_promql_returns_the_exported_value(
    prometheus: LocalPrometheus, exporter: tuple[str, Gauge]
) -> None:
    address, gauge = exporter
    gauge.labels(model_name="llama").set(7)
    prometheus.add_target("engine-probe", address, {"inferfleet_io_service": "llama"})
    prom = PrometheusConnect(url=prometheus.url, disable_ssl=True)
    query = 'sum by (inferfleet_io_service) (vllm:num_requests_waiting{job="engine-probe"})'

    def value() -> float | None:
        result = prom.custom_query(query)
        return float(result[0]["value"][1]) if result else None

    assert wait_for(value, timeout=30, what="the first scrape of the exporter") == 7.0
    assert prom.custom_query(query)[0]["metric"] == {"inferfleet_io_service": "llama"}

    gauge.labels(model_name="llama").set(12)
    wait_for(lambda: value() == 12.0, timeout=30, what="the next scrape to see the new value")
    prometheus.remove_target("engine-probe")


PASSWORD = "hunter2-not-for-status"


def bcrypt_hash(password: str) -> str:
    """Prometheus' basic_auth_users take bcrypt; libxcrypt (glibc's libcrypt) makes one."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = lib.crypt.restype = ctypes.c_char_p
    salt = lib.crypt_gensalt(b"$2b$", 4, None, 0)
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        pytest.skip("this libcrypt cannot make bcrypt hashes")
    return str(hashed.decode())


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run(["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1",
         "-subj", "/CN=inferfleet test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])  # fmt: skip
    run(["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"])
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", ext])  # fmt: skip
    return ca, cert, key


@pytest.fixture
def secured_prometheus(tmp_path: Path) -> Iterator[tuple[LocalPrometheus, Path]]:
    ca, cert, key = make_pki(tmp_path)
    prom = LocalPrometheus(
        workdir=tmp_path / "prometheus",
        web_config={
            "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
            "basic_auth_users": {"inferfleet": bcrypt_hash(PASSWORD)},
        },
        ca_file=ca,
        auth=("inferfleet", PASSWORD),
    )
    prom.start()
    try:
        yield prom, ca
    finally:
        prom.stop()


def refusal(reader: QueueReader) -> str:
    with pytest.raises(MetricsUnavailableError) as failed:
        reader.read_override("vector(3)")
    return str(failed.value)


def test_the_autoscaler_reaches_prometheus_over_verified_tls_with_basic_auth_and_keeps_secrets(
    secured_prometheus: tuple[LocalPrometheus, Path], tmp_path: Path
) -> None:
    prom, ca = secured_prometheus
    (tmp_path / "username").write_text("inferfleet\n")
    (tmp_path / "password").write_text(f"{PASSWORD}\n")
    files = {"username_file": str(tmp_path / "username"), "password_file": str(tmp_path / "password")}

    verified = QueueReader(PrometheusConfig(url=prom.url, ca_file=str(ca), **files))
    assert verified.read_override("vector(3)") == QueueSample(3.0, None)

    # The system's CAs do not know the test CA: verification is on by default.
    untrusted = QueueReader(PrometheusConfig(url=prom.url, **files))
    assert refusal(untrusted) == (
        "Prometheus query failed: TLS certificate not trusted (unable to get local issuer certificate)"
    )
    skipping = QueueReader(PrometheusConfig(url=prom.url, insecure_skip_verify=True, **files))
    assert skipping.read_override("vector(3)") == QueueSample(3.0, None)

    # Credentials in the URL work as basic auth; a wrong one is named as such, the URL never.
    in_url = prom.url.replace("https://", f"https://inferfleet:{PASSWORD}@")
    assert (
        QueueReader(PrometheusConfig(url=in_url, ca_file=str(ca))).read_override("vector(3)").waiting == 3.0
    )
    wrong_url = prom.url.replace("https://", "https://inferfleet:wrong-password@")
    wrong = refusal(QueueReader(PrometheusConfig(url=wrong_url, ca_file=str(ca))))
    assert wrong == "Prometheus query failed: HTTP 401: Prometheus refused the operator's credentials"
    no_ca_in_url = refusal(QueueReader(PrometheusConfig(url=in_url)))
    assert PASSWORD not in no_ca_in_url
    assert "127.0.0.1" not in no_ca_in_url
