"""The benchmark's node model: starts drawn per node state, with and without the weights cache."""

from __future__ import annotations

import random

from bench.autoscale.nodes import NodePool, StartModel, slot_start
from bench.autoscale.sim import Fleet, SimParams
from bench.autoscale.workload import Workload

M = StartModel(cache=True, image_pull_min_s=60, image_pull_max_s=60, load_min_s=20, load_max_s=20)


def test_a_fresh_node_pulls_downloads_and_loads_a_used_one_only_loads_with_the_cache():
    for cache, again in ((True, 20.0), (False, 80.0 + 20.0)):
        pool = NodePool(StartModel(**{**M.__dict__, "cache": cache}))
        i = pool.place()
        assert pool.start_seconds(i, random.Random(0)) == (60 + 80 + 20, False)  # 16 GB at 200 MB/s
        pool.ready(i)
        pool.free(i)
        assert pool.place() == i  # the node that ran the engine is preferred
        assert pool.start_seconds(i, random.Random(0)) == (again, cache)


def test_prefetched_nodes_are_warm_and_placement_prefers_them():
    pool = NodePool(StartModel(**{**M.__dict__, "prefetch_nodes": 2}))
    assert pool.place(warm_now=True) == 0  # the fleet's initial replica: its own node, warm
    pool.prefetch()  # two more nodes beyond those serving
    assert pool.present() == ["node-0", "node-1", "node-2"]
    for _ in range(2):
        assert pool.start_seconds(pool.place(), random.Random(0))[1] is True
    assert pool.start_seconds(pool.place(), random.Random(0)) == (160.0, False)  # no warm node left


def test_the_oracle_pays_a_cold_start_once_per_slot():
    rng = random.Random(0)
    assert slot_start(M, rng, used=False) == 160.0
    assert slot_start(M, rng, used=True) == 20.0
    assert slot_start(StartModel(**{**M.__dict__, "cache": False}), rng, used=True) == 100.0


def test_the_fleet_reports_each_started_replica_warm_or_cold():
    w = Workload("empty", (), (), (), 3600.0)
    fleet = Fleet(w, SimParams(starts=M))
    fleet.setup(1)
    fleet.scale_to(3, 10.0)
    fleet.run(until=1000.0)
    fleet.scale_to(1, 1000.0)
    fleet.scale_to(3, 1100.0)
    fleet.run(until=2000.0)
    starts = sorted(fleet.result("x").starts)
    assert starts == [(20.0, True), (20.0, True), (160.0, False), (160.0, False)]
