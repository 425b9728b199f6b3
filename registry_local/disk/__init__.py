"""This host's cache dir (L1): committed content, links learned from the bucket,
upload sessions, eviction, and the offline verify and prune."""
