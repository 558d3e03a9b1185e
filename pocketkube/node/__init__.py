"""The node agent (kubelet): node registration, leases, pod workers and container runtimes."""
