"""The kubelet's part for engine pods on the local cluster: a real HTTP engine at each pod's own IP.

KWOK pods run nothing. PodEngines watches the pods of InferenceServices and, for each one that
has an IP and is not terminating, starts a SimEngine serving the service's model on the pod's
IP and engine port, so whatever finds the pod through its EndpointSlice (the gateway) reaches
an engine over real HTTP. Only the HTTP-serving pod of a replica gets one: in a multi-node
group the leader (pod index 0).

Termination is the kubelet's: when a pod turns terminating the engine drains (the service's
engine.drainSeconds) in the background and only then is the pod let go. PodEngines holds each
engine pod with a finalizer until its engine has closed its socket, since KWOK would otherwise
delete the pod at once and hand its IP to the next pod while the old engine still holds it.

Readiness is the kubelet's too where the cluster leaves it to a prober (PodEngines and
LocalCluster given the same `probed_namespaces`): there a pod turns Ready only once the
readinessProbe in its spec passes against its engine, and not Ready when it fails
(readiness_probes.py). Elsewhere KWOK marks pods Ready on its timer, before their engine listens.
There too a pod whose `wait-for-weights` init container waits for its node's copy of the model
gets its engine, and its probes, only once that copy is there (weights_wait.py): its fetch Job,
which KWOK completes after LocalCluster.fetch_seconds, is part of its start, as on a GPU node.

The pod IPs must be local to this process: see kwok-config.yaml and tests/podengines.py.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from inferfleet.localcluster.pod_watch import PodWatch
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.readiness_probes import ProbedPod, Prober, is_probed
from inferfleet.localcluster.weights_wait import WeightsKey, WeightsWait
from inferfleet.planning.groups import POD_INDEX_LABEL
from inferfleet.planning.names import SERVICE_LABEL
from inferfleet.sim.engine import EngineConfig, SimEngine

log = logging.getLogger(__name__)

FINALIZER = "inferfleet.io/pod-engine"
"""Held on an engine pod until its engine stopped, as a kubelet holds a pod until it exits."""
API_OUTAGE_SECONDS = 60.0
"""How long a pod is asked to let go of its finalizer while the API server does not answer."""
API_RETRY_SECONDS = 0.5
ENGINE_CONTAINER = "engine"
GROUP, VERSION, PLURAL = "inferfleet.io", "v1alpha1", "inferenceservices"


@dataclass
class PodEngine:
    namespace: str
    pod: str
    uid: str
    service: str
    ip: str
    port: int
    engine: SimEngine | None = None
    """None when it did not start (see PodEngines.errors)."""
    terminating: bool = False
    """Its pod is terminating or gone: the engine drains or died, and gets no new requests."""
    drain: threading.Thread | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    """Set once the engine closed its socket and the pod was let go."""

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"


def _engine_port(pod: dict[str, Any]) -> int | None:
    for container in pod["spec"].get("containers", []):
        if container["name"] == ENGINE_CONTAINER:
            ports = container.get("ports") or []
            http = [p for p in ports if p.get("name") == "http"] or ports
            return int(http[0]["containerPort"]) if http else None
    return None


def serves_http(pod: dict[str, Any]) -> bool:
    """An engine pod a request reaches: has an engine container, and leads its group if in one."""
    labels = pod["metadata"].get("labels") or {}
    return labels.get(POD_INDEX_LABEL, "0") == "0" and _engine_port(pod) is not None


class PodEngines:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        tokens_per_second: float = 50.0,
        prometheus: LocalPrometheus | None = None,
        probed_namespaces: str | None = None,
    ) -> None:
        self.tokens_per_second = tokens_per_second
        self.tokens_per_second_of: dict[tuple[str, str], float] = {}
        """Per (namespace, service) overrides, for engines started from now on."""
        self.loading: dict[tuple[str, str], threading.Event] = {}
        """Per (namespace, service): its engines load their weights until the event is set, and
        listen only then (a pod runs, its engine does not answer yet)."""
        self.probed_namespaces = probed_namespaces
        """The cluster's LocalCluster.probed_namespaces: there this runs the pods' readiness probes."""
        self.prometheus = prometheus
        self.errors: list[str] = []
        """Pods whose engine could not start, and failed pod patches: a test asserts it stays empty."""
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._lock = threading.Lock()
        self._pods: dict[str, PodEngine] = {}  # by pod uid
        self._stop = threading.Event()
        self._watch = PodWatch(
            self._core, SERVICE_LABEL, self._on_pod, self._on_deleted, "pod-engines", self._on_listed
        )
        self._prober = Prober(self._core, self._error)
        self._handling = threading.RLock()
        """One pod event at a time: the watch's, or a release from the weights wait."""
        self._weights = WeightsWait(client.BatchV1Api(api), self._on_pod)

    def start(self) -> PodEngines:
        if self.probed_namespaces is not None:
            self._prober.start()
            self._weights.start()
        self._watch.start()
        return self

    def stop(self) -> None:
        """Stop watching and probing, kill every engine and let go of every pod still held."""
        self._stop.set()
        self._prober.stop()
        self._weights.stop()
        self._watch.stop()
        with self._lock:
            held = list(self._pods.values())
            serving = [p for p in held if not p.terminating]
            for p in serving:
                p.terminating = True
        for p in serving:
            if p.engine is not None:
                p.engine.kill()
            self._release(p)
        for p in held:
            if p.drain is not None:
                p.drain.join()

    def engine(self, namespace: str, pod: str) -> PodEngine | None:
        """The engine serving a pod (listening, pod not terminating), if any."""
        with self._lock:
            found = [p for p in self._pods.values() if (p.namespace, p.pod) == (namespace, pod)]
        serving = [p for p in found if p.engine is not None and not p.terminating]
        return serving[0] if serving else None

    def engines(self, namespace: str, service: str) -> list[PodEngine]:
        """The engines serving an InferenceService's pods, by pod name."""
        with self._lock:
            found = [p for p in self._pods.values() if (p.namespace, p.service) == (namespace, service)]
        return sorted((p for p in found if p.engine is not None and not p.terminating), key=lambda p: p.pod)

    def stopping(self, namespace: str, service: str) -> list[PodEngine]:
        """Engines of a service draining after their pod turned terminating."""
        with self._lock:
            found = [p for p in self._pods.values() if (p.namespace, p.service) == (namespace, service)]
        return [p for p in found if p.terminating and not p.stopped.is_set()]

    def probed(self, namespace: str, pod: str) -> ProbedPod | None:
        """What the readiness probes of a pod found so far, while it is probed."""
        return self._prober.pod(namespace, pod)

    def waiting_for_weights(self, namespace: str, pod: str) -> WeightsKey | None:
        """What a pod's `wait-for-weights` init container waits for, while it waits."""
        return self._weights.waiting_for(namespace, pod)

    def weights_on_nodes(self) -> frozenset[WeightsKey]:
        """The nodes' copies of models as last read (while some pod waits)."""
        return self._weights.present()

    def crash(self, namespace: str, pod: str) -> None:
        """The engine dies and the pod stays, as after a crash the local kubelet does not restart."""
        held = self.engine(namespace, pod)
        if held is None or held.engine is None:
            raise LookupError(f"no engine serving pod {namespace}/{pod}")
        with self._lock:
            engine, held.engine = held.engine, None
        engine.kill()

    def kill(self, namespace: str, pod: str) -> None:
        """The replica dies mid-request: every connection reset at once, the pod deleted at once."""
        held = self.engine(namespace, pod)
        if held is None or not self._mark_terminating(held):
            raise LookupError(f"no engine serving pod {namespace}/{pod}")
        if held.engine is not None:
            held.engine.kill()
        self._delete_pod(held)
        self._release(held)

    def _delete_pod(self, held: PodEngine) -> None:
        try:
            self._core.delete_namespaced_pod(held.pod, held.namespace, grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                raise

    def _on_listed(self, pods: list[dict[str, Any]]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        self._prober.retain(present)
        self._weights.retain(present)
        with self._lock:
            gone = [p for uid, p in self._pods.items() if uid not in present]
        for held in gone:
            self._on_gone(held)

    # What the kubelet does for one pod.

    def _on_pod(self, pod: dict[str, Any]) -> None:
        with self._handling:
            if self._waits_for_weights(pod):
                return
            self._on_pod_engine(pod)
            if is_probed(pod, self.probed_namespaces):  # after its engine started: probed from now on
                self._prober.observe(pod, _engine_port(pod) if serves_http(pod) else None)

    def _waits_for_weights(self, pod: dict[str, Any]) -> bool:
        """A probed pod whose wait container waits for its node's copy: no engine, no probe yet
        (a kubelet starts the containers, and their probes, after the init containers)."""
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self._weights.forget(meta["uid"])
            return False
        return is_probed(pod, self.probed_namespaces) and self._weights.hold(pod)

    def _on_pod_engine(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            held = self._pods.get(meta["uid"])
        if meta.get("deletionTimestamp"):
            if held is not None:
                self._begin_stop(held)
            elif FINALIZER in (meta.get("finalizers") or []):
                self._remove_finalizer(meta["namespace"], meta["name"])  # held by an earlier PodEngines
        elif held is None and (pod.get("status") or {}).get("podIP") and serves_http(pod):
            self._start_engine(pod)

    def _on_deleted(self, pod: dict[str, Any]) -> None:
        self._prober.forget(pod["metadata"]["uid"])
        self._weights.forget(pod["metadata"]["uid"])
        with self._lock:
            held = self._pods.get(pod["metadata"]["uid"])
        if held is not None:
            self._on_gone(held)

    def _on_gone(self, held: PodEngine) -> None:
        """Deleted without us (forced): the engine is killed, as a kubelet kills a lost pod's containers."""
        if self._mark_terminating(held) and held.engine is not None:
            held.engine.kill()
        self._release(held, finalizer=False)

    def _mark_terminating(self, held: PodEngine) -> bool:
        """Whether this call turned the engine terminating (only one caller stops it)."""
        with self._lock:
            first, held.terminating = not held.terminating, True
        return first

    def _start_engine(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        namespace, name, service = meta["namespace"], meta["name"], meta["labels"][SERVICE_LABEL]
        port = _engine_port(pod)
        assert port is not None
        held = PodEngine(namespace, name, meta["uid"], service, pod["status"]["podIP"], port)
        with self._lock:
            self._pods[held.uid] = held
        loading = self.loading.get((namespace, service))
        if loading is not None and not loading.is_set():
            if self._add_finalizer(held):  # else the pod is already going
                threading.Thread(
                    target=self._load, args=(held, loading), name=f"load-{name}", daemon=True
                ).start()
            return
        engine = self._listen(held)  # listen first: where KWOK marks the pod Ready, it does not wait
        if engine is None:
            return
        if not self._add_finalizer(held):
            engine.kill()  # the pod is already going: no drain to hold it for
            return
        self._serve(held, engine)

    def _load(self, held: PodEngine, loaded: threading.Event) -> None:
        while not loaded.wait(0.1):
            if self._stop.is_set() or held.terminating:
                return
        engine = self._listen(held)
        if engine is not None:
            self._serve(held, engine)

    def _listen(self, held: PodEngine) -> SimEngine | None:
        try:
            return SimEngine(self._engine_config(held)).start()
        except ApiException as e:
            if e.status != 404:  # 404: the InferenceService is gone, its pods are going
                self._error(
                    f"engine for pod {held.namespace}/{held.pod}: reading its service: {e.status} {e.reason}"
                )
        except Exception as e:  # reported through .errors; the watch goes on
            self._error(f"engine for pod {held.namespace}/{held.pod} at {held.url} did not start: {e!r}")
        return None

    def _serve(self, held: PodEngine, engine: SimEngine) -> None:
        with self._lock:  # whoever turns it terminating reads .engine after this
            going, held.engine = held.terminating, None if held.terminating else engine
        if going:
            engine.kill()  # the pod went while the engine started: no drain to hold it for
            return
        if self.prometheus is not None:
            namespace, service, name = held.namespace, held.service, held.pod
            labels = {"namespace": namespace, "inferfleet_io_service": service, "pod": name}
            self.prometheus.add_target(self._target(held), f"{held.ip}:{held.port}", labels)

    def _engine_config(self, held: PodEngine) -> EngineConfig:
        service = self._custom.get_namespaced_custom_object(
            GROUP, VERSION, held.namespace, PLURAL, held.service
        )
        spec = service["spec"]
        engine = spec.get("engine") or {}
        return EngineConfig(
            model=spec["model"]["name"],
            max_concurrent=int(engine.get("maxConcurrentRequests", 256)),
            tokens_per_second=self.tokens_per_second_of.get(
                (held.namespace, held.service), self.tokens_per_second
            ),
            host=held.ip,
            port=held.port,
            drain_seconds=float(engine.get("drainSeconds", 120)),
        )

    def _begin_stop(self, held: PodEngine) -> None:
        if not self._mark_terminating(held):
            return
        held.drain = threading.Thread(target=self._drain, args=(held,), name=f"drain-{held.pod}", daemon=True)
        held.drain.start()

    def _drain(self, held: PodEngine) -> None:
        if held.engine is not None:
            held.engine.stop()  # the service's drainSeconds, then the rest are cut
        self._release(held)

    def _release(self, held: PodEngine, *, finalizer: bool = True) -> None:
        """The engine is gone: forget it and let the pod (and its IP) go."""
        if self.prometheus is not None:
            self.prometheus.remove_target(self._target(held))
        try:
            if finalizer:
                self._remove_finalizer(held.namespace, held.pod)
        finally:
            with self._lock:
                self._pods.pop(held.uid, None)
            held.stopped.set()

    def _target(self, held: PodEngine) -> str:
        return f"pod-engine-{held.namespace}-{held.pod}"

    def _add_finalizer(self, held: PodEngine) -> bool:
        patch = {"metadata": {"finalizers": [FINALIZER], "uid": held.uid}}
        try:
            self._core.patch_namespaced_pod(held.pod, held.namespace, patch)
        except ApiException as e:
            # Deleted or terminating already: its DELETED or terminating event follows.
            with self._lock:
                self._pods.pop(held.uid, None)
            if e.status not in (404, 409, 422):
                self._error(f"could not hold pod {held.namespace}/{held.pod}: {e.status} {e.reason}")
            return False
        return True

    def _remove_finalizer(self, namespace: str, pod: str) -> None:
        """Let the pod go; through an API server restart too, as a kubelet would (a pod left with
        the finalizer would stay terminating for the rest of the test)."""
        patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [FINALIZER]}}
        deadline = time.monotonic() + API_OUTAGE_SECONDS
        while True:
            try:
                self._core.patch_namespaced_pod(pod, namespace, patch)
                return
            except ApiException as e:
                if e.status == 404:
                    return
                error, transient = f"{e.status} {e.reason}", e.status >= 500
            except (HTTPError, OSError) as e:  # the API server is restarting: ask again
                error, transient = str(e), True
            if not transient or time.monotonic() > deadline:
                self._error(f"could not let go of pod {namespace}/{pod}: {error}")
                return
            time.sleep(API_RETRY_SECONDS)

    def _error(self, message: str) -> None:
        log.warning("pod engines: %s", message)
        with self._lock:
            self.errors.append(message)
