"""A scale model of a fleet's storm on one new blob: discrete events, no processes.

Every host of a fleet misses the same blob at the same moment; one holds its
lease and reads it from the origin. Two designs:

- **flat** (the fleet before staged parts): every follower streams the
  holder's fill from its peer listener; the holder's uplink is shared by all;
- **staged**: the holder stages the blob in the bucket part by part as it fills
  (a PutObject per part, one at a time), streams its fill to at most
  `max_streams` followers, and the others read each part from the bucket once
  it has landed, hearing of it by a long poll on the holder, one GET per part
  per host, one part at a time. S3 admits at most `get_limit` GETs per second
  on the prefix (a token bucket holding a tenth of a second's worth); one more
  gets 503 SlowDown after a round trip and is retried after a full-jitter
  backoff, as registry-local's S3 client does (0.05 s doubling, at most 2 s).

Bytes flow as fluids at their bottleneck rate: the origin's per-stream rate,
S3's per-GET rate, a host's NIC (each direction) shared evenly by the streams
through it. Printed per fleet size: the storm's end (the last host holding the
whole blob), the first byte's delay behind the holder at the slowest host, the
busiest host's upload in multiples of the blob, and the peak S3 request rate
(admitted and refused).

    python bench/fleet_model.py [--hosts 10,100,1000,10000] [--blob-mib 1024]
        [--part-mib 8,32,128] [--json out.json]

`bench/run.py --scenarios fleet-scale` measures the same storm with eight real
hosts and prints this model's figures for that set-up beside them.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

MIB = 1 << 20
_FIRST_BACKOFF, _MAX_BACKOFF = 0.05, 2.0  # backing/s3.py's retry schedule


@dataclass(frozen=True)
class Setting:
    """The world a storm runs in; rates in bytes per second."""

    hosts: int
    blob: int = 1024 * MIB
    design: str = "staged"  # or "flat"
    part: int = 32 * MIB  # --fleet-part-size
    max_streams: int = 2  # --peer-max-streams
    nic: float = 1.25e9  # 10 Gb/s each way
    origin_rate: float = 100e6  # one stream from the origin registry
    s3_rate: float = 90e6  # one GET or PUT stream of S3
    s3_latency: float = 0.03  # a request's first byte
    peer_latency: float = 0.001  # a request to another host
    get_limit: float = 5500.0  # GETs per second per prefix
    seed: int = 1


@dataclass
class Outcome:
    """What one simulated storm came to: its time, the busiest host's upload and
    S3's load."""

    storm: float = 0.0  # seconds until every host holds the whole blob
    holder_done: float = 0.0  # the holder's own fill
    first_byte_lag: float = 0.0  # the slowest host's first byte, after the holder's
    busiest_upload: float = 0.0  # bytes the busiest host sent, in blobs
    peak_requests: float = 0.0  # S3 requests in the busiest second, refused ones too
    peak_admitted: float = 0.0
    slow_downs: int = 0
    gets: int = 0
    events: int = 0


class _Events:
    """A clock and the actions due at each moment."""

    def __init__(self) -> None:
        self._queue: list[tuple[float, int, Callable[[float], None]]] = []
        self._order = 0
        self.handled = 0

    def at(self, when: float, action: Callable[[float], None]) -> None:
        self._order += 1
        heapq.heappush(self._queue, (when, self._order, action))

    def run(self) -> None:
        while self._queue:
            when, _, action = heapq.heappop(self._queue)
            self.handled += 1
            action(when)


class _Bucket:
    """S3's admission of GETs on one prefix: a token bucket of `limit` per second."""

    def __init__(self, limit: float) -> None:
        self._limit = limit
        self._capacity = max(1.0, limit / 10)
        self._tokens = self._capacity
        self._last = 0.0
        self.requests: Counter[int] = Counter()  # per whole second, refused ones too
        self.admitted: Counter[int] = Counter()

    def admit(self, now: float) -> bool:
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._limit)
        self._last = max(self._last, now)
        self.requests[int(now)] += 1
        if self._tokens >= 1:
            self._tokens -= 1
            self.admitted[int(now)] += 1
            return True
        return False


def _parts(blob: int, part: int) -> list[tuple[int, int]]:
    return [(start, min(start + part, blob)) for start in range(0, blob, part)]


def simulate(s: Setting) -> Outcome:
    if s.design == "flat":
        return _flat(s)
    return _staged(s)


def _flat(s: Setting) -> Outcome:
    """Every follower streams from the holder: its uplink is shared by all."""
    followers = s.hosts - 1
    fill = s.peer_latency + s.blob / min(s.origin_rate, s.nic)
    share = min(s.origin_rate, s.nic / max(1, followers), s.nic)
    storm = max(fill, s.peer_latency + s.blob / share) if followers else fill
    return Outcome(
        storm=storm,
        holder_done=fill,
        first_byte_lag=s.peer_latency,
        busiest_upload=float(followers),
        events=followers,
    )


def _staged(s: Setting) -> Outcome:
    rng = random.Random(s.seed)
    events = _Events()
    bucket = _Bucket(s.get_limit)
    parts = _parts(s.blob, s.part) if s.blob > s.part else []
    streams = min(s.max_streams, s.hosts - 1)
    readers = s.hosts - 1 - streams
    origin_rate = min(s.origin_rate, s.nic)
    # The holder: part i is in its file when the origin has sent it; staged one
    # PUT at a time (its uplink shared with its `streams` peer streams).
    up_share = min(s.s3_rate, s.nic / (1 + streams))
    landed: list[float] = []
    ready = 0.0
    for start, end in parts:
        filled = s.s3_latency + end / origin_rate
        ready = max(ready, filled) + s.s3_latency + (end - start) / up_share
        landed.append(ready)
    holder_done = s.s3_latency + s.blob / origin_rate
    stream_rate = min(origin_rate, s.nic / (1 + streams))
    stream_done = max(holder_done, s.peer_latency + s.blob / stream_rate)
    out = Outcome(holder_done=holder_done, storm=max(holder_done, stream_done if streams else 0))
    if not parts:  # one part: written whole once verified, then read by everyone
        landed = [holder_done + s.s3_latency + s.blob / up_share]
        parts = [(0, s.blob)]
    down = min(s.s3_rate, s.nic)
    finished: list[float] = []
    first_bytes: list[float] = []

    def read(host: int, index: int, attempt: int) -> Callable[[float], None]:
        def act(now: float) -> None:
            out.gets += 1
            if not bucket.admit(now):
                out.slow_downs += 1
                pause = rng.uniform(0, min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** (attempt + 1)))
                events.at(now + s.s3_latency + pause, read(host, index, attempt + 1))
                return
            start, end = parts[index]
            if index == 0:
                first_bytes.append(now + s.s3_latency)
            done = now + s.s3_latency + (end - start) / down
            events.at(done, next_part(host, index + 1))

        return act

    def next_part(host: int, index: int) -> Callable[[float], None]:
        def act(now: float) -> None:
            if index == len(parts):
                finished.append(now)
                return
            # The long poll answers when the part lands (at once if it has).
            heard = max(now, landed[index] + s.peer_latency)
            events.at(heard, read(host, index, 0))

        return act

    for host in range(readers):
        events.at(0.0, next_part(host, 0))
    events.run()
    out.events = events.handled
    out.storm = max([out.storm, *finished])
    holder_first = s.s3_latency + min(s.blob, 64 * 1024) / origin_rate
    out.first_byte_lag = max([s.peer_latency, *first_bytes]) - holder_first
    out.busiest_upload = 1 + streams if s.blob > s.part else float(streams)
    out.peak_requests = max(bucket.requests.values(), default=0)
    out.peak_admitted = max(bucket.admitted.values(), default=0)
    return out


@dataclass
class Row:
    """One set-up of the model's table and its outcome."""

    setting: Setting
    outcome: Outcome = field(default_factory=Outcome)


def table(settings: list[Setting]) -> list[Row]:
    return [Row(s, simulate(s)) for s in settings]


def show(rows: list[Row]) -> None:
    print(
        f"{'hosts':>6} {'design':>7} {'part':>8} {'k':>2} {'storm s':>8} {'vs holder':>9} "
        f"{'1st byte lag s':>14} {'busiest up':>10} {'S3 req/s peak':>13} {'SlowDown':>9}"
    )
    for row in rows:
        s, o = row.setting, row.outcome
        part = f"{s.part // MIB} MiB" if s.design == "staged" else "-"
        streams = s.max_streams if s.design == "staged" else "-"
        print(
            f"{s.hosts:>6} {s.design:>7} {part:>8} {streams:>2} "
            f"{o.storm:8.1f} {o.storm / o.holder_done:8.2f}x {o.first_byte_lag:14.2f} "
            f"{o.busiest_upload:9.0f}x {o.peak_requests:13.0f} {o.slow_downs:9d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="10,100,1000,10000")
    parser.add_argument("--blob-mib", type=float, default=1024)
    parser.add_argument("--part-mib", default="8,32,128")
    parser.add_argument("--max-streams", type=int, default=2)
    parser.add_argument("--nic-gbps", type=float, default=10)
    parser.add_argument("--origin-mbps", type=float, default=100, help="MB/s of one origin stream")
    parser.add_argument("--s3-mbps", type=float, default=90, help="MB/s of one S3 stream")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    base = Setting(
        hosts=1,
        blob=int(args.blob_mib * MIB),
        max_streams=args.max_streams,
        nic=args.nic_gbps * 1e9 / 8,
        origin_rate=args.origin_mbps * 1e6,
        s3_rate=args.s3_mbps * 1e6,
    )
    settings = []
    for hosts in (int(n) for n in args.hosts.split(",")):
        settings.append(replace(base, hosts=hosts, design="flat"))
        for part in (int(float(p) * MIB) for p in args.part_mib.split(",")):
            settings.append(replace(base, hosts=hosts, part=part))
    print(
        f"one {args.blob_mib:g} MiB blob, origin {args.origin_mbps:g} MB/s, S3 "
        f"{args.s3_mbps:g} MB/s per stream and {base.get_limit:g} GET/s per prefix, "
        f"NIC {args.nic_gbps:g} Gb/s"
    )
    rows = table(settings)
    show(rows)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([{**asdict(r.setting), **asdict(r.outcome)} for r in rows], out, indent=1)


if __name__ == "__main__":
    main()
