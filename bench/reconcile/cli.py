"""Command line: run inferfleet's arm and the naive arm one after the other, each on a fresh cluster."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.reconcile.fleet import check_capacity, plan_services
from bench.reconcile.report import table, targets
from bench.reconcile.scenario import ARMS, Scenario, run_arm, say
from inferfleet.localcluster.paths import cache_dir


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.reconcile",
        description="InferenceServices on fake GPU nodes (KWOK): latency to children and to Ready, API "
        "requests per reconcile from the audit log, writes when idle, Prometheus queries per autoscaler "
        "tick and operator RSS, for inferfleet and a naive operator that LISTs per reconcile.",
    )
    ap.add_argument("--services", type=int, default=500, help="InferenceServices per batch (default 500)")
    ap.add_argument("--nodes", type=int, default=200, help="fake 8-GPU nodes (default 200)")
    ap.add_argument("--quiet-seconds", type=float, default=300.0, help="idle window (default 300)")
    ap.add_argument("--skip-naive", action="store_true", help="run only inferfleet")
    ap.add_argument("--skip-1000", action="store_true", help="no second batch (RSS only at --services)")
    ap.add_argument("--namespaces", type=int, default=5, help="namespaces the services spread over")
    ap.add_argument("--create-concurrency", type=int, default=8, help="create calls in flight")
    ap.add_argument("--autoscale-interval", type=float, default=5.0, help="inferfleet's tick (s)")
    ap.add_argument(
        "--settle-seconds", type=float, default=15.0, help="no operator write this long = settled"
    )
    ap.add_argument(
        "--ready-timeout", type=float, help="seconds to wait for a batch (default max(600, 3/svc))"
    )
    ap.add_argument(
        "--workdir", type=Path, help="logs and kubeconfigs (default .cache/bench-reconcile/<time>)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    second = not args.skip_1000
    check_capacity(plan_services(0, args.services * (2 if second else 1), args.namespaces), args.nodes)
    workdir = args.workdir or cache_dir() / "bench-reconcile" / time.strftime("%Y%m%d-%H%M%S")
    base = Scenario(
        workdir=workdir,
        services=args.services,
        nodes=args.nodes,
        quiet_seconds=args.quiet_seconds,
        second_batch=second,
        namespaces=args.namespaces,
        create_concurrency=args.create_concurrency,
        autoscale_interval=args.autoscale_interval,
        settle_seconds=args.settle_seconds,
        ready_timeout=args.ready_timeout,
    )
    started = time.monotonic()
    arms: dict[str, Any] = {}
    for name in ARMS if not args.skip_naive else ("inferfleet",):
        scenario = Scenario(**{**asdict(base), "workdir": workdir / name})
        try:
            arms[name] = run_arm(name, scenario, cluster_name=f"bench-reconcile-{os.getpid()}")
        except Exception as e:  # report what the other arm measured; the error is in the table
            say(f"{name} failed: {e!r}")
            arms[name] = {"error": f"{type(e).__name__}: {e}"}
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(base).items()}
    report: dict[str, Any] = {
        "params": params | {"machine": f"{platform.machine()}, {os.cpu_count()} cores"},
        "arms": arms,
    }
    report["targets"] = targets(report)
    report["params"]["wall_seconds"] = round(time.monotonic() - started, 1)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2) if args.json else table(report))
    say(f"report: {workdir / 'report.json'}")
    return 0 if all("error" not in a for a in arms.values()) else 1
