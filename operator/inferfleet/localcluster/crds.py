"""Install the generated CRDs into a cluster and wait until the API server serves them."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import yaml
from kubernetes import client

from inferfleet.crdfiles import DEFAULT_CRD_DIR
from inferfleet.kube.apply import APPLY_PATCH
from inferfleet.localcluster.waiting import wait_for


def install_crds(
    api: client.ApiClient, crd_dir: Path = DEFAULT_CRD_DIR, timeout_seconds: float = 60
) -> list[str]:
    return install_crd_files(api, sorted(crd_dir.glob("*.yaml")), timeout_seconds)


def install_crd_files(api: client.ApiClient, paths: list[Path], timeout_seconds: float = 60) -> list[str]:
    """Apply each CRD file and wait until every one is established; their names."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in paths:
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        ext.patch_custom_resource_definition(
            name, crd, field_manager="inferfleet-dev", force=True, _content_type=APPLY_PATCH
        )
        names.append(name)

    def established(name: str) -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in names:
        wait_for(partial(established, name), timeout=timeout_seconds, what=f"CRD {name} established")
    return names
