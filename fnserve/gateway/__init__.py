"""The gateway: per-function URLs over replicas on a platform (local processes, Docker, Kubernetes)."""
