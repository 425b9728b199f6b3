"""The fleet: the hosts of one bucket coordinating through it, so that a whole
fleet reads the origin once per blob, manifest and tag (coordination.py draws
the package)."""
