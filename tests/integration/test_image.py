"""The operator image, built from the Dockerfile and run the way the chart's pod runs it.

No Docker engine runs here, so `hack/build-image.sh` builds the Dockerfile with buildah. No
container registry is reachable either: the Dockerfile's base (python:3.11.13-slim-bookworm) is
replaced by a stand-in from Debian's own packages (bookworm and its Python 3.11; see the
script). Everything the Dockerfile does on top of its base is what is tested here. The image
then runs as the chart's restricted pod would run it: its own root filesystem mounted read-only,
a tmpfs at /tmp (the chart's emptyDir), the image's user, environment and entrypoint, nothing of
the host's environment.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.ports import free_port
from inferfleet.localcluster.private_network import on_host_network
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.integration.test_reconcile import create, small_service, wait_ready
from tests.rbac import ChartIdentity
from tests.unit.test_chart_render import NS, container, one, render

pytestmark = pytest.mark.usefixtures("crds_installed")

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/inferfleet:test"

RUN_LIKE_A_POD = r"""
set -eu
root=$1; user=$2; shift 2
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o nosuid,nodev tmpfs "$root/tmp"
mount --rbind /dev "$root/dev"
mount --bind /proc "$root/proc"
exec chroot --userspec="$user" "$root" "$@"
"""
"""Run in a private mount namespace (unshare --mount), so the mounts vanish with the process.
Every step ends in exec: the process the test starts and signals is the operator itself."""


@dataclass(frozen=True)
class Image:
    rootfs: Path
    config: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config["Env"])

    def launcher(self) -> list[str]:
        """The argv that runs the image's entrypoint as its user on a read-only root."""
        config = self.config
        return ["unshare", "--mount", "--", "sh", "-c", RUN_LIKE_A_POD, "sh", str(self.rootfs),
                config["User"], "env", "-i", *config["Env"], *config["Entrypoint"]]  # fmt: skip


def buildah(*args: str) -> str:
    result = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"buildah {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    script = REPO / "hack" / "build-image.sh"
    # pip in the build stage needs the package index: outside the session's private network
    built = subprocess.run(
        on_host_network(["bash", str(script), TAG]), capture_output=True, text=True, timeout=1500
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    name = f"inferfleet-test-{uuid.uuid4().hex[:6]}"
    buildah("from", "--pull-never", "--name", name, TAG)
    try:
        rootfs = Path(buildah("mount", name).strip())
        config = json.loads(buildah("inspect", "--type", "container", name))["OCIv1"]["config"]
        yield Image(rootfs, config)
    finally:
        buildah("rm", name)


def flattened_kubeconfig(path: Path) -> dict[str, Any]:
    """The kubeconfig with its certificate files inlined: the container cannot see the host's files."""
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    for section, entry_key in (("clusters", "cluster"), ("users", "user")):
        for entry in config[section]:
            body = entry[entry_key]
            for key in ("certificate-authority", "client-certificate", "client-key"):
                if key in body:
                    body[f"{key}-data"] = base64.b64encode(Path(body.pop(key)).read_bytes()).decode()
    return config


def test_the_image_runs_inferfleet_as_the_charts_non_root_user_without_installer_or_build_tools(
    image: Image,
) -> None:
    chart = render()
    pod = one(chart, "Deployment", NS)["spec"]["template"]["spec"]["securityContext"]
    assert image.config["User"] == f"{pod['runAsUser']}:{pod['runAsGroup']}" == "65532:65532"
    assert container(chart)["securityContext"]["readOnlyRootFilesystem"] is True
    assert image.config["Entrypoint"] == ["inferfleet"]
    assert image.config["Cmd"] == ["run"]
    assert image.env["PATH"].startswith("/opt/inferfleet/bin:")
    assert image.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "inferfleet:x:65532:65532:" in (image.rootfs / "etc" / "passwd").read_text()

    venv = image.rootfs / "opt" / "inferfleet"
    assert (venv / "bin" / "inferfleet").is_file()
    assert not list((venv / "bin").glob("pip*")), "pip is removed from the runtime environment"
    assert not (image.rootfs / "src").exists(), "the build stage's sources stay in the build stage"
    for tool in ("gcc", "cc", "make", "git"):
        assert not (image.rootfs / "usr" / "bin" / tool).exists(), tool
    # Bytecode is compiled at build time: the read-only root filesystem cannot take it later.
    assert list(venv.glob("lib/python3*/site-packages/inferfleet/planning/__pycache__/scaling.*.pyc"))


def test_the_image_reconciles_a_service_as_its_user_on_a_read_only_root_filesystem(
    image: Image, cluster: Cluster, chart_identity: ChartIdentity, namespace: str, tmp_path: Path
) -> None:
    # Written before the root is mounted read-only, in this test's own working container; the
    # identity is the chart's ServiceAccount with the chart's RBAC, as in a real install.
    inside = Path("/etc/inferfleet-test/kubeconfig")
    kubeconfig = image.rootfs / inside.relative_to("/")
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    identity = chart_identity.kubeconfig(tmp_path / "chart-sa.yaml", namespaces=[namespace])
    kubeconfig.write_text(yaml.safe_dump(flattened_kubeconfig(identity)))
    kubeconfig.chmod(0o644)

    op = OperatorProcess(
        kubeconfig=inside,
        log_path=tmp_path / "image-operator.log",
        namespaces=[namespace],
        launcher=image.launcher(),
    )
    op.start()
    try:
        status = Path(f"/proc/{op.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {"65532"}, status
        create(cluster, namespace, small_service("from-the-image"))
        wait_ready(cluster, namespace, "from-the-image")
        assert op.healthy()
        log = op.log_text()
        assert "Traceback" not in log
        assert "Read-only file system" not in log
    finally:
        op.stop()


def test_the_image_serves_as_the_e2e_workflows_simulated_engine_and_load_job(image: Image) -> None:
    """.github/workflows/e2e.yml runs this image with `sim-engine` args as the model server and
    with `sim-load` as a Job against it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["sim-engine", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port)]
    engine = subprocess.Popen([*image.launcher(), *serve], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def healthy() -> bool:
            assert engine.poll() is None, engine.stdout.read() if engine.stdout else ""
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return bool(r.status == 200)

        wait_for(healthy, timeout=60, what="sim-engine /health from the image")
        send = ["sim-load", "--url", url, "--rps", "10", "--duration", "2", "--seed", "1"]
        load = subprocess.run([*image.launcher(), *send], capture_output=True, text=True, timeout=120)
        assert load.returncode == 0, load.stdout + load.stderr
        ok = int(re.search(r"ok=(\d+) errors=0", load.stdout).group(1))  # type: ignore[union-attr]
        assert ok > 0
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        served = re.search(r"^vllm:request_success_total\{[^}]*\} (\S+)$", metrics, re.MULTILINE)
        assert served is not None, metrics
        assert float(served.group(1)) == ok
    finally:
        engine.terminate()
        engine.wait(timeout=60)
