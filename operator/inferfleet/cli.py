"""The `inferfleet` command line."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferfleet.gateway.config import GatewayConfig
    from inferfleet.planning.inference_pool import EndpointPicker
    from inferfleet.planning.weights_jobs import CacheSettings
    from inferfleet.runtime.config import ClientLimits, OperatorConfig


def _cmd_run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # Before importing kopf: the Kubernetes client reads KUBECONFIG when it is imported.
        os.environ["KUBECONFIG"] = args.kubeconfig

    if args.peering and not os.environ.get("POD_ID"):
        # kopf's peering identity; set here so the autoscaler knows which record is its own.
        os.environ["POD_ID"] = f"{socket.gethostname()}-{os.getpid()}"

    import kopf
    from kubernetes.config import ConfigException

    import inferfleet.handlers  # noqa: F401 - registers the handlers
    from inferfleet.kube.connection import connect
    from inferfleet.metrics.operator import API_THROTTLED, serve_metrics
    from inferfleet.runtime.operator import OperatorRuntime

    config = build_config(args)
    try:  # unusable credentials do not fix themselves: exit with the reason instead of retrying
        api = connect(config.client_limits, on_throttled=API_THROTTLED.inc)
    except ConfigException as e:
        print(f"error: no usable Kubernetes credentials: {e}", file=sys.stderr)
        return 1
    if args.metrics_port:
        serve_metrics(args.metrics_port, args.metrics_address)

    kopf.configure(
        verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.log_json else kopf.LogFormat.FULL
    )
    kopf.run(
        memo=kopf.Memo(runtime=OperatorRuntime(config, api)),
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
    )
    return 0


def _cmd_crds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inferfleet.crdfiles import DEFAULT_CRD_DIR, check_crds, write_crds

    out_dir = Path(args.output_dir) if args.output_dir else DEFAULT_CRD_DIR
    if args.check:
        problems = check_crds(out_dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("CRDs are out of date: run `inferfleet crds`", file=sys.stderr)
        return 1 if problems else 0
    for path in write_crds(out_dir):
        print(f"wrote {path}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inferfleet.planfile import PlanFileError, plan_file, render

    try:
        model_dir = Path(args.model_dir) if args.model_dir else None
        print(render(plan_file(Path(args.file), model_dir), args.output))
    except PlanFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    from inferfleet.localcluster.cluster import LocalCluster

    cluster = LocalCluster(name=args.name)
    if args.action == "up":
        print(f"starting local GPU cluster {args.name!r} (the first run builds the binaries) ...", flush=True)
        cluster.create()
        print(f"ready. export KUBECONFIG={cluster.kubeconfig}")
    elif args.action == "down":
        cluster.delete()
    else:
        print(cluster.kubeconfig)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inferfleet.demo import run_demo

    report_dir = Path(args.report_dir) if args.report_dir else None
    return run_demo(duration_seconds=args.duration, keep=args.keep, name=args.name, report_dir=report_dir)


def _cmd_sim_engine(args: argparse.Namespace) -> int:
    from inferfleet.sim.engine import EngineConfig, serve

    if (
        args.max_concurrent < 1
        or args.tokens_per_second <= 0
        or args.drain_seconds < 0
        or args.block_tokens < 1
        or args.cache_blocks < 0
        or args.prefill_tokens_per_second < 0
        or (args.kv_cache_tokens is not None and args.kv_cache_tokens < 1)
        or (args.step_phase is not None and not 0 <= args.step_phase < 1)
    ):
        print(
            "error: need --max-concurrent >= 1, --tokens-per-second > 0, --drain-seconds >= 0, "
            "--block-tokens >= 1, --cache-blocks >= 0, --prefill-tokens-per-second >= 0, "
            "--kv-cache-tokens >= 1, 0 <= --step-phase < 1",
            file=sys.stderr,
        )
        return 2
    config = EngineConfig(
        model=args.model,
        max_concurrent=args.max_concurrent,
        tokens_per_second=args.tokens_per_second,
        host=args.host,
        port=args.port,
        drain_seconds=args.drain_seconds,
        block_tokens=args.block_tokens,
        cache_blocks=args.cache_blocks,
        prefill_tokens_per_second=args.prefill_tokens_per_second,
        kv_cache_tokens=args.kv_cache_tokens,
        step_phase=args.step_phase,
    )
    return serve(config)


def _cmd_sim_load(args: argparse.Namespace) -> int:
    from inferfleet.sim.load import completions_url, run_load

    if args.rps <= 0 or args.duration <= 0 or args.max_tokens < 1 or args.max_in_flight < 1:
        print(
            "error: need --rps > 0, --duration > 0, --max-tokens >= 1, --max-in-flight >= 1", file=sys.stderr
        )
        return 2
    print(f"sim-load: {args.rps:g} rps for {args.duration:g}s to {completions_url(args.url)}", flush=True)
    summary = run_load(
        args.url,
        rps=args.rps,
        duration=args.duration,
        max_tokens=args.max_tokens,
        max_in_flight=args.max_in_flight,
        timeout=args.timeout,
        seed=args.seed,
    )
    print(summary.render(), flush=True)
    return 0 if summary.passed else 1


def _names(text: str) -> frozenset[str]:
    """A comma-separated list of names, as a set (empty text: none)."""
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _add_prometheus_arguments(run: argparse.ArgumentParser) -> None:
    from inferfleet.runtime.config import PrometheusConfig

    default = PrometheusConfig()
    run.add_argument(
        "--prometheus-url",
        default=os.environ.get("INFERFLEET_PROMETHEUS_URL"),
        help="Prometheus with engine queue metrics (default $INFERFLEET_PROMETHEUS_URL; none: no scaling)",
    )
    run.add_argument("--prometheus-ca-file", default=None, help="PEM CA bundle that verifies Prometheus' TLS")
    run.add_argument(
        "--prometheus-insecure-skip-verify",
        action="store_true",
        help="do not verify Prometheus' TLS certificate (not for production)",
    )
    run.add_argument(
        "--prometheus-bearer-token-file", default=None, help="file holding a bearer token (read per query)"
    )
    run.add_argument("--prometheus-username-file", default=None, help="file holding the basic-auth user")
    run.add_argument("--prometheus-password-file", default=None, help="file holding the basic-auth password")
    run.add_argument(
        "--prometheus-timeout",
        type=float,
        default=default.timeout_seconds,
        help="seconds a query may take (sent as its server-side timeout)",
    )
    run.add_argument(
        "--prometheus-max-series",
        type=int,
        default=default.max_series,
        help="a query result with more series is refused",
    )
    run.add_argument(
        "--allow-custom-queries",
        action="store_true",
        help="honour spec.scaling.query (each query is confined to its service's namespace)",
    )


def _add_policy_arguments(run: argparse.ArgumentParser) -> None:
    from inferfleet.planning.policy import TenantPolicy

    default = TenantPolicy()
    run.add_argument(
        "--max-replicas-per-service",
        type=int,
        default=default.max_replicas_per_service,
        help="spec.replicas and scaling.maxReplicas above this are refused (PolicyViolation)",
    )
    run.add_argument(
        "--allowed-capabilities",
        type=_names,
        default=default.allowed_capabilities,
        help="comma-separated Linux capabilities engine containers may add (default: none)",
    )
    run.add_argument(
        "--allowed-priority-classes",
        type=_names,
        default=default.allowed_priority_classes,
        help="comma-separated PriorityClasses engine pods may use (default: none)",
    )
    run.add_argument(
        "--gpu-resource-names",
        type=_names,
        default=default.gpu_resource_names,
        help="comma-separated extended resources that are GPUs (spec.accelerator.resourceName must be "
        f"one; default: {','.join(sorted(default.gpu_resource_names))})",
    )


def build_config(args: argparse.Namespace) -> OperatorConfig:
    """The operator's configuration from `inferfleet run`'s arguments (the peering identity is
    kopf's POD_ID, set by `_cmd_run`)."""
    from inferfleet.planning.policy import TenantPolicy
    from inferfleet.runtime.config import ClientLimits, OperatorConfig, PeeringConfig, PrometheusConfig

    peering = PeeringConfig(
        name=args.peering,
        identity=os.environ.get("POD_ID", ""),
        priority=args.priority,
        namespace=args.namespace[0] if args.namespace else None,
    )
    return OperatorConfig(
        namespaces=tuple(args.namespace or ()),
        workers=args.workers,
        scheduler_name=args.scheduler_name,
        gateway_url=args.gateway_url,
        autoscale_interval_seconds=args.autoscale_interval,
        client_limits=ClientLimits(
            qps=args.kube_qps, burst=args.kube_burst, concurrency=args.kube_concurrency
        ),
        peering=peering if args.peering else None,
        peering_lifetime_seconds=args.peering_lifetime,
        model_cache=_model_cache(args),
        inference_pools=args.inference_pools == "auto",
        endpoint_picker=_endpoint_picker(args),
        prometheus=PrometheusConfig(
            url=args.prometheus_url,
            ca_file=args.prometheus_ca_file,
            insecure_skip_verify=args.prometheus_insecure_skip_verify,
            bearer_token_file=args.prometheus_bearer_token_file,
            username_file=args.prometheus_username_file,
            password_file=args.prometheus_password_file,
            timeout_seconds=args.prometheus_timeout,
            max_series=args.prometheus_max_series,
            custom_queries=args.allow_custom_queries,
        ),
        policy=TenantPolicy(
            max_replicas_per_service=args.max_replicas_per_service,
            allowed_capabilities=args.allowed_capabilities,
            allowed_priority_classes=args.allowed_priority_classes,
            gpu_resource_names=args.gpu_resource_names,
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inferfleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    _add_tool_parsers(sub)
    _add_sim_engine_parser(sub)
    _add_gateway_parser(sub)
    _add_fetch_model_parser(sub)
    _add_sim_load_parser(sub)
    return parser


def _add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from inferfleet.runtime.config import ClientLimits, OperatorConfig, PeeringConfig

    DEFAULT, LIMITS = OperatorConfig(), ClientLimits()  # noqa: N806 - each default is defined there, once
    run = sub.add_parser("run", help="run the operator against the current kubeconfig's cluster")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; a glob is allowed); default: all",
    )
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL served by the operator",
    )
    run.add_argument(
        "--metrics-port", type=int, default=8081, help="serve the operator's /metrics on this port (0: off)"
    )
    run.add_argument("--metrics-address", default="0.0.0.0", help="address the metrics server binds")
    run.add_argument(
        "--autoscale-interval",
        type=float,
        default=DEFAULT.autoscale_interval_seconds,
        help="seconds between autoscaler ticks",
    )
    _add_peering_arguments(run, DEFAULT.peering_lifetime_seconds, PeeringConfig.priority)
    _add_kube_client_arguments(run, LIMITS)
    run.add_argument("--workers", type=int, default=DEFAULT.workers, help="threads running reconciles")
    run.add_argument(
        "--scheduler-name",
        default=os.environ.get("INFERFLEET_SCHEDULER_NAME"),
        help="kube-scheduler profile for single-pod replicas, e.g. one scoring GPUs MostAllocated "
        "to bin-pack them (default $INFERFLEET_SCHEDULER_NAME, else the cluster's default scheduler)",
    )
    run.add_argument(
        "--gateway-url",
        default=DEFAULT.gateway_url,
        help="base URL of `inferfleet gateway` serving these namespaces: status.endpoint points through it",
    )
    _add_prometheus_arguments(run)
    _add_policy_arguments(run)
    _add_model_cache_arguments(run)
    _add_inference_pool_arguments(run)
    run.add_argument("--log-json", action="store_true", help="structured JSON logs")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_cmd_run)


def _add_peering_arguments(parser: argparse.ArgumentParser, lifetime: int, priority: int) -> None:
    parser.add_argument(
        "--peering",
        default=None,
        help="KopfPeering name for leader election between replicas; default: standalone",
    )
    parser.add_argument("--priority", type=int, default=priority, help="peering priority of this instance")
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=lifetime,
        help="seconds after its last keepalive that a silent peer is taken for dead (the handover time)",
    )


def _add_kube_client_arguments(parser: argparse.ArgumentParser, limits: ClientLimits) -> None:
    parser.add_argument(
        "--kube-qps", type=float, default=limits.qps, help="Kubernetes API requests per second"
    )
    parser.add_argument(
        "--kube-burst", type=int, default=limits.burst, help="Kubernetes API requests in a burst"
    )
    parser.add_argument(
        "--kube-concurrency",
        type=int,
        default=limits.concurrency,
        help="Kubernetes API requests in flight at most",
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster or $KUBECONFIG)"
    )


def _add_tool_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands that need no operator: CRDs, a plan, the local cluster and the demo."""
    crds = sub.add_parser("crds", help="generate the CRD YAML from the API models")
    crds.add_argument("--output-dir", default=None, help="where to write (default: the repo's crds/)")
    crds.add_argument("--check", action="store_true", help="exit 1 if the files differ from the models")
    crds.set_defaults(func=_cmd_crds)

    plan = sub.add_parser("plan", help="print the shard plan of an InferenceService YAML (no cluster needed)")
    plan.add_argument("file", help="YAML file with one or more InferenceServices")
    plan.add_argument("-o", "--output", choices=["table", "json"], default="table")
    plan.add_argument(
        "--model-dir",
        help="a local copy of the model: its config.json and safetensors index or headers give the "
        "parameter count and shape (the weights are not read)",
    )
    plan.set_defaults(func=_cmd_plan)

    cluster = sub.add_parser("cluster", help="the local simulated GPU cluster (development)")
    cluster.add_argument("action", choices=["up", "down", "kubeconfig"])
    cluster.add_argument("--name", default="inferfleet")
    cluster.set_defaults(func=_cmd_cluster)

    demo = sub.add_parser("demo", help="the local GPU cluster, Prometheus and the operator, end to end")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="leave the cluster running at the end; then KWOK marks pods Ready on its timer and cold "
        "starts do not wait for a fetch (nothing plays the kubelet after the demo exits)",
    )
    demo.add_argument("--name", default="inferfleet-demo")
    demo.add_argument(
        "--report-dir",
        default=None,
        help="where to write report.md and report.png at the end (default: .cache/demo/report-<timestamp>)",
    )
    demo.set_defaults(func=_cmd_demo)


def _add_sim_load_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = sub.add_parser("sim-load", help="open-loop Poisson load against a completions endpoint")
    load.add_argument("--url", required=True, help="server URL, e.g. http://NAME.NAMESPACE.svc:8000")
    load.add_argument("--rps", type=float, required=True, help="mean requests per second")
    load.add_argument("--duration", type=float, required=True, help="seconds of arrivals")
    load.add_argument("--max-tokens", type=int, default=16)
    load.add_argument(
        "--max-in-flight",
        type=int,
        default=64,
        help="outstanding requests at most; later arrivals are skipped",
    )
    load.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    load.add_argument("--seed", type=int, default=None, help="seed of the arrival times")
    load.set_defaults(func=_cmd_sim_load)


def _add_sim_engine_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    engine = sub.add_parser(
        "sim-engine",
        help="a simulated inference engine: OpenAI-style API (streamed and not), a prefix cache and vLLM's "
        "queue metrics, no GPU",
    )
    engine.add_argument("--model", required=True, help="served model name")
    engine.add_argument("--port", type=int, default=8000)
    engine.add_argument("--host", default="0.0.0.0", help="address to bind")
    engine.add_argument("--max-concurrent", type=int, default=8, help="requests running at once; more wait")
    engine.add_argument(
        "--tokens-per-second", type=float, default=100.0, help="generation speed of one request"
    )
    engine.add_argument(
        "--drain-seconds",
        type=float,
        default=20.0,
        help="on SIGTERM, time the held requests get to finish before they are cut",
    )
    engine.add_argument("--block-tokens", type=int, default=16, help="words per prefix-cache block")
    engine.add_argument("--cache-blocks", type=int, default=4096, help="prefix-cache capacity in blocks")
    engine.add_argument(
        "--prefill-tokens-per-second",
        type=float,
        default=0.0,
        help="prefill speed for the prompt's uncached tokens (0: prefill takes no time)",
    )
    engine.add_argument(
        "--kv-cache-tokens",
        type=int,
        help="KV-cache capacity for running requests' prompt and output tokens; a prompt that does "
        "not fit waits (default: --cache-blocks x --block-tokens)",
    )
    engine.add_argument(
        "--step-phase",
        type=float,
        help="tick at this fraction of each decode step on the machine's monotonic clock (engines "
        "given k/n tick evenly spread); default: one step after a request reaches an idle engine",
    )
    engine.set_defaults(func=_cmd_sim_engine)


def _add_gateway_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from inferfleet.gateway.config import GatewayConfig

    default = GatewayConfig()
    gateway = sub.add_parser(
        "gateway", help="the OpenAI-compatible gateway: request queue, slots, retries, scale from zero"
    )
    gateway.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve only this namespace (repeatable; a glob is allowed); default: all",
    )
    gateway.add_argument("--host", default=default.host, help="address the OpenAI API binds")
    gateway.add_argument("--port", type=int, default=default.port, help="port of the OpenAI API")
    gateway.add_argument("--metrics-address", default=default.metrics_address)
    gateway.add_argument(
        "--metrics-port", type=int, default=default.metrics_port, help="port of /metrics, /healthz, /readyz"
    )
    _add_gateway_routing_arguments(gateway, default)
    gateway.add_argument(
        "--shutdown-seconds",
        type=float,
        default=default.shutdown_seconds,
        help="on SIGTERM, time the requests in flight get to finish",
    )
    gateway.add_argument(
        "--static-endpoints",
        action="append",
        default=[],
        metavar="MODEL=URL[,URL...]",
        help="serve MODEL from these engine URLs without a cluster (development and benchmarks)",
    )
    gateway.add_argument(
        "--static-slots", type=int, default=default.static_slots, help="slots per static URL"
    )
    _add_gateway_worker_arguments(gateway, default)
    gateway.add_argument(
        "--event-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="uvloop cut the p99 added TTFT at 300 streams from ~100 ms to ~3 ms (bench/gateway)",
    )
    gateway.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster or $KUBECONFIG)"
    )
    gateway.add_argument("-v", "--verbose", action="store_true")
    gateway.set_defaults(func=_cmd_gateway)


def _add_gateway_worker_arguments(gateway: argparse.ArgumentParser, default: GatewayConfig) -> None:
    gateway.add_argument(
        "--workers",
        type=int,
        default=default.workers,
        help="gateway processes sharing the API port, e.g. one per CPU the pod has; slots and the "
        "queue bound count per process",
    )
    gateway.add_argument(
        "--worker-timeout-seconds",
        type=float,
        default=default.worker_timeout_seconds,
        help="with --workers: a worker silent this long (its loop stuck) is killed and started again",
    )


def _add_gateway_routing_arguments(gateway: argparse.ArgumentParser, default: GatewayConfig) -> None:
    gateway.add_argument(
        "--max-attempts", type=int, default=default.max_attempts, help="tries per request, the first included"
    )
    gateway.add_argument(
        "--retry-budget",
        type=float,
        default=default.retry_budget,
        help="retries at most this fraction of recent requests (plus a few), so a sick fleet gets no storm",
    )
    gateway.add_argument(
        "--routing",
        choices=["least-load", "prefix-affinity"],
        default=default.routing,
        help="prefix-affinity: requests sharing their leading prompt blocks go to one replica (its "
        "prefix cache) unless it is above both (1 + --prefix-load-bound) x the mean load and the "
        "mean plus --prefix-load-slack requests",
    )
    gateway.add_argument(
        "--prefix-load-bound",
        type=float,
        default=default.prefix_load_bound,
        help="0-10 (default %(default)s)",
    )
    gateway.add_argument(
        "--prefix-load-slack",
        type=int,
        default=default.prefix_load_slack,
        help="requests above the mean a replica holding the prefix may take, 0-1024 (default %(default)s); "
        "counted per gateway process, as slots are",
    )


def _cmd_gateway(args: argparse.Namespace) -> int:
    import logging

    if args.kubeconfig:
        # Before importing the client: it reads KUBECONFIG when it is imported.
        os.environ["KUBECONFIG"] = args.kubeconfig
    from inferfleet.gateway.app import parse_static, serve
    from inferfleet.gateway.config import GatewayConfig
    from inferfleet.gateway.workers import WorkerSettings, run_on, supervise

    if (
        args.max_attempts < 1
        or not 0 <= args.retry_budget <= 1
        or args.static_slots < 1
        or not (0 <= args.prefix_load_bound <= 10)
        or not (0 <= args.prefix_load_slack <= 1024)
        or not 1 <= args.workers <= 64
        or args.worker_timeout_seconds <= 0
    ):
        print(
            "error: need --max-attempts >= 1, 0 <= --retry-budget <= 1, --static-slots >= 1, "
            "0 <= --prefix-load-bound <= 10, 0 <= --prefix-load-slack <= 1024, 1 <= --workers <= 64, "
            "--worker-timeout-seconds > 0",
            file=sys.stderr,
        )
        return 2
    try:
        static = parse_static(args.static_endpoints)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="[%(asctime)s] %(levelname)s %(message)s")
    config = GatewayConfig(
        host=args.host,
        port=args.port,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        namespaces=tuple(args.namespace),
        max_attempts=args.max_attempts,
        retry_budget=args.retry_budget,
        shutdown_seconds=args.shutdown_seconds,
        static_endpoints=static,
        static_slots=args.static_slots,
        routing=args.routing,
        prefix_load_bound=args.prefix_load_bound,
        prefix_load_slack=args.prefix_load_slack,
        workers=args.workers,
        worker_timeout_seconds=args.worker_timeout_seconds,
    )
    settings = WorkerSettings(args.event_loop, level)
    return run_on(args.event_loop, supervise(config, settings) if config.workers > 1 else serve(config)) or 0


def _add_model_cache_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--model-cache-root",
        default=os.environ.get("INFERFLEET_MODEL_CACHE_ROOT") or None,
        help="absolute path of the node weights cache on every GPU node; unset: off (each engine pod "
        "downloads into its own emptyDir)",
    )
    run.add_argument(
        "--model-cache-image",
        default=os.environ.get("INFERFLEET_MODEL_CACHE_IMAGE") or None,
        help="image with `inferfleet` for the cache's Jobs and wait (the operator's own)",
    )
    run.add_argument(
        "--model-cache-namespace",
        default=os.environ.get("POD_NAMESPACE") or None,
        help="the operator's namespace, where the Jobs that make cache directories run (hostPath)",
    )
    run.add_argument(
        "--model-cache-node-budget-bytes",
        type=int,
        default=None,
        help="bytes of weights one node's cache may hold (all namespaces); beyond, the least recently "
        "used weights no pod uses are evicted (default: no budget)",
    )


def _add_inference_pool_arguments(run: argparse.ArgumentParser) -> None:
    from inferfleet.planning.inference_pool import FAILURE_MODES, EndpointPicker

    default = EndpointPicker()
    run.add_argument(
        "--inference-pools",
        choices=("auto", "off"),
        default="auto",
        help="auto: an InferencePool (Gateway API Inference Extension) per service where the cluster "
        "serves inferencepools.inference.networking.k8s.io/v1; off: never",
    )
    run.add_argument(
        "--endpoint-picker-service",
        default=default.service,
        help="the endpoint picker's Service each InferencePool names; {service} is the service's name",
    )
    run.add_argument("--endpoint-picker-port", type=int, default=default.port)
    run.add_argument("--endpoint-picker-failure-mode", choices=FAILURE_MODES, default=default.failure_mode)


def _endpoint_picker(args: argparse.Namespace) -> EndpointPicker:
    from inferfleet.api.resource import is_valid_service_name
    from inferfleet.planning.inference_pool import EndpointPicker

    if not 1 <= args.endpoint_picker_port <= 65535:
        raise SystemExit("--endpoint-picker-port must be a port number (1-65535)")
    if not is_valid_service_name(args.endpoint_picker_service.replace("{service}", "x")):
        raise SystemExit("--endpoint-picker-service must be a Service name ({service}: the service's name)")
    return EndpointPicker(
        args.endpoint_picker_service, args.endpoint_picker_port, args.endpoint_picker_failure_mode
    )


def _model_cache(args: argparse.Namespace) -> CacheSettings | None:
    from inferfleet.planning.weights_jobs import CacheSettings

    if not args.model_cache_root:
        return None
    if not args.model_cache_root.startswith("/") or ".." in args.model_cache_root.split("/"):
        raise SystemExit("--model-cache-root must be an absolute path without ..")
    if not args.model_cache_image or not args.model_cache_namespace:
        raise SystemExit("--model-cache-root needs --model-cache-image and --model-cache-namespace")
    budget = args.model_cache_node_budget_bytes
    if budget is not None and budget < 1:
        raise SystemExit("--model-cache-node-budget-bytes must be at least 1")
    return CacheSettings(
        root=args.model_cache_root.rstrip("/") or "/",
        image=args.model_cache_image,
        namespace=args.model_cache_namespace,
        node_budget_bytes=budget,
    )


def _add_fetch_model_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fetch = sub.add_parser(
        "fetch-model",
        help="download a model's weights once into a node-local cache: resumable, verified, published "
        "atomically; prints one JSON line (exit 0 ok, 1 failed, 2 bad or unsupported URI, 3 corrupt file, "
        "4 not enough space, 5 no such model or no access)",
    )
    fetch.add_argument(
        "source", help="hf://ORG/NAME[@REVISION] or s3://BUCKET/PREFIX (gs://, oci://: not yet)"
    )
    fetch.add_argument(
        "--cache-root",
        default=os.environ.get("INFERFLEET_CACHE_ROOT"),
        help="the node's cache directory (default $INFERFLEET_CACHE_ROOT)",
    )
    fetch.add_argument("--workers", type=int, default=4, help="files downloaded at once")
    fetch.add_argument(
        "--reserve-bytes",
        type=int,
        default=256 << 20,
        help="free bytes the cache filesystem must keep after the fetch; less: exit 4 before downloading",
    )
    fetch.add_argument(
        "--s3-endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        help="an S3-compatible endpoint (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS)",
    )
    fetch.add_argument(
        "--s3-region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    fetch.add_argument(
        "--termination-log",
        default=None,
        help="also write the JSON line here (a pod's terminationMessagePath, e.g. /dev/termination-log)",
    )
    fetch.add_argument(
        "--metadata-only",
        action="store_true",
        help="read only config.json, the safetensors index and each safetensors header (ranged reads) into a "
        "scratch directory and print the model's facts; no --cache-root needed, the cache is not touched",
    )
    fetch.add_argument(
        "--evict",
        action="store_true",
        help="remove the model from the cache instead (under its fetch lock; the operator's eviction Job)",
    )
    fetch.set_defaults(func=_cmd_fetch_model)


def _cmd_fetch_model(args: argparse.Namespace) -> int:
    """Keys come from the environment (a Job fills them from Secrets): HF_TOKEN for the Hub
    (HF_ENDPOINT picks a mirror), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for S3."""
    import json
    from pathlib import Path

    from inferfleet.weights.fetch import EXIT_USAGE, FetchError, FetchOptions, fetch_model

    outcome: dict[str, object]
    if not (args.cache_root or args.metadata_only) or args.workers < 1 or args.reserve_bytes < 0:
        outcome, code = (
            {"error": "BadOptions", "message": "need --cache-root, --workers >= 1, --reserve-bytes >= 0"},
            EXIT_USAGE,
        )
    else:
        options = FetchOptions(
            uri=args.source,
            cache_root=Path(args.cache_root or "."),
            workers=args.workers,
            reserve_bytes=args.reserve_bytes,
            s3_endpoint_url=args.s3_endpoint_url,
            s3_region=args.s3_region,
            hf_token=os.environ.get("HF_TOKEN") or None,
        )
        try:
            if args.evict:
                from inferfleet.weights.evict import evict_model

                outcome, code = evict_model(args.source, options.cache_root).as_dict(), 0
            elif args.metadata_only:
                from inferfleet.weights.metadata import fetch_metadata

                outcome, code = fetch_metadata(options).as_dict(), 0
            else:
                outcome, code = fetch_model(options).as_dict(), 0
        except FetchError as e:
            outcome, code = {"source": args.source, "error": e.reason, "message": str(e)}, e.code
    if code:
        print(f"error: {outcome['message']}", file=sys.stderr)
    line = json.dumps(outcome, sort_keys=True)
    print(line, flush=True)
    if args.termination_log:
        Path(args.termination_log).write_text(line + "\n")
    return code


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
