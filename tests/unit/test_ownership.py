"""Only children an InferenceService controls count for it (issue 13, items 4 and 5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from inferfleet.handlers.indexes import ClusterView, EnginePod, GpuPod
from inferfleet.kube import apply
from inferfleet.planning.observed import ObservedGroup, controller_uid, is_controlled_by, pod_controller_uid
from inferfleet.planning.placement import BoundPod, Reservation

VICTIM_UID = "uid-victim"


def ref(uid: str, kind: str = "InferenceService", api: str = "inferfleet.io/v1alpha1", **extra: Any) -> dict:
    return {"apiVersion": api, "kind": kind, "name": "x", "uid": uid, **extra}


@pytest.mark.parametrize(
    ("refs", "uid"),
    [
        ([], ""),
        ([ref("u1", controller=True)], "u1"),
        ([ref("u1")], ""),  # an owner, not the controller
        ([ref("u1", controller=False)], ""),
        ([ref("u1", kind="Deployment", api="apps/v1", controller=True)], ""),
        ([ref("u1", api="evil.io/v1alpha1", controller=True)], ""),
        ([ref("u0"), ref("u1", controller=True)], "u1"),
    ],
)
def test_the_controller_is_the_inference_service_named_with_controller_true(refs: list, uid: str) -> None:
    assert controller_uid({"ownerReferences": refs}) == uid


def test_controlled_needs_the_services_own_uid() -> None:
    child = {"metadata": {"ownerReferences": [ref(VICTIM_UID, controller=True)]}}
    assert is_controlled_by(child, VICTIM_UID)
    assert not is_controlled_by(child, "uid-other")
    assert not is_controlled_by({"metadata": {}}, "")
    assert (
        pod_controller_uid({"ownerReferences": [{"kind": "StatefulSet", "uid": "s1", "controller": True}]})
        == "s1"
    )


def statefulset(namespace: str, service: str, replica: int, uid: str, owner: str | None) -> ObservedGroup:
    meta: dict[str, Any] = {
        "namespace": namespace,
        "name": f"{service}-g{replica}",
        "uid": uid,
        "labels": {"inferfleet.io/service": service, "inferfleet.io/replica": str(replica)},
    }
    if owner is not None:
        meta["ownerReferences"] = [ref(owner, controller=True)]
    annotations = {
        "inferfleet.io/placement-nodes": "h100-a-1,h100-a-2",
        "inferfleet.io/placement-domain": "a",
    }
    obj = {
        "metadata": meta,
        "spec": {
            "replicas": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
            },
        },
    }
    group = ObservedGroup.from_object(obj)
    assert group is not None
    return group


def view(
    groups: list[ObservedGroup], pods: list[GpuPod] = (), service_pods: dict | None = None
) -> ClusterView:  # type: ignore[assignment]
    services = {("ml", "victim"): [{"metadata": {"uid": VICTIM_UID}}]}
    by_key: dict[tuple[str, str], list[ObservedGroup]] = {}
    for g in groups:
        by_key.setdefault((g.namespace, g.service), []).append(g)
    by_node: dict[str, list[GpuPod]] = {}
    for p in pods:
        by_node.setdefault(p.pod.node, []).append(p)
    return ClusterView(services, {}, by_node, by_key, service_pods or {}, {})  # type: ignore[arg-type]


def test_a_forged_statefulset_reserves_nothing_and_is_no_group_of_the_victim() -> None:
    real = statefulset("ml", "victim", 0, "sts-real", VICTIM_UID)
    forged = [
        statefulset("attacker", "victim", 1, "sts-1", None),  # labels and annotation only
        statefulset("attacker", "anyone", 0, "sts-2", "uid-not-a-live-service"),
        statefulset("ml", "victim", 1, "sts-3", None),  # in the victim's namespace, no controller
        statefulset("ml", "victim", 2, "sts-4", "uid-of-an-earlier-victim"),
    ]
    cluster = view([real, *forged])
    assert cluster.groups_of(("ml", "victim")) == [real]
    assert cluster.all_groups() == [real]
    assert cluster.reservations() == [Reservation("ml/victim/0", ("h100-a-1", "h100-a-2"), 8)]


def test_a_pod_claiming_a_group_holds_its_gpus_but_cancels_no_reservation() -> None:
    real = statefulset("ml", "victim", 0, "sts-real", VICTIM_UID)
    member = GpuPod(BoundPod("h100-a-1", 8, "ml/victim/0"), "sts-real")
    impostor = GpuPod(BoundPod("h100-a-2", 1, "ml/victim/0"), "rs-of-someone")
    cluster = view([real], [member, impostor])
    assert sorted(cluster.all_bound(), key=lambda p: p.node) == [
        BoundPod("h100-a-1", 8, "ml/victim/0"),
        BoundPod("h100-a-2", 1, None),
    ]


def test_only_live_services_pods_made_by_a_replica_set_are_replaced_on_node_loss() -> None:
    pods = {
        ("ml", "victim"): [
            EnginePod("victim-abc", "n1", in_group=False, terminating=False, replica_set=True),
            EnginePod("by-hand", "n1", in_group=False, terminating=False, replica_set=False),
        ],
        ("ml", "no-such-service"): [
            EnginePod("x", "n1", in_group=False, terminating=False, replica_set=True)
        ],
    }
    assert view([], service_pods=pods).single_pods_on("n1") == [(("ml", "victim"), "victim-abc")]


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "llama", "namespace": "ml", "ownerReferences": [ref(VICTIM_UID, controller=True)]},
}


class FakeServer:
    """The API server's answers to apply_child's requests, and the requests made."""

    def __init__(self, existing: dict[str, Any] | None) -> None:
        self.existing, self.calls = existing, []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(apply, "_create", self.create)
        monkeypatch.setattr(apply, "_hand_over", lambda api, kind, obj: self.calls.append("hand over"))
        monkeypatch.setattr(apply, "read_object", self.read)
        monkeypatch.setattr(apply, "apply_object", self.apply)

    def create(self, api: Any, obj: dict) -> dict | None:
        self.calls.append("create")
        return None if self.existing else {**obj, "metadata": {**obj["metadata"], "uid": "new"}}

    def read(self, api: Any, kind: str, namespace: str, name: str) -> dict | None:
        self.calls.append("read")
        return self.existing

    def apply(self, api: Any, obj: dict) -> dict:
        self.calls.append("apply")
        return obj


@pytest.mark.parametrize(
    ("known", "existing", "calls"),
    [
        (True, None, ["apply"]),  # the steady state: one request, as before
        (False, None, ["create"]),
        (
            False,
            {"metadata": {"uid": "s1", "ownerReferences": [ref(VICTIM_UID, controller=True)]}},
            ["create", "read", "hand over", "apply"],
        ),
    ],
)
def test_a_child_is_applied_when_known_or_created_or_found_controlled(
    monkeypatch: pytest.MonkeyPatch, known: bool, existing: dict | None, calls: list[str]
) -> None:
    server = FakeServer(existing)
    server.install(monkeypatch)
    apply.apply_child(None, SERVICE, VICTIM_UID, known)  # type: ignore[arg-type]
    assert server.calls == calls


@pytest.mark.parametrize(
    "existing",
    [
        {"metadata": {"uid": "s1"}},  # someone's own Service
        {"metadata": {"uid": "s1", "ownerReferences": [ref("uid-other", controller=True)]}},
    ],
)
def test_a_name_taken_by_an_object_the_service_does_not_control_is_a_conflict_and_left_alone(
    monkeypatch: pytest.MonkeyPatch, existing: dict
) -> None:
    server = FakeServer(existing)
    server.install(monkeypatch)
    with pytest.raises(apply.NameConflictError) as e:
        apply.apply_child(None, SERVICE, VICTIM_UID, known=False)  # type: ignore[arg-type]
    assert server.calls == ["create", "read"]  # never an apply
    assert str(e.value) == (
        "Service llama already exists and is not controlled by this InferenceService; "
        "it is left untouched (rename the service or remove that Service)"
    )


class RecordingPatcher:
    """The patch call of a Kubernetes API class: records each request, answers with `status`
    (an ApiException) or the object sent."""

    def __init__(self, status: int | None = None) -> None:
        self.status, self.requests = status, []

    def __call__(self, name: str, namespace: str, body: Any, **kwargs: Any) -> Any:
        self.requests.append((name, namespace, body, kwargs))
        if self.status is not None:
            raise ApiException(status=self.status, reason="Conflict")
        return body


class Serializer:
    def sanitize_for_serialization(self, obj: Any) -> Any:
        return obj


@pytest.mark.parametrize(("status", "created"), [(None, True), (409, False)])
def test_a_child_is_created_in_one_apply_that_an_existing_object_refuses(
    monkeypatch: pytest.MonkeyPatch, status: int | None, created: bool
) -> None:
    patcher = RecordingPatcher(status)
    monkeypatch.setattr(apply, "_patcher", lambda api, kind: patcher)
    result = apply._create(Serializer(), SERVICE)  # type: ignore[arg-type]
    assert (result is not None) == created
    [(name, namespace, body, kwargs)] = patcher.requests
    assert (name, namespace) == ("llama", "ml")
    assert kwargs == {"field_manager": "inferfleet", "force": True, "_content_type": apply.APPLY_PATCH}
    # The precondition no stored object can meet: present, the API server refuses (409).
    assert body["metadata"]["resourceVersion"] == apply.CREATE_ONLY_RESOURCE_VERSION
    assert "resourceVersion" not in SERVICE["metadata"]  # the planned object is left as it was


def managed(*entries: tuple[str, str]) -> dict[str, Any]:
    fields = [{"manager": m, "operation": op, "fieldsV1": {}} for m, op in entries]
    return {"metadata": {"name": "llama", "namespace": "ml", "managedFields": fields}}


def test_an_earlier_versions_post_ownership_is_handed_over_with_a_guarded_patch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patcher = RecordingPatcher()
    monkeypatch.setattr(apply, "_patcher", lambda api, kind: patcher)
    apply._hand_over(None, "Service", managed(("inferfleet", "Apply")))  # type: ignore[arg-type]
    assert patcher.requests == []  # nothing to hand over: no request
    apply._hand_over(
        None,  # type: ignore[arg-type]
        "Service",
        managed(("kube-controller-manager", "Update"), ("inferfleet", "Update")),
    )
    [(_, _, patch, kwargs)] = patcher.requests
    assert kwargs == {"_content_type": apply.JSON_PATCH}
    assert patch == [
        {"op": "test", "path": "/metadata/managedFields/1/manager", "value": "inferfleet"},
        {"op": "test", "path": "/metadata/managedFields/1/operation", "value": "Update"},
        {"op": "replace", "path": "/metadata/managedFields/1/operation", "value": "Apply"},
    ]


REFUSAL = (
    'Service "llama.v3" is invalid: metadata.name: Invalid value: "llama.v3": a DNS-1035 label must '
    "consist of lower case alphanumeric characters or '-'"
)
INVALID = json.dumps(
    {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": REFUSAL,
        "reason": "Invalid",
        "code": 422,
    }
)


@pytest.mark.parametrize(
    ("status", "reason", "body", "message"),
    [
        (
            422,
            "Unprocessable Entity",
            INVALID,
            REFUSAL,
        ),
        (500, "Internal Server Error", "not json", "500 Internal Server Error"),
        (503, "Service Unavailable", None, "503 Service Unavailable"),
        (403, "Forbidden", '["a list"]', "403 Forbidden"),
    ],
)
def test_an_api_error_says_what_the_api_server_said(
    status: int, reason: str, body: str | None, message: str
) -> None:
    e = ApiException(status=status, reason=reason)
    e.body = body
    assert apply.api_error_message(e) == message
