"""A throttling S3 proxy as a process of its own: latency, a per-stream bandwidth
cap and an optional link cap, so that concurrency shows in benchmarks.

    python bench/throttle.py --upstream http://127.0.0.1:8333 --port 9000 \
        --latency-ms 20 --stream-mbps 50 [--link-mbps 400]

It counts what passes; GET /__proxy/stats and POST /__proxy/reset read and
clear the counts (tests/support/s3proxy.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.s3proxy import Fault, S3Proxy


async def main(args: argparse.Namespace) -> None:
    proxy = S3Proxy(args.upstream, link_rate=args.link_mbps * 1e6 if args.link_mbps else None)
    proxy.add(
        Fault(
            lambda method, key: method == "GET",
            delay=args.latency_ms / 1000,
            rate=args.stream_mbps * 1e6 if args.stream_mbps else None,
        )
    )
    await proxy.start(port=args.port)
    print(f"throttling proxy on {proxy.url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--stream-mbps", type=float, default=50, help="MB/s per stream; 0: none")
    parser.add_argument("--link-mbps", type=float, default=0, help="MB/s in all; 0: none")
    asyncio.run(main(parser.parse_args()))
