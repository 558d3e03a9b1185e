"""The object model as pure data and functions, no I/O."""
