"""`registry-local check`: whether the server on --listen answers, for health checks.

It runs every few seconds in a container: it imports only what it needs."""

from __future__ import annotations

import argparse
import json
import sys

from .. import config
from ..config.flags import READY
from .probe import ask_local

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "check")


def run(args: argparse.Namespace) -> int:
    """Probe the server these settings describe; only registry-local's own
    answer counts (another program's 200 does not)."""
    answer = ask_local(config.load(args), "/readyz" if READY.value(args) else "/healthz")
    if answer is None:
        return 1
    _, status, body = answer
    if status != 200:
        try:
            checks = json.loads(body).get("checks", {})
            why = "; ".join(f"{k}: {v}" for k, v in checks.items() if v not in ("ok", "on"))
        except (ValueError, AttributeError):
            why = ""
        print(f"registry-local: not ready ({why or status})", file=sys.stderr)
        return 1
    return 0
