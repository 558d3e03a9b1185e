"""Built-in controllers, one module each."""
