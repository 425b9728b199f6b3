"""Coordination between the hosts of one bucket: leases written with S3's
conditional writes, and the client that streams another host's fill."""
