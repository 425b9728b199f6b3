"""The `registry-local` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from . import config
from .errors import ConfigError, RegistryError, RegistryLocalError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-local",
        description="A host-local container registry cache that fills from S3 once per blob.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the Registry v2 API from the cache, filling misses from the backing store",
        description="Serve the Registry v2 / OCI distribution API on --listen. "
        "Blobs and manifests come from --cache-dir; a miss is read from the backing "
        "store (an S3 bucket in distribution's layout, or the directory --fs-root) once, "
        "however many clients ask at the same time. S3 credentials come from the "
        "standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...).",
    )
    config.add_options(serve, ("store", "serve"))

    importer = commands.add_parser(
        "import",
        help="write an OCI image layout or a `docker save` archive into the backing store",
        description="Read an image from SOURCE, an OCI image layout (directory or tar) or a "
        "`docker save` archive (plain or compressed), verify every digest, and write it "
        "into the backing store in distribution's layout as NAME:TAG. A docker-archive is "
        "converted as the docker engine pushes it: gzipped layers, a schema2 manifest.",
    )
    config.add_options(importer, ("store",))
    importer.add_argument("source", type=Path, metavar="SOURCE")
    importer.add_argument("image", metavar="NAME[:TAG]")
    importer.add_argument(
        "--ref",
        help="which image of a source holding several (an OCI ref name or a docker RepoTag)",
    )
    importer.add_argument(
        "--scratch-dir",
        type=Path,
        help="where to stage files from an archive (default: the system's temp directory)",
    )

    exporter = commands.add_parser(
        "export",
        help="write an image from the backing store as an OCI image layout",
        description="Read NAME:TAG, every platform, from the backing store, verify every "
        "digest, and write it to DEST as an OCI image layout directory.",
    )
    config.add_options(exporter, ("store",))
    exporter.add_argument("image", metavar="NAME[:TAG]")
    exporter.add_argument("dest", type=Path, metavar="DEST")

    check = commands.add_parser(
        "check",
        help="exit 0 if the server on --listen answers /healthz (or /readyz with --ready)",
        description="Probe a running server, for container health checks and scripts. "
        "Reads --listen like `serve` does (flag, environment, --config).",
    )
    config.add_options(check, ("serve",))
    check.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")

    sample = commands.add_parser(
        "sample",
        help="write a small sample image as an OCI image layout",
        description="Write a tiny multi-platform image (linux/amd64, linux/arm64) as an "
        "OCI image layout in DEST, tagged latest, for `registry-local import`.",
    )
    sample.add_argument("dest", type=Path, metavar="DEST")
    return parser


def _serve(settings: config.Settings) -> None:
    from .logs import configure
    from .server.run import serve

    configure(settings.server.log_level, settings.server.log_format)
    asyncio.run(serve(settings))


async def _import(settings: config.Settings, args: argparse.Namespace) -> None:
    from .reference import parse_image
    from .storage.connect import open_store
    from .transfer.importer import import_image

    name, tag = parse_image(args.image)
    async with open_store(settings.store) as store:
        digest = await import_image(store, args.source, name, tag, args.ref, args.scratch_dir)
        print(f"{name}:{tag} is {digest} in {store.backend.description}")


async def _export(settings: config.Settings, args: argparse.Namespace) -> None:
    from .reference import parse_image
    from .storage.connect import open_store
    from .transfer.exporter import export_image

    name, tag = parse_image(args.image)
    async with open_store(settings.store) as store:
        digest = await export_image(store, name, tag, args.dest)
        print(f"wrote {name}:{tag} ({digest}) to {args.dest}")


def _check(settings: config.Settings, ready: bool) -> int:
    import urllib.error
    import urllib.request

    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.server.host, settings.server.host)
    host = f"[{host}]" if ":" in host else host
    url = f"http://{host}:{settings.server.port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"registry-local: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def _sample(dest: Path) -> None:
    from .imagebuild import sample_image
    from .ocilayout import write_oci_layout

    write_oci_layout(dest, sample_image(), "latest")
    print(f"wrote the sample image to {dest} (tag latest)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _serve(config.load(args))
        elif args.command == "import":
            asyncio.run(_import(config.load(args, groups=("store",)), args))
        elif args.command == "export":
            asyncio.run(_export(config.load(args, groups=("store",)), args))
        elif args.command == "check":
            return _check(config.load(args), args.ready)
        elif args.command == "sample":
            _sample(args.dest)
    except ConfigError as exc:
        print(f"registry-local: {exc}", file=sys.stderr)
        return 2
    except RegistryError as exc:
        print(f"registry-local: {exc.message}", file=sys.stderr)
        return 1
    except RegistryLocalError as exc:
        print(f"registry-local: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
