"""The scenarios of bench/run.py, one module each, each with `run()` and a typed,
frozen result that writes its own report and its own section of the results
file (`Result` in result.py):

- cold: cold storms of 1..100 clients, against the CNCF registry on the bucket
  and in proxy mode;
- warm: warm throughput, small-blob and manifest-HEAD rates, against nginx;
- big: one large blob pulled cold by one client, then by many;
- ranged: one cold pull of the large blob, one stream against ranged parts;
- fleet: hosts over an empty bucket and an origin, alone and coordinated;
- fleet_scale: the fleet at scale, flat against staged designs, beside the model;
- cold_layers: one engine-like pull of many layers, against its floors;
- lazy: a lazy puller's reads of one cold layer;
- access: a warm storm with per-repository access on (a policy, or the origin
  deciding), against the same storm with access off.

storm.py holds the measurement most of them share: a storm of pulls, and what
S3 sent for it.
"""
