"""`registry-local status`: a short live summary of the server on --listen."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .. import config
from ..config.flags import STATUS_JSON
from ..telemetry.summary import summarize
from .probe import ask_local

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_options(parser, "status")


def run(args: argparse.Namespace) -> int:
    settings = config.load(args)
    readiness = ask_local(settings, "/readyz")  # a fresh probe: the gauge may be older
    answer = None if readiness is None else ask_local(settings, "/metrics")
    if readiness is None or answer is None:
        return 1
    url, status, body = answer
    try:
        if status != 200:
            raise ValueError(f"answered {status}")
        summary = summarize(body.decode("utf-8", "replace"), readiness[1] == 200)
    except ValueError as exc:
        print(f"registry-local: {url}: {exc}", file=sys.stderr)
        return 1
    if STATUS_JSON.value(args):
        print(json.dumps({**dataclasses.asdict(summary), "fan_out": summary.fan_out}, indent=2))
        return 0
    print(f"registry-local at {url.removesuffix('/metrics')}")
    for line in summary.lines():
        print(f"  {line}")
    return 0 if summary.ready else 1
