"""One shared Kubernetes API client per operator process."""

from __future__ import annotations

from kubernetes import client, config


def connect() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()
