"""The operator under test in the e2e tests: the one installed in the cluster, or one started here."""

from __future__ import annotations

import os

import pytest

IN_CLUSTER = os.environ.get("INFERFLEET_E2E_OPERATOR") == "in-cluster"


@pytest.fixture
def operator(request: pytest.FixtureRequest, namespace: str) -> None:
    """An operator reconciling `namespace`.

    INFERFLEET_E2E_OPERATOR=in-cluster (the kind workflow): the helm-installed operator, which
    watches every namespace, with the chart's CRDs. Otherwise `inferfleet run` is started here for
    this namespace, after the repo's CRDs are applied.
    """
    if IN_CLUSTER:
        return
    request.getfixturevalue("crds_installed")
    request.getfixturevalue("run_operator")(namespaces=[namespace])
