"""bench/gateway: added latency and CPU of the gateway against direct connections and vllm-router."""
