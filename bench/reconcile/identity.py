"""A ServiceAccount identity for the operator under test, so the audit log can be filtered by its user."""

from __future__ import annotations

from pathlib import Path

import yaml
from kubernetes import client

OPERATOR_NAMESPACE = "bench-reconcile-operator"
SERVICE_ACCOUNT = "operator"
TOKEN_SECONDS = 6 * 3600


def operator_user(namespace: str = OPERATOR_NAMESPACE, service_account: str = SERVICE_ACCOUNT) -> str:
    """The username the API server gives the ServiceAccount's requests (and writes in the audit log)."""
    return f"system:serviceaccount:{namespace}:{service_account}"


def create_operator_identity(api: client.ApiClient, admin_kubeconfig: Path, path: Path) -> Path:
    """A cluster-admin ServiceAccount and a kubeconfig at `path` with its token as the only credential."""
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
    core.create_namespaced_service_account(OPERATOR_NAMESPACE, {"metadata": {"name": SERVICE_ACCOUNT}})
    client.RbacAuthorizationV1Api(api).create_cluster_role_binding({
        "metadata": {"name": "bench-reconcile-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
    })  # fmt: skip
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    token = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, OPERATOR_NAMESPACE, request)
    kubeconfig = yaml.safe_load(admin_kubeconfig.read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": token.status.token}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig))
    return path
