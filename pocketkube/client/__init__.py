"""Async Kubernetes client over HTTP, informers and work queues."""
