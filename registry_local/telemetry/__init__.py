"""What the process tells operators: Prometheus metrics (recorded by intent),
log set-up, and each request's trace for its access-log line."""
