"""The HTTPS Kubernetes API server."""
