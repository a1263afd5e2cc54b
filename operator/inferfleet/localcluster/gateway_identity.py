"""The chart's gateway identity on the local cluster: its ServiceAccount and RBAC, nothing more.

`helm template` renders the chart's gateway ServiceAccount with its Role in each served
namespace (templates/gateway-rbac.yaml, `watchNamespaces`); server-side apply installs them; the
gateway gets a kubeconfig whose only credential is a TokenRequest token of that ServiceAccount.
So the gateway `inferfleet demo` starts may do what the chart lets it do in production, and no
more. (tests/rbac.py does the same for the tests, with the operator's identity too.)
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from inferfleet.localcluster.binaries import locate_binaries
from inferfleet.localcluster.paths import repo_root

FIELD_MANAGER = "inferfleet-localcluster"
APPLY_PATCH = "application/apply-patch+yaml"
TOKEN_SECONDS = 24 * 3600
"""Longer than any demo runs: the gateway never needs a renewal."""


def render_gateway_rbac(release: str, namespace: str, served: Sequence[str]) -> list[dict[str, Any]]:
    """The chart's gateway ServiceAccount and, for each served namespace, its Role and RoleBinding."""
    binaries = locate_binaries()
    chart = repo_root() / "charts" / "inferfleet"
    # Our helm is built without the ldflags that set its default Kubernetes version (v1.20).
    args = [str(binaries.helm), "template", release, str(chart), "-n", namespace,
            "--kube-version", binaries.kube_version, "--show-only", "templates/gateway-rbac.yaml",
            "--set", "watchNamespaces={" + ",".join(served) + "}"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def apply_objects(api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    appliers = {
        "ServiceAccount": core.patch_namespaced_service_account,
        "Role": rbac.patch_namespaced_role,
        "RoleBinding": rbac.patch_namespaced_role_binding,
    }
    for doc in docs:
        meta = doc["metadata"]
        appliers[doc["kind"]](
            meta["name"], meta["namespace"], doc, field_manager=FIELD_MANAGER, force=True,
            _content_type=APPLY_PATCH,
        )  # fmt: skip


def token_kubeconfig(
    core: client.CoreV1Api, admin_kubeconfig: Path, account: str, namespace: str, path: Path
) -> Path:
    """`admin_kubeconfig` with the ServiceAccount's token as its only credential."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    kubeconfig = yaml.safe_load(admin_kubeconfig.read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": token}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return path


def install_gateway_identity(
    api: client.ApiClient, admin_kubeconfig: Path, served: Sequence[str], path: Path,
    *, namespace: str = "inferfleet-system", release: str = "inferfleet",
) -> Path:  # fmt: skip
    """Install the chart's gateway RBAC for `served` namespaces; its kubeconfig, written to `path`."""
    core = client.CoreV1Api(api)
    if namespace not in {ns.metadata.name for ns in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": namespace}})
    docs = render_gateway_rbac(release, namespace, served)
    apply_objects(api, docs)
    [account] = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    return token_kubeconfig(core, admin_kubeconfig, account, namespace, path)
