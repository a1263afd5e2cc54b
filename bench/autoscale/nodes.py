"""GPU nodes under the simulated fleet: where a replica starts, and how long it takes (issue 17).

With `StartModel` a replica's start is drawn per node state instead of U(cold_start_min,
cold_start_max):

* **cold** (a node that never ran the engine): image pull U(`image_pull_min_s`,
  `image_pull_max_s`) + the weights downloaded at `download_mb_per_s` (`model_gb` / bandwidth)
  + the engine's load U(`load_min_s`, `load_max_s`);
* a node that ran the engine before has its image (the kubelet keeps it) but, without the
  weights cache, downloads the weights again into the pod's own `emptyDir`: download + load;
* **warm** (weights cache on, the node's cache holds the model): the load alone.

Each node runs one replica at a time. A node's cache holds the model once a replica on it was
Ready (the fetch ran for it); `prefetch_nodes` more nodes hold it from the start (the spec's
`prefetchNodes`), and their image too (GPU pools usually pre-pull the engine's image; the
fetch Job itself does not pull it). Placement prefers, among free
nodes, one with the weights (with the cache: cache-aware placement), then one with the image
(the kube-scheduler's ImageLocality), then a new node; nothing is evicted. The pull and load
draws come from the fleet's seeded generator in request order, so every policy's k-th replica
draws the same numbers; whether it starts warm depends on where it lands.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StartModel:
    cache: bool
    """The node weights cache is on."""
    model_gb: float = 16.0
    """Llama-3.1-8B in bf16: 16.1 GB of safetensors."""
    download_mb_per_s: float = 200.0
    """The stated bandwidth from the model store to a node (1.6 Gbit/s): 80 s for 16 GB."""
    image_pull_min_s: float = 30.0
    image_pull_max_s: float = 120.0
    """A vLLM image (about 10 GB compressed) pulled and unpacked."""
    load_min_s: float = 15.0
    load_max_s: float = 45.0
    """Weights from local disk into GPU memory, CUDA graphs, the server listening."""
    prefetch_nodes: int = 0

    @property
    def download_s(self) -> float:
        return self.model_gb * 1000.0 / self.download_mb_per_s


@dataclass
class Node:
    image: bool = False
    weights: bool = False
    busy: bool = False


@dataclass
class NodePool:
    model: StartModel
    nodes: list[Node] = field(default_factory=list)

    def copy(self) -> NodePool:
        return NodePool(self.model, [Node(n.image, n.weights, n.busy) for n in self.nodes])

    def prefetch(self) -> None:
        if self.model.cache:
            self.nodes.extend(Node(image=True, weights=True) for _ in range(self.model.prefetch_nodes))

    def place(self, warm_now: bool = False) -> int:
        """A free node for a new replica (a new node when none is free); `warm_now`: it is ready
        at once, as if it had run there (the fleet's warm start)."""
        free = [i for i, n in enumerate(self.nodes) if not n.busy]
        if warm_now:
            free = [i for i in free if self.nodes[i].image and self.nodes[i].weights]
        if free:
            i = max(free, key=lambda k: (self.model.cache and self.nodes[k].weights, self.nodes[k].image, -k))
        else:
            self.nodes.append(Node(image=warm_now, weights=warm_now))
            i = len(self.nodes) - 1
        self.nodes[i].busy = True
        return i

    def start_seconds(self, i: int, rng: random.Random) -> tuple[float, bool]:
        """(seconds from request to Ready, warm) for a replica placed on node i."""
        m, node = self.model, self.nodes[i]
        pull = rng.uniform(m.image_pull_min_s, m.image_pull_max_s)
        load = rng.uniform(m.load_min_s, m.load_max_s)
        warm = m.cache and node.weights
        return (0.0 if node.image else pull) + (0.0 if warm else m.download_s) + load, warm

    def ready(self, i: int) -> None:
        self.nodes[i].image = True
        self.nodes[i].weights = self.nodes[i].weights or self.model.cache

    def free(self, i: int) -> None:
        self.nodes[i].busy = False

    def present(self) -> list[str]:
        """Nodes whose cache holds the model (what `status.weights` shows as Present)."""
        return [name(i) for i, n in enumerate(self.nodes) if n.weights] if self.model.cache else []


def name(i: int) -> str:
    return f"node-{i}"


def slot_start(model: StartModel, rng: random.Random, used: bool) -> float:
    """The oracle's start of a replica on its own slot's node: cold the first time (`used`
    False), then image local, and warm with the cache."""
    pull = rng.uniform(model.image_pull_min_s, model.image_pull_max_s)
    load = rng.uniform(model.load_min_s, model.load_max_s)
    if not used:
        return pull + model.download_s + load
    return load if model.cache else model.download_s + load
