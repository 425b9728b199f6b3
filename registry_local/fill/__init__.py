"""The fill: one blob on its way into this host's cache, and what readers get of it.

sources.py   where a fill reads (the bucket, an origin, the fleet), chosen once
slots.py     the bound on blob reads from S3 at once, shared fairly
reading.py   a read that resumes after breaks
extents.py   which byte ranges a fill holds
pieces.py    which bytes to read next (waiting ranges first) and the reads under way
fill.py      the fill as a task of its own: read, hash, verify, commit or discard
direct.py    a blob read straight from its source when the cache has no room
body.py      a reader's view of a blob: committed, filling, in memory or direct
"""
