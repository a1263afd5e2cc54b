"""IO with the Kubernetes API: server-side apply, status patches, connection set-up."""
