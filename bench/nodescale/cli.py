"""Command line: one local cluster, the operator, and both arms of every scenario."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.nodescale.arms import ZONE, Bench
from bench.nodescale.karpenter import KarpenterProcess, install_karpenter_crds, karpenter_dir
from bench.nodescale.report import ATOMIC, KARPENTER, PLACEHOLDER, Observation, summarise, table, verdict
from bench.nodescale.scenarios import Scenario, pick_scenarios
from inferfleet.localcluster.cluster import LocalCluster
from inferfleet.localcluster.crds import install_crds
from inferfleet.localcluster.inventory import GPU_RESOURCE, Inventory, build_node, load_inventory
from inferfleet.localcluster.node_autoscaler_standin import install_provisioning_crd
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.paths import pinned_versions
from inferfleet.localcluster.private_network import enter_private_network

RESULTS = Path(__file__).with_name("results")
FULL_NODE = "h100-a-1"
"""The cluster's only H100 node, one GPU taken: the product exists, 8 free GPUs do not."""


def say(message: str) -> None:
    print(f"[nodescale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.nodescale", description=__doc__)
    p.add_argument("--scenarios", default="all", help="comma-separated names, or all")
    p.add_argument("--settle", type=float, default=20.0, help="end an arm after this long without change (s)")
    p.add_argument("--timeout", type=float, default=150.0, help="end an arm after this long at most (s)")
    p.add_argument(
        "--boot-delay",
        type=float,
        default=0.0,
        help="seconds a new node takes to become schedulable, in every arm (default 0)",
    )
    p.add_argument("--no-karpenter", action="store_true", help="skip the real-Karpenter arm")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    p.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS}/<date>.json and .txt")
    return p.parse_args(argv)


def cluster_nodes(inventory: Inventory) -> list[dict[str, Any]]:
    return [
        build_node("cpu-a-1", inventory.pools["cpu"], "zone-a", "rack-a1", inventory),
        build_node(FULL_NODE, inventory.pools["h100"], "zone-a", "rack-a1", inventory),
    ]


def filler_pod() -> dict[str, Any]:
    limits = {GPU_RESOURCE: "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "filler", "namespace": "nodescale-filler"},
        "spec": {
            "nodeName": FULL_NODE,
            "containers": [{"name": "c", "image": "registry.example/filler:1",
                            "resources": {"limits": limits, "requests": limits}}],
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        },
    }  # fmt: skip


def scenario_result(
    scenario: Scenario, arms: dict[str, tuple[Observation, dict[str, Any]]]
) -> dict[str, Any]:
    summaries = {arm: summarise(obs) for arm, (obs, _) in arms.items()}
    details = {
        arm: extra | {"bound": {str(r): list(n) for r, n in obs.bound.items()}, "added": list(obs.added)}
        for arm, (obs, extra) in arms.items()
    }
    return {
        "what": scenario.what,
        "groups": scenario.groups,
        "node_groups": [{"rack": g.rack, "zone": ZONE, "max_size": g.max_size} for g in scenario.node_groups],
        "arms": summaries,
        "details": details,
        "verdict": verdict(summaries),
    }


def run_karpenter_arms(
    bench: Bench, scenarios: Sequence[Scenario], kubeconfig: Path, workdir: Path
) -> dict[str, tuple[Observation, dict[str, Any]]]:
    install_karpenter_crds(bench.api, karpenter_dir() / "crds", bench.boot_s)
    karpenter = KarpenterProcess(kubeconfig, workdir, bench.inventory, ZONE)
    karpenter.start()
    try:
        out = {}
        for scenario in scenarios:
            say(f"{scenario.name}: karpenter arm")
            out[scenario.name] = bench.run_karpenter(scenario)
        return out
    finally:
        karpenter.stop()


def run(scenarios: Sequence[Scenario], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every scenario's atomic arm with the operator running, then the placeholder arms without it."""
    inventory = load_inventory()
    cluster = LocalCluster(name="bench-nodescale", nodes=cluster_nodes(inventory))
    operator: OperatorProcess | None = None
    arms: dict[str, dict[str, tuple[Observation, dict[str, Any]]]] = {s.name: {} for s in scenarios}
    try:
        say("creating the local cluster")
        cluster.create()
        api = cluster.api_client()
        install_crds(api)
        install_provisioning_crd(api)
        bench = Bench(api, inventory, settle_s=args.settle, timeout_s=args.timeout, boot_s=args.boot_delay)
        bench.core.create_namespace({"metadata": {"name": "nodescale-filler"}})
        bench.core.create_namespaced_pod("nodescale-filler", filler_pod())
        operator = OperatorProcess(kubeconfig=cluster.kubeconfig, log_path=workdir / "operator.log")
        operator.start()
        for scenario in scenarios:
            say(f"{scenario.name}: atomic arm")
            arms[scenario.name][ATOMIC] = bench.run_atomic(scenario)
        operator.stop()
        operator = None
        for scenario in scenarios:
            say(f"{scenario.name}: placeholder arm")
            arms[scenario.name][PLACEHOLDER] = bench.run_placeholder(scenario)
        if not args.no_karpenter:
            for name, result in run_karpenter_arms(bench, scenarios, cluster.kubeconfig, workdir).items():
                arms[name][KARPENTER] = result
    finally:
        if operator is not None:
            operator.stop()
        cluster.delete()
    return {s.name: scenario_result(s, arms[s.name]) for s in scenarios}


def result_name(date: str, args: argparse.Namespace) -> str:
    """<date>-<scenarios or all>[-boot<seconds>s] (the .json and .txt share it)."""
    which = "all" if args.scenarios == "all" else args.scenarios.replace(",", "-")
    boot = f"-boot{args.boot_delay:g}s" if args.boot_delay else ""
    return f"{date}-{which}{boot}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = pick_scenarios(args.scenarios)
    # Karpenter binds its ports on every address; nothing outside this namespace reaches them.
    enter_private_network()
    started = datetime.now(UTC)
    workdir = Path("/tmp") / f"bench-nodescale-{started:%Y%m%d-%H%M%S}"
    results = run(scenarios, args, workdir)
    date = started.strftime("%Y-%m-%d")
    out = {
        "date": date,
        "params": {
            "scenarios": [s.name for s in scenarios],
            "settle_s": args.settle,
            "timeout_s": args.timeout,
            "boot_delay_s": args.boot_delay,
            "karpenter": None if args.no_karpenter else pinned_versions()["KARPENTER_VERSION"],
        },
        "scenarios": results,
        "operator_log": str(workdir / "operator.log"),
    }
    text = table(results)
    print(json.dumps(out, indent=2) if args.json else text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / result_name(date, args)
        Path(f"{stem}.json").write_text(json.dumps(out, indent=2) + "\n")
        Path(f"{stem}.txt").write_text(text + "\n")
        say(f"saved {stem}.json and .txt")
    return 0
