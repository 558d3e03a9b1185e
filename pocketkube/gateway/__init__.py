"""Ingress and gateway data plane: compiled route tables and the proxy that serves them."""
