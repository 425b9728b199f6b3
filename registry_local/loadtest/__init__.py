"""`registry-local loadtest`: engine-like clients, their worker processes, and the
report of what a storm cost."""
