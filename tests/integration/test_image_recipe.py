"""The operator image's install recipe, replayed without Docker (none runs here).

The Dockerfile installs only the project's runtime dependencies into a virtualenv, then the
package without its dependencies, then removes pip. The same steps into a fresh virtualenv must
give an `inferfleet` that reconciles a service on the local cluster: a module that needs a
development-only dependency, or a file missing from the installed package, fails here instead
of in a user's cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from inferfleet.localcluster.operator_process import OperatorProcess
from tests.conftest import Cluster
from tests.integration.test_reconcile import create, small_service, wait_ready

pytestmark = pytest.mark.usefixtures("crds_installed")

REPO = Path(__file__).resolve().parents[2]
RECIPE_STEPS = (
    "COPY pyproject.toml ./",
    "pip install -r requirements.txt",
    "COPY operator ./operator",
    "pip install --no-deps .",
    "pip uninstall -q -y pip",
    "USER 65532:65532",
)


def run(*args: str | Path, cwd: Path | None = None) -> None:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"


def test_the_dockerfile_recipe_installs_an_operator_that_reconciles(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for step in RECIPE_STEPS:  # the recipe replayed below is still the Dockerfile's
        assert step in dockerfile, step

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "operator", src / "operator", ignore=skip)
    pyproject = tomllib.loads((src / "pyproject.toml").read_text())
    (src / "requirements.txt").write_text("\n".join(pyproject["project"]["dependencies"]) + "\n")

    venv = tmp_path / "image-venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    pip = (python, "-m", "pip", "install", "-q", "--disable-pip-version-check")
    run(*pip, "-r", "requirements.txt", cwd=src)
    run(*pip, "--no-deps", ".", cwd=src)
    run(python, "-m", "pip", "uninstall", "-q", "-y", "pip")

    op = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        log_path=tmp_path / "image-operator.log",
        namespaces=[namespace],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        python=str(python),
    )
    op.start()
    try:
        create(cluster, namespace, small_service("from-the-image"))
        wait_ready(cluster, namespace, "from-the-image")
        assert op.healthy()
        assert "Traceback" not in op.log_text()
    finally:
        op.stop()
