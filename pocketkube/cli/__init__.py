"""The pocketkube command line."""
