"""Origin registries behind the bucket (L3): the Registry v2 client, and which origin
serves a repository name."""
