"""The cache over the backing store and the origins: blob lookups (the fills
themselves are fill/), links, manifests and tags, pushes, warm-up, prefetch,
readiness and the write-through of what came from an origin."""
