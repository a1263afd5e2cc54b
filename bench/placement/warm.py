"""Warm placement (issue 17): how often a replica lands on nodes whose weights cache already holds
its model, and what preferring such nodes costs in replicas placed and GPUs stranded.

The same cases as the main table. Each replica serves one of MODELS models (Zipf-like shares:
a few popular models, a long tail); each pod already running before the arrivals serves one too,
so its node starts warm for that model; a node becomes warm for a model once a replica of it is
placed there (the node's cache fetched it). A replica is a *warm hit* when every one of its pods
lands on a node warm for its model at the moment it arrives.

Rows: the warm-blind arms of the main table, replayed for the hit rate (their placements are the
main table's), and the same inferfleet rows with the warm preference the operator ships:
- groups: `plan_group_placement(..., warm=nodes holding the model)`, a tie-breaker only;
- single pods under the default profile: the Deployment's preferred node affinity on the warm
  label scores 100 on warm nodes times NodeAffinity's default plugin weight 2, added to
  LeastAllocated's 0-100 (weight 1): it outweighs LeastAllocated's spreading;
- single pods under `inferfleet-binpack`: the profile weights NodeResourcesFit above 100 x
  NodeAffinity (docs/weights.md), so warmth only breaks MostAllocated's ties.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from bench.placement.arms import (
    INFERFLEET,
    INFERFLEET_MOSTALLOCATED,
    LEAST,
    LEAST_ALLOCATED,
    MOST,
    FreeGpus,
    Outcome,
    Strategy,
    fit_score,
    gpu_nodes,
)
from bench.placement.cluster import PRODUCT, RACK_LABEL, Arrival, Case
from bench.placement.metrics import count
from inferfleet.planning.placement import BoundPod, GroupPlacement, compute_free_gpus, plan_group_placement

MODELS = 8
NODE_AFFINITY_WEIGHT = 2  # kube-scheduler's default plugin weight for NodeAffinity
WARM = "+warm"
"""Suffix of a row with the warm preference."""
WARM_ROWS = (INFERFLEET_MOSTALLOCATED, INFERFLEET)
STRATEGY_OF_ROW: dict[str, Strategy] = {INFERFLEET_MOSTALLOCATED: MOST, INFERFLEET: LEAST}

Warm = dict[str, set[str]]
"""model -> nodes whose cache holds it."""


def assign_models(case: Case, seed: int) -> tuple[dict[str, str], Warm]:
    """Each arrival's model and the nodes warm before the arrivals (from the pods already there)."""
    rng = random.Random(f"placement/{seed}/{case.name}/models")
    models = [f"m{k}" for k in range(MODELS)]
    weights = [1 / (k + 1) for k in range(MODELS)]
    warm: Warm = {m: set() for m in models}
    for node, _ in case.cluster.prebound:
        warm[rng.choices(models, weights)[0]].add(node)
    return {a.id: rng.choices(models, weights)[0] for a in case.arrivals}, warm


def _copy(warm: Warm) -> Warm:
    return {m: set(nodes) for m, nodes in warm.items()}


def warm_hits(case: Case, outcome: Outcome, models: Mapping[str, str], warm0: Warm) -> int:
    """Placed replicas whose every pod landed on a node warm for its model when it arrived."""
    warm, hits = _copy(warm0), 0
    for a in case.arrivals:
        nodes = [n for n in outcome.placements.get(a.id, ()) if n is not None]
        if len(nodes) == a.pods and all(n in warm[models[a.id]] for n in nodes):
            hits += 1
        warm[models[a.id]].update(nodes)
    return hits


def _single(state: FreeGpus, gpus: int, strategy: Strategy, warm: set[str]) -> str | None:
    """The simulated kube-scheduler's choice with the warm preference (ties by name)."""
    best: tuple[int, int] | None = None
    chosen: str | None = None
    for node in state.nodes:
        free = state.free[node.name]
        if free < gpus:
            continue
        fit, is_warm = fit_score(strategy, node.gpus, free, gpus), int(node.name in warm)
        score = (fit, is_warm) if strategy == MOST else (fit + NODE_AFFINITY_WEIGHT * 100 * is_warm, 0)
        if best is None or score > best:
            best, chosen = score, node.name
    return chosen


def run_warm_row(case: Case, row: str, models: Mapping[str, str], warm0: Warm) -> Outcome:
    """The inferfleet `row` with the warm preference, arrival by arrival."""
    state, warm = FreeGpus(case.cluster), _copy(warm0)
    nodes = gpu_nodes(case.cluster)
    bound = [BoundPod(node, gpus) for node, gpus in case.cluster.prebound]
    out = Outcome(row + WARM, {})
    for a in case.arrivals:
        held = warm[models[a.id]]
        if a.pods == 1:
            node = _single(state, a.gpus_per_pod, STRATEGY_OF_ROW[row], held)
            chosen: tuple[str | None, ...] = (node,)
        else:
            chosen = _group(nodes, bound, a, frozenset(held))
        for node in chosen:
            if node is not None:
                state.take(node, a.gpus_per_pod)
                bound.append(BoundPod(node, a.gpus_per_pod, a.id if a.is_group else None))
                held.add(node)
        out.placements[a.id] = chosen
    return out


def _group(
    nodes: Sequence[Any], bound: Sequence[BoundPod], a: Arrival, warm: frozenset[str]
) -> tuple[str | None, ...]:
    free = compute_free_gpus(nodes, PRODUCT, RACK_LABEL, bound, ())
    placement = plan_group_placement(
        free, a.pods, a.gpus_per_pod, product=PRODUCT, topology_key=RACK_LABEL, warm=warm
    )
    return placement.nodes if isinstance(placement, GroupPlacement) else (None,) * a.pods


def run_warm(cases: Sequence[Case], blind: Mapping[str, Sequence[Outcome]], seed: int) -> dict[str, Any]:
    """Per row over the cases: replicas placed, stranded GPUs, warm hits and the hit rate."""
    rows: dict[str, dict[str, int]] = {}

    def add(row: str, case: Case, out: Outcome, models: Mapping[str, str], warm0: Warm) -> None:
        c = count(case, out)
        totals = rows.setdefault(row, {"replicas_placed": 0, "stranded_gpus": 0, "warm_hits": 0})
        totals["replicas_placed"] += c["replicas_placed"]
        totals["stranded_gpus"] += c["stranded_gpus"]
        totals["warm_hits"] += warm_hits(case, out, models, warm0)

    for i, case in enumerate(cases):
        models, warm0 = assign_models(case, seed)
        for row in (*WARM_ROWS, LEAST_ALLOCATED):
            add(row, case, blind[row][i], models, warm0)
        for row in WARM_ROWS:
            add(row + WARM, case, run_warm_row(case, row, models, warm0), models, warm0)
    return {
        row: {
            **t,
            "warm_hit_rate": round(t["warm_hits"] / t["replicas_placed"], 3)
            if t["replicas_placed"]
            else None,
        }
        for row, t in rows.items()
    }


def warm_table(sizes: Mapping[str, Mapping[str, Any]]) -> str:
    lines = [
        "warm placement (issue 17): replicas whose pods all landed on nodes already holding their model",
        f"  {'size':>5} {'row':<30} {'placed':>7} {'stranded':>9} {'warm hits':>10} {'hit rate':>9}",
    ]
    for size, result in sizes.items():
        for row, m in (result.get("warm") or {}).items():
            rate = "-" if m["warm_hit_rate"] is None else f"{m['warm_hit_rate']:.3f}"
            lines.append(
                f"  {size:>5} {row:<30} {m['replicas_placed']:>7} {m['stranded_gpus']:>9} "
                f"{m['warm_hits']:>10} {rate:>9}"
            )
    return "\n".join(lines)
