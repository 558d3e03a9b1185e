"""Cluster networking: pod IPs, service virtual IPs to endpoints, DNS records, NetworkPolicy evaluation."""
