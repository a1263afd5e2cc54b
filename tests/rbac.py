"""The cluster tests' operator runs with the chart's own ServiceAccount and RBAC, nothing more.

`helm template` renders the chart's ServiceAccount, ClusterRole, Roles and bindings; the test's
admin credentials apply them (server-side apply); the operator gets a kubeconfig whose only
credential is a TokenRequest token of that ServiceAccount. Neither Python client honours a
kubeconfig's `as:` impersonation, and the token is the ServiceAccount's own identity, not an
approximation of it. A verb the chart lacks is a 403 in the test that needs it; a verb taken out
of the chart fails the tests of the behaviour that uses it.

An operator started with `--namespace` flags runs under the chart rendered with the same
`watchNamespaces` (a Role in each of those namespaces); without, under the chart's default
cluster-wide ClusterRole.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.binaries import locate_binaries
from tests.support import token_kubeconfig

RBAC_SETTLED_AT = pytest.StashKey[datetime]()
"""When the API server's authorizer was ready again, for a test that restarts it."""

CHART = Path(__file__).parents[1] / "charts" / "inferfleet"
# The API server's RBAC refusal ('User "system:serviceaccount:..." cannot patch resource ...') and
# kopf's fallback when it may not list or watch something.
DENIED = re.compile(r"cannot \w+ resource|Not enough permissions")
RBAC_TEMPLATES = ("templates/serviceaccount.yaml", "templates/rbac.yaml", "templates/gateway-rbac.yaml")
FIELD_MANAGER = "inferfleet-tests"
APPLY_PATCH = "application/apply-patch+yaml"


LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")


def _logged_at(line: str) -> datetime | None:
    match = LOG_TIME.match(line)
    if match is None:
        return None
    at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    return at.replace(microsecond=int(match.group(2)) * 1000)


def rbac_denials(log: str, settled_at: datetime | None = None) -> list[str]:
    """The lines of an operator's log where RBAC refused it something.

    With `settled_at` (local time, as the log's), refusals logged before it are left out: a test
    that restarts the API server sets it once /readyz passes again, because until then the
    authorizer's cache of roles is still filling and refuses what the chart grants."""
    return [
        line[:300]
        for line in log.splitlines()
        if DENIED.search(line)
        and (settled_at is None or (at := _logged_at(line)) is None or at >= settled_at)
    ]


def render_chart_rbac(
    release: str, namespace: str, watch_namespaces: Sequence[str] = (), sets: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The ServiceAccount and RBAC objects the chart installs with these values."""
    binaries = locate_binaries()
    flags = [f for s in sets for f in ("--set", s)]
    if watch_namespaces:
        flags += ["--set", "watchNamespaces={" + ",".join(watch_namespaces) + "}"]
    shown = [f for t in RBAC_TEMPLATES for f in ("--show-only", t)]
    # Our helm is built without the ldflags that set its default Kubernetes version (v1.20).
    args = [str(binaries.helm), "template", release, str(CHART), "-n", namespace,
            "--kube-version", binaries.kube_version, *shown, *flags]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed: {result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _appliers(api: client.ApiClient) -> dict[str, Callable[..., Any]]:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    return {
        "ServiceAccount": core.patch_namespaced_service_account,
        "ClusterRole": rbac.patch_cluster_role,
        "ClusterRoleBinding": rbac.patch_cluster_role_binding,
        "Role": rbac.patch_namespaced_role,
        "RoleBinding": rbac.patch_namespaced_role_binding,
    }


def apply_chart_objects(api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    """Server-side apply: created when absent, and a rule gone from the chart is gone here too."""
    appliers = _appliers(api)
    for doc in docs:
        meta = doc["metadata"]
        where = [meta["namespace"]] if "namespace" in meta else []
        appliers[doc["kind"]](
            meta["name"], *where, doc, field_manager=FIELD_MANAGER, force=True, _content_type=APPLY_PATCH
        )


def delete_chart_objects(api: client.ApiClient, docs: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    deletes = {
        "ClusterRole": rbac.delete_cluster_role,
        "ClusterRoleBinding": rbac.delete_cluster_role_binding,
    }
    for doc in docs:
        if doc["kind"] in deletes:  # the rest lives in namespaces deleted with the tests
            try:
                deletes[doc["kind"]](doc["metadata"]["name"])
            except ApiException as e:
                if e.status != 404:
                    raise


@dataclass
class ChartIdentity:
    """Two installations of the chart's RBAC in one namespace of the test cluster: the default
    (cluster-wide) and a namespaced one, whose Roles follow the namespaces an operator watches."""

    api: client.ApiClient
    admin_kubeconfig: Path
    namespace: str = field(default_factory=lambda: f"inferfleet-rbac-{uuid.uuid4().hex[:6]}")
    applied: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def cluster_wide_release(self) -> str:
        return self.namespace  # contains the chart's name: the objects are named after the release

    @property
    def namespaced_release(self) -> str:
        return f"{self.namespace}-scoped"

    def install(self) -> None:
        client.CoreV1Api(self.api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )
        self._apply(render_chart_rbac(self.cluster_wide_release, self.namespace))

    def uninstall(self) -> None:
        delete_chart_objects(self.api, list(self.applied.values()))
        client.CoreV1Api(self.api).delete_namespace(self.namespace)

    def service_account(self, namespaces: Sequence[str] = ()) -> str:
        """The ServiceAccount (in `self.namespace`) of an operator that watches `namespaces`."""
        return self.namespaced_release if namespaces else self.cluster_wide_release

    def kubeconfig(self, path: Path, namespaces: Sequence[str] = ()) -> Path:
        """A kubeconfig for an operator that watches `namespaces` (every namespace if empty)."""
        if namespaces:
            self._apply(render_chart_rbac(self.namespaced_release, self.namespace, namespaces))
        core = client.CoreV1Api(self.api)
        account = self.service_account(namespaces)
        return token_kubeconfig(core, self.admin_kubeconfig, account, self.namespace, path)

    def gateway_kubeconfig(self, path: Path, namespaces: Sequence[str] = ()) -> Path:
        """A kubeconfig of the chart's gateway ServiceAccount, serving `namespaces` (all if empty)."""
        release = self.namespaced_release if namespaces else self.cluster_wide_release
        docs = render_chart_rbac(release, self.namespace, namespaces)
        self._apply(docs)
        [account] = [
            d["metadata"]["name"]
            for d in docs
            if d["kind"] == "ServiceAccount" and "gateway" in d["metadata"]["name"]
        ]
        return token_kubeconfig(
            client.CoreV1Api(self.api), self.admin_kubeconfig, account, self.namespace, path
        )

    def _apply(self, docs: list[dict[str, Any]]) -> None:
        apply_chart_objects(self.api, docs)
        self.applied |= {
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs
        }
