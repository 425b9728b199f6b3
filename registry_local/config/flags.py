"""The flags of one command: how it runs this time, given on its command line only.

An option (options.py) configures a host and is also an environment variable
and a config-file key; a flag here is not (`gc --dry-run` in a config file
would be a trap). Like an option's, a flag's default is read from the settings
field it sets (settings.py) when there is one, and `{default}` in its help shows
it. `FLAGS` is the one table of which flags each command takes.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from . import values
from .settings import GcSettings, LoadSettings, WarmSettings

__all__ = ["FLAGS", "Flag", "add_flags", "flags_markdown"]

T = TypeVar("T")


def _argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse` for argparse, which then says what a bad value should look like
    (`parse`'s own words) rather than "invalid <name> value"."""

    def parsed(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


def _off() -> bool:
    return False


def _unset() -> None:
    return None


@dataclass(frozen=True)
class Flag(Generic[T]):
    """One flag of a command. Without a default it is required; a switch
    (`--name` alone) is true when given; a repeated flag collects a list."""

    name: str
    help: str  # `{default}` stands for the default, as `show` writes it
    default: Callable[[], T] | None
    parse: Callable[[str], Any] = str  # argparse's `type`, of each value when repeated
    show: Callable[[T], str] = str
    metavar: str | None = None
    switch: bool = False
    repeated: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def value(self, args: argparse.Namespace) -> T:
        """The value parsed from the command line (or the default)."""
        return cast(T, getattr(args, self.dest))

    def help_text(self) -> str:
        """The help, with the default written in."""
        default = None if self.default is None else self.default()
        return self.help.format(default="" if default is None else self.show(default))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        default = None if self.default is None else self.default()
        help_text = self.help_text().replace("%", "%%")
        if self.switch:
            parser.add_argument(
                f"--{self.name}", action="store_true", default=default, help=help_text
            )
            return
        parser.add_argument(
            f"--{self.name}",
            action="append" if self.repeated else "store",
            type=self.parse,
            default=default,
            required=self.default is None,
            metavar=self.metavar,
            help=help_text,
        )


# import
REF: Flag[str | None] = Flag(
    "ref",
    "which image of a source holding several (an OCI ref name or a docker RepoTag)",
    _unset,
)
SCRATCH_DIR: Flag[Path | None] = Flag(
    "scratch-dir",
    "where to stage files from an archive (default: the system's temp directory)",
    _unset,
    Path,
)

# warm
WARM_PLATFORM: Flag[list[str]] = Flag(
    "platform",
    "only these platforms of multi-platform images (repeatable)",
    list,
    metavar="OS/ARCH[/VARIANT]",
    repeated=True,
)
WARM_CONCURRENCY: Flag[int] = Flag(
    "concurrency",
    "blobs fetched at once (default: {default})",
    lambda: WarmSettings().concurrency,
    int,
    metavar="N",
)

# verify, prune, check
REPAIR: Flag[bool] = Flag("repair", "quarantine what does not match", _off, switch=True)
PRUNE_TO: Flag[str | None] = Flag("to", "e.g. 20GiB, 500MB, 0", _unset, metavar="SIZE")
READY: Flag[bool] = Flag("ready", "ask /readyz instead of /healthz", _off, switch=True)

# loadtest
CLIENTS: Flag[int] = Flag(
    "clients", "pulls at once (default: {default})", lambda: LoadSettings().clients, int
)
WAVES: Flag[int] = Flag(
    "waves", "rounds of --clients pulls (default: {default})", lambda: LoadSettings().waves, int
)
RAMP: Flag[float] = Flag(
    "ramp",
    "spread each wave's starts over this long (default: {default})",
    lambda: LoadSettings().ramp,
    float,
    lambda seconds: f"{seconds:g}",
    "SECONDS",
)
LOAD_PLATFORM: Flag[str] = Flag(
    "platform",
    "which image of a multi-platform index (default: {default})",
    lambda: LoadSettings().platform,
    metavar="OS/ARCH",
)
PROCESSES: Flag[int] = Flag(
    "processes",
    "worker processes the clients are shared among, so that the load tester's "
    "own CPU does not cap the storm (default: one per CPU, at most one per client)",
    lambda: os.cpu_count() or 1,
    int,
    metavar="N",
)
LAYER_CONCURRENCY: Flag[int] = Flag(
    "layer-concurrency",
    "layers each pull fetches at once, as engines do "
    "(default: {default}, as dockerd and containerd)",
    lambda: LoadSettings().layer_concurrency,
    int,
    metavar="N",
)
LOAD_AUTH_FILE: Flag[Path | None] = Flag(
    "auth-file",
    "a file holding USER:PASSWORD, sent as Basic credentials with every request "
    "(a file, not a flag: flags show in ps)",
    _unset,
    Path,
    metavar="FILE",
)

# gc
UNUSED_FOR: Flag[float] = Flag(
    "unused-for",
    "remove what nobody used for this long, e.g. 30d, 12h, 90m",
    None,
    _argument(values.duration),
    metavar="DURATION",
)
GRACE: Flag[float] = Flag(
    "grace",
    "keep anything written less than this long ago (uploads and fills in "
    "flight; default {default})",
    lambda: GcSettings.grace,
    _argument(values.duration),
    values.show_duration,
    "DURATION",
)
DRY_RUN: Flag[bool] = Flag("dry-run", "print what would go, remove nothing", _off, switch=True)
INCLUDE_PUSHED: Flag[bool] = Flag(
    "include-pushed",
    "also remove pushed content (no origin can fill it again) unused as long",
    _off,
    switch=True,
)
METRICS_FILE: Flag[Path | None] = Flag(
    "metrics-file",
    "write the run's metrics here (Prometheus text format, for node_exporter's textfile collector)",
    _unset,
    Path,
    metavar="FILE",
)


def _as_json(what: str) -> Flag[bool]:
    return Flag("json", f"print the {what} as JSON", _off, switch=True)


CACHED_JSON, LOAD_JSON, STATUS_JSON = _as_json("list"), _as_json("report"), _as_json("summary")

# The flags each command takes, in the order its help lists them.
FLAGS: dict[str, tuple[Flag[Any], ...]] = {
    "import": (REF, SCRATCH_DIR),
    "warm": (WARM_PLATFORM, WARM_CONCURRENCY),
    "verify": (REPAIR,),
    "cached": (CACHED_JSON,),
    "prune": (PRUNE_TO,),
    "loadtest": (
        CLIENTS,
        WAVES,
        RAMP,
        LOAD_PLATFORM,
        PROCESSES,
        LAYER_CONCURRENCY,
        LOAD_AUTH_FILE,
        LOAD_JSON,
    ),
    "check": (READY,),
    "gc": (UNUSED_FOR, GRACE, DRY_RUN, INCLUDE_PUSHED, METRICS_FILE),
    "status": (STATUS_JSON,),
}


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the flags `command` takes (config.add_options adds them with its options)."""
    for flag in FLAGS.get(command, ()):
        flag.add_to(parser)


def flags_markdown() -> str:
    """The table of every command's flags, for docs/configuration.md."""
    rows = [
        "Flags of one command run are given on its command line only: they are neither "
        "environment variables nor config-file keys.",
        "",
        "| command | flag | what |",
        "| --- | --- | --- |",
    ]
    for command, flags in FLAGS.items():
        for flag in flags:
            usage = f"`--{flag.name}`"
            if not flag.switch:
                usage += f" {flag.metavar or flag.dest.upper()}"
            if flag.default is None:
                usage += " (required)"
            rows.append(f"| {command} | {usage} | {flag.help_text()} |")
    return "\n".join(rows) + "\n"
