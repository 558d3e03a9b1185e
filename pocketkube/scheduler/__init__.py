"""The scheduler: assigns pending pods to nodes through the binding subresource."""
