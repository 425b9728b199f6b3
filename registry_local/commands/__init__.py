"""The commands of `registry-local`: one module each, holding its arguments
(`add_arguments`) and its body (`run`, which returns the exit code).

`SUBCOMMANDS` names them, with the words `--help` shows, in the order it lists
them. A command's module is imported only when that command runs or its
arguments are wanted: `registry-local check`, a health check run every few
seconds, then loads neither the server, nor the S3 client, nor anything else
another command needs.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

__all__ = ["SUBCOMMANDS", "CommandModule", "Subcommand"]


class CommandModule(Protocol):
    """What the module of each command holds."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


@dataclass(frozen=True)
class Subcommand:
    """One command: its name, what `--help` says of it, and the module that holds it."""

    name: str
    help: str
    description: str
    module: str  # within this package

    def load(self) -> CommandModule:
        return cast(CommandModule, importlib.import_module(f"{__name__}.{self.module}"))


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "serve",
        "serve the Registry v2 API from the cache, filling misses from the backing store",
        "Serve the Registry v2 / OCI distribution API on --listen. "
        "Blobs and manifests come from --cache-dir; a miss is read from the backing "
        "store (an S3 bucket in distribution's layout, or the directory --fs-root) once, "
        "however many clients ask at the same time. S3 credentials come from the "
        "standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...).",
        "serve",
    ),
    Subcommand(
        "import",
        "write an OCI image layout or a `docker save` archive into the backing store",
        "Read an image from SOURCE, an OCI image layout (directory or tar) or a "
        "`docker save` archive (plain or compressed), verify every digest, and write it "
        "into the backing store in distribution's layout as NAME:TAG. A docker-archive is "
        "converted as the docker engine pushes it: gzipped layers, a schema2 manifest.",
        "import_image",
    ),
    Subcommand(
        "export",
        "write an image from the backing store as an OCI image layout",
        "Read NAME:TAG, every platform, from the backing store, verify every "
        "digest, and write it to DEST as an OCI image layout directory.",
        "export_image",
    ),
    Subcommand(
        "warm",
        "fetch images into the cache dir ahead of a deploy",
        "Fetch the manifests and blobs of each IMAGE (every platform, or those "
        "given with --platform) from the backing store into --cache-dir, as pulls would. "
        "Safe beside a server running on the same cache dir, which then serves them "
        "without asking the backing store.",
        "warm",
    ),
    Subcommand(
        "verify",
        "re-hash every cached blob; exit 1 if any does not match its digest",
        "Re-hash every blob and manifest in --cache-dir. Report those that do "
        "not match their digest and exit 1 if there are any; with --repair, move them to "
        "quarantine/ so they are fetched again. Safe beside a running server.",
        "verify",
    ),
    Subcommand(
        "cached",
        "list the repositories this host's cache has served, with their tags",
        "List what --cache-dir holds per repository: the tags this host "
        "resolved (and the digest each named when last confirmed) and how many manifests "
        "and blobs it knows the repository links. Reads the cache dir only; safe beside a "
        "running server. For the backing store's repositories, ask GET /v2/_catalog.",
        "cached",
    ),
    Subcommand(
        "prune",
        "evict least recently used blobs now, down to a size",
        "Remove least recently used blobs (manifests last) from --cache-dir "
        "until it holds at most --to bytes (default: 85% of --cache-max-bytes). Safe "
        "beside a running server.",
        "prune",
    ),
    Subcommand(
        "loadtest",
        "pull an image with many clients at once, and report what it cost",
        "N independent clients (separate connection pools, like separate "
        "engines) each pull IMAGE from the registry at URL the way dockerd does, checking "
        "every digest. Reports pull latency, time to the first layer byte, throughput and, "
        "from registry-local's /metrics, the S3 requests the storm cost and its fan-out "
        "(bytes of blobs read from S3 over the bytes of the distinct blobs pulled). "
        "Exits 1 if any pull failed or was corrupt.",
        "loadtest",
    ),
    Subcommand(
        "check",
        "exit 0 if the server on --listen answers /healthz (or /readyz with --ready)",
        "Probe a running server, for container health checks and scripts. "
        "Reads --listen like `serve` does (flag, environment, --config).",
        "check",
    ),
    Subcommand(
        "gc",
        "remove from the bucket what came from an origin and nobody used for long",
        "Untag and unlink the manifests that were filled from an origin "
        "(--upstream) and that no host served for --unused-for, then remove the blobs "
        "only they referenced, in distribution's layout. Pushed content stays unless "
        "--include-pushed; anything written less than --grace ago stays. Safe beside "
        "serving hosts, pushes and other gc runs (one runs at a time). Hosts note the "
        "use of what they serve at most every --record-use-every: give --unused-for "
        "longer than that.",
        "gc",
    ),
    Subcommand(
        "status",
        "print a short live summary of the server on --listen, from its /metrics",
        "Read /metrics of a running server (--listen as for `serve`: flag, "
        "environment, --config) and print what an operator asks first: readiness, hit "
        "ratio, fills, S3 and origin traffic, fan-out, disk use against the limit and the "
        "host's part in the fleet. Counts are since the server started; exits 1 when "
        "the server is not ready or does not answer.",
        "status",
    ),
    Subcommand(
        "sample",
        "write a small sample image as an OCI image layout",
        "Write a tiny multi-platform image (linux/amd64, linux/arm64) as an "
        "OCI image layout in DEST, tagged latest, for `registry-local import`.",
        "sample",
    ),
)


if TYPE_CHECKING:
    # mypy checks each module against CommandModule; at run time none is imported here.
    from . import (
        cached,
        check,
        export_image,
        gc,
        import_image,
        loadtest,
        prune,
        sample,
        serve,
        status,
        verify,
        warm,
    )

    _MODULES: tuple[CommandModule, ...] = (
        serve,
        import_image,
        export_image,
        warm,
        verify,
        cached,
        prune,
        loadtest,
        check,
        gc,
        status,
        sample,
    )
