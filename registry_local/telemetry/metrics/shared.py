"""What the recorders' collectors share: the name prefix every metric carries,
and the latency buckets of requests (to clients and to S3)."""

from __future__ import annotations

__all__ = ["LATENCY", "PREFIX"]

PREFIX = "registry_local_"
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
