from inferfleet.api import InferenceServiceSpec, ShardPlan
from inferfleet.planning.children import Owner, build_deployment, build_pdb, build_service, endpoint_url

OWNER = Owner(name="llama", namespace="ml", uid="uid-1")
ONE_GPU = ShardPlan(tensor_parallel=1, pipeline_parallel=1, gpus_per_pod=1, pods_per_replica=1)


def spec(product: str | None = "NVIDIA-L4", replicas: int = 2) -> InferenceServiceSpec:
    return InferenceServiceSpec.model_validate(
        {
            "model": {"name": "llama", "source": "hf://org/llama", "parametersBillions": 8},
            "engine": {"kind": "vllm", "port": 8080},
            "accelerator": {"product": product} if product else {},
            "replicas": replicas,
        }
    )


def test_deployment_is_owned_selected_by_service_label_and_gpu_scheduled() -> None:
    d = build_deployment(OWNER, spec(), ONE_GPU)
    assert d["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "inferfleet.io/v1alpha1",
            "kind": "InferenceService",
            "name": "llama",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"] == {"matchLabels": {"inferfleet.io/service": "llama"}}
    template = d["spec"]["template"]
    assert template["metadata"]["labels"]["inferfleet.io/service"] == "llama"
    assert template["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "inferfleet"
    pod = template["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_without_a_product_any_gpu_node_may_run_it() -> None:
    pod = build_deployment(OWNER, spec(product=None), ONE_GPU)["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod


def test_service_and_pdb_select_the_engine_pods() -> None:
    svc = build_service(OWNER, spec())
    assert svc["spec"]["selector"] == {"inferfleet.io/service": "llama"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    pdb = build_pdb(OWNER, spec())
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {"inferfleet.io/service": "llama"}}
    assert endpoint_url(OWNER, spec()) == "http://llama.ml.svc:8080/v1"


def test_a_scheduler_profile_is_used_only_when_the_operator_names_one() -> None:
    assert "schedulerName" not in build_deployment(OWNER, spec(), ONE_GPU)["spec"]["template"]["spec"]
    binpack = build_deployment(OWNER, spec(), ONE_GPU, scheduler_name="inferfleet-binpack")
    assert binpack["spec"]["template"]["spec"]["schedulerName"] == "inferfleet-binpack"


def test_the_grace_period_covers_the_drain_and_the_engine_waits_for_its_requests() -> None:
    pod = build_deployment(OWNER, spec(), ONE_GPU)["spec"]["template"]["spec"]
    [engine] = pod["containers"]
    assert engine["lifecycle"]["preStop"]["exec"]["command"][:2] == ["python3", "-c"]
    assert "120" in engine["lifecycle"]["preStop"]["exec"]["command"]
    assert pod["terminationGracePeriodSeconds"] == 150
