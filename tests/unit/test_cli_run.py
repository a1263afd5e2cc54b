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
    code = "import sys; from inferfleet.cli import build_parser; build_parser(); print('kubernetes' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False"
