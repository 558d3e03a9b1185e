"""Controller framework: reconcile loops over informers and keyed queues."""
