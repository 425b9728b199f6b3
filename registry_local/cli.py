"""The `registry-local` command: its parser, built from the table of commands
(commands/), and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from . import __version__, config
from .commands import SUBCOMMANDS
from .errors import ConfigError, RegistryError, RegistryLocalError

__all__ = ["main"]


def _parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with `only`, the arguments of that command
    alone are added (the others are named, not loaded)."""
    parser = argparse.ArgumentParser(
        prog="registry-local",
        description="A host-local container registry cache that fills from S3 once per blob.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in SUBCOMMANDS:
        subparser = subparsers.add_parser(
            command.name, help=command.help, description=command.description
        )
        if only is None or only == command.name:
            command.load().add_arguments(subparser)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The command `argv` names: its first word that is not an option (the
    program's own options, --help and --version, take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    args = _parser(_command_word(words)).parse_args(words)
    if args.command in config.COMMANDS:
        for warning in config.unknown_variables():
            print(f"registry-local: warning: {warning}", file=sys.stderr)
    command = next(command for command in SUBCOMMANDS if command.name == args.command)
    try:
        return command.load().run(args)
    except ConfigError as exc:
        print(f"registry-local: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"registry-local: {exc.message}", file=sys.stderr)
        return 1
    except RegistryLocalError as exc:
        print(f"registry-local: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of our output went away (`| head`): stop quietly, as CLIs do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        # The environment refused something (a directory, a file, the network):
        # one line naming it, not a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"registry-local: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A bug, not the operator's doing: one line, the traceback on request.
        if _debugging(args):
            traceback.print_exc()
        print(
            f"registry-local: internal error (a bug; please report it): "
            f"{type(exc).__name__}: {exc}"
            + ("" if _debugging(args) else "; --log-level debug shows the traceback"),
            file=sys.stderr,
        )
        return 1


def _debugging(args: argparse.Namespace) -> bool:
    level = getattr(args, "log_level", None) or os.environ.get("REGISTRY_LOCAL_LOG_LEVEL", "")
    return str(level).lower() == "debug"
