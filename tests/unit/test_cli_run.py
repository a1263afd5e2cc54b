import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("kubeconfig", ["{}\n", "apiVersion: v1\nkind: Config\nclusters: []\n"])
def test_run_exits_at_once_with_the_reason_when_the_credentials_are_unusable(
    tmp_path: Path, kubeconfig: str
) -> None:
    """Not a retry loop that never serves liveness: in a pod, the restart shows the reason."""
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no KUBERNETES_SERVICE_HOST: not in a pod
    result = subprocess.run([sys.executable, "-m", "inferfleet", "run", "--kubeconfig", str(path)],
                            capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert result.returncode == 1
    assert "error: no usable Kubernetes credentials: Invalid kube-config file" in result.stderr


def test_building_the_parser_loads_no_kubernetes_client() -> None:
    """The client fixes its kubeconfig path when imported: `--kubeconfig` works only if nothing
    imports it before the command sets KUBECONFIG."""
    code = (
        "import sys; from inferfleet.cli import build_parser; build_parser(); "
        "print('kubernetes' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_gateway_command_serves_until_sigterm_then_exits_cleanly(loop: str) -> None:
    import json
    import signal
    import urllib.request

    from inferfleet.localcluster.ports import free_ports
    from inferfleet.localcluster.waiting import wait_for

    port, metrics = free_ports(2)
    args = [sys.executable, "-m", "inferfleet", "gateway", "--static-endpoints", "tiny=http://127.0.0.1:9",
            "--host", "127.0.0.1", "--port", str(port), "--metrics-address", "127.0.0.1",
            "--metrics-port", str(metrics), "--event-loop", loop]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(ready, timeout=30, what="the gateway's /readyz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            assert [m["id"] for m in json.load(r)["data"]] == ["tiny"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "flag",
    ["--prefix-load-slack=-1", "--prefix-load-slack=1025", "--prefix-load-bound=11", "--max-attempts=0"],
)
def test_gateway_refuses_an_out_of_range_setting_at_once_with_the_ranges(flag: str) -> None:
    """Exit 2 naming the allowed ranges, before it binds a port or reads a cluster."""
    result = subprocess.run([sys.executable, "-m", "inferfleet", "gateway", flag],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "0 <= --prefix-load-slack <= 1024" in result.stderr
