"""The cache over the backing store and the origins: fills, blob bodies, links,
manifests and tags, pushes, warm-up and readiness."""
