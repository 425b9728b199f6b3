"""The distribution-spec's vocabulary: digests, repository names and tags, manifest
media types, byte ranges."""
