"""registry-local: a host-local container registry cache that fills from S3 once per blob."""

__version__ = "0.1.0"
