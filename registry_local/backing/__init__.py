"""The shared backing store (L2): the narrow Backend protocol, S3 and a directory
implementing it, distribution's registry tree over either, and the circuit breaker."""
