"""How long a server takes to index its cache dir at start, against the floor.

Creates a cache dir with N committed blobs (default 100,000), then times
`DiskStore.open` (crash leftovers removed, every blob indexed with its size and
last access) against a bare os.walk + stat of the same tree, in the same run.

    python bench/index_startup.py [--blobs 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry_local.disk.store import DiskStore


def make_cache(root: Path, count: int) -> None:
    for number in range(count):
        data = number.to_bytes(8, "big")
        hexdigest = hashlib.sha256(data).hexdigest()
        path = root / "blobs" / "sha256" / hexdigest[:2] / hexdigest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def walk_and_stat(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root / "blobs"):
        for name in files:
            total += os.stat(os.path.join(directory, name)).st_size
    return total


def drop_caches() -> None:
    """Cold page cache where allowed (root); otherwise both runs are warm alike."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rl-index-") as directory:
        root = Path(directory)
        began = time.perf_counter()
        make_cache(root, args.blobs)
        print(f"created {args.blobs} blobs in {time.perf_counter() - began:.1f}s")
        rows: list[tuple[str, str, float]] = []
        runs: list[tuple[str, Callable[[], object]]] = [
            ("os.walk + stat (floor)", lambda: walk_and_stat(root)),
            ("DiskStore.open", lambda: len(asyncio.run(DiskStore.open(root)))),
        ]
        for label, run in runs:
            for warmth in ("cold", "warm"):
                if warmth == "cold":
                    drop_caches()
                began = time.perf_counter()
                run()
                rows.append((label, warmth, time.perf_counter() - began))
        floor = {w: t for label, w, t in rows if label.startswith("os.walk")}
        print(f"\n{'':26} {'cache':5} {'seconds':>8} {'vs floor':>9}")
        for label, warmth, seconds in rows:
            print(f"{label:26} {warmth:5} {seconds:8.2f} {seconds / floor[warmth]:8.2f}x")


if __name__ == "__main__":
    main()
