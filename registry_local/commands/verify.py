"""`registry-local verify`: every cached blob hashed again."""

from __future__ import annotations

import argparse

from .. import config
from ..config.flags import REPAIR
from ..disk.maintenance import verify
from ..progress import human_bytes
from .paths import existing_cache_dir

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "verify")


def run(args: argparse.Namespace) -> int:
    directory = existing_cache_dir(config.load(args))

    def on_file(digest: object, good: bool) -> None:
        if not good:
            print(f"MISMATCH {digest}", flush=True)

    report = verify(directory, REPAIR.value(args), on_file)
    print(
        f"checked {report.checked} files, {human_bytes(report.bytes)}: "
        f"{len(report.bad)} did not match their digest"
    )
    for path in report.quarantined:
        print(f"quarantined {path}")
    return 1 if report.bad else 0
