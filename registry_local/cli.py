"""The `registry-local` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, config
from .config.settings import LoadSettings, WarmSettings
from .errors import ConfigError, RegistryError, RegistryLocalError

if TYPE_CHECKING:
    from .telemetry.gc_metrics import GcRunMetrics

__all__ = ["main"]

_LOAD, _WARM = LoadSettings(), WarmSettings()  # the defaults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-local",
        description="A host-local container registry cache that fills from S3 once per blob.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    config.add_options(serve, "serve")

    importer = commands.add_parser(
        "import",
        help="write an OCI image layout or a `docker save` archive into the backing store",
        description="Read an image from SOURCE, an OCI image layout (directory or tar) or a "
        "`docker save` archive (plain or compressed), verify every digest, and write it "
        "into the backing store in distribution's layout as NAME:TAG. A docker-archive is "
        "converted as the docker engine pushes it: gzipped layers, a schema2 manifest.",
    )
    config.add_options(importer, "import")
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
    config.add_options(exporter, "export")
    exporter.add_argument("image", metavar="NAME[:TAG]")
    exporter.add_argument("dest", type=Path, metavar="DEST")

    warm = commands.add_parser(
        "warm",
        help="fetch images into the cache dir ahead of a deploy",
        description="Fetch the manifests and blobs of each IMAGE (every platform, or those "
        "given with --platform) from the backing store into --cache-dir, as pulls would. "
        "Safe beside a server running on the same cache dir, which then serves them "
        "without asking the backing store.",
    )
    config.add_options(warm, "warm")
    warm.add_argument("images", nargs="+", metavar="IMAGE", help="NAME[:TAG] or NAME@DIGEST")
    warm.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH[/VARIANT]",
        help="only these platforms of multi-platform images (repeatable)",
    )
    warm.add_argument(
        "--concurrency",
        type=int,
        default=_WARM.concurrency,
        metavar="N",
        help=f"blobs fetched at once (default: {_WARM.concurrency})",
    )

    verify = commands.add_parser(
        "verify",
        help="re-hash every cached blob; exit 1 if any does not match its digest",
        description="Re-hash every blob and manifest in --cache-dir. Report those that do "
        "not match their digest and exit 1 if there are any; with --repair, move them to "
        "quarantine/ so they are fetched again. Safe beside a running server.",
    )
    config.add_options(verify, "verify")
    verify.add_argument("--repair", action="store_true", help="quarantine what does not match")

    cached = commands.add_parser(
        "cached",
        help="list the repositories this host's cache has served, with their tags",
        description="List what --cache-dir holds per repository: the tags this host "
        "resolved (and the digest each named when last confirmed) and how many manifests "
        "and blobs it knows the repository links. Reads the cache dir only; safe beside a "
        "running server. For the backing store's repositories, ask GET /v2/_catalog.",
    )
    config.add_options(cached, "cached")
    cached.add_argument("--json", action="store_true", help="print the list as JSON")

    prune = commands.add_parser(
        "prune",
        help="evict least recently used blobs now, down to a size",
        description="Remove least recently used blobs (manifests last) from --cache-dir "
        "until it holds at most --to bytes (default: 85% of --cache-max-bytes). Safe "
        "beside a running server.",
    )
    config.add_options(prune, "prune")
    prune.add_argument("--to", metavar="SIZE", help="e.g. 20GiB, 500MB, 0")

    loadtest = commands.add_parser(
        "loadtest",
        help="pull an image with many clients at once, and report what it cost",
        description="N independent clients (separate connection pools, like separate "
        "engines) each pull IMAGE from the registry at URL the way dockerd does, checking "
        "every digest. Reports pull latency, time to the first layer byte, throughput and, "
        "from registry-local's /metrics, the S3 requests the storm cost and its fan-out "
        "(bytes of blobs read from S3 over the bytes of the distinct blobs pulled). "
        "Exits 1 if any pull failed or was corrupt.",
    )
    loadtest.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:5000")
    loadtest.add_argument("image", metavar="IMAGE[:TAG]", help="NAME[:TAG] or NAME@DIGEST")
    loadtest.add_argument(
        "--clients",
        type=int,
        default=_LOAD.clients,
        help=f"pulls at once (default: {_LOAD.clients})",
    )
    loadtest.add_argument(
        "--waves",
        type=int,
        default=_LOAD.waves,
        help=f"rounds of --clients pulls (default: {_LOAD.waves})",
    )
    loadtest.add_argument(
        "--ramp",
        type=float,
        default=_LOAD.ramp,
        metavar="SECONDS",
        help=f"spread each wave's starts over this long (default: {_LOAD.ramp:g})",
    )
    loadtest.add_argument(
        "--platform",
        default=_LOAD.platform,
        metavar="OS/ARCH",
        help=f"which image of a multi-platform index (default: {_LOAD.platform})",
    )
    loadtest.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes the clients are shared among, so that the load tester's "
        "own CPU does not cap the storm (default: one per CPU, at most one per client)",
    )
    loadtest.add_argument(
        "--layer-concurrency",
        type=int,
        default=_LOAD.layer_concurrency,
        metavar="N",
        help="layers each pull fetches at once, as engines do "
        f"(default: {_LOAD.layer_concurrency}, as dockerd and containerd)",
    )
    loadtest.add_argument("--json", action="store_true", help="print the report as JSON")

    check = commands.add_parser(
        "check",
        help="exit 0 if the server on --listen answers /healthz (or /readyz with --ready)",
        description="Probe a running server, for container health checks and scripts. "
        "Reads --listen like `serve` does (flag, environment, --config).",
    )
    config.add_options(check, "check")
    check.add_argument("--ready", action="store_true", help="ask /readyz instead of /healthz")

    gc = commands.add_parser(
        "gc",
        help="remove from the bucket what came from an origin and nobody used for long",
        description="Untag and unlink the manifests that were filled from an origin "
        "(--upstream) and that no host served for --unused-for, then remove the blobs "
        "only they referenced, in distribution's layout. Pushed content stays unless "
        "--include-pushed; anything written less than --grace ago stays. Safe beside "
        "serving hosts, pushes and other gc runs (one runs at a time). Hosts note the "
        "use of what they serve at most every --record-use-every: give --unused-for "
        "longer than that.",
    )
    config.add_options(gc, "gc")
    gc.add_argument(
        "--unused-for",
        required=True,
        type=_duration,
        metavar="DURATION",
        help="remove what nobody used for this long, e.g. 30d, 12h, 90m",
    )
    gc.add_argument(
        "--grace",
        type=_duration,
        default=3600.0,
        metavar="DURATION",
        help="keep anything written less than this long ago (uploads and fills in "
        "flight; default 1h)",
    )
    gc.add_argument("--dry-run", action="store_true", help="print what would go, remove nothing")
    gc.add_argument(
        "--include-pushed",
        action="store_true",
        help="also remove pushed content (no origin can fill it again) unused as long",
    )
    gc.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help="write the run's metrics here (Prometheus text format, for node_exporter's "
        "textfile collector)",
    )

    status = commands.add_parser(
        "status",
        help="print a short live summary of the server on --listen, from its /metrics",
        description="Read /metrics of a running server (--listen as for `serve`: flag, "
        "environment, --config) and print what an operator asks first: readiness, hit "
        "ratio, fills, S3 and origin traffic, fan-out, disk use against the limit and the "
        "host's part in the fleet. Counts are since the server started; exits 1 when "
        "the server is not ready or does not answer.",
    )
    config.add_options(status, "status")
    status.add_argument("--json", action="store_true", help="print the summary as JSON")

    sample = commands.add_parser(
        "sample",
        help="write a small sample image as an OCI image layout",
        description="Write a tiny multi-platform image (linux/amd64, linux/arm64) as an "
        "OCI image layout in DEST, tagged latest, for `registry-local import`.",
    )
    sample.add_argument("dest", type=Path, metavar="DEST")
    return parser


def _serve(settings: config.Settings) -> None:
    from .server.run import serve
    from .telemetry.logs import configure

    configure(settings.server.log_level, settings.server.log_format)
    asyncio.run(serve(settings))


async def _import(settings: config.Settings, args: argparse.Namespace) -> None:
    from .backing.opening import open_store
    from .oci.reference import parse_image
    from .transfer.importer import import_image

    name, tag = parse_image(args.image)
    if args.scratch_dir is not None and not args.scratch_dir.is_dir():
        raise ConfigError(f"--scratch-dir {args.scratch_dir} is not a directory")
    async with open_store(settings.store) as store:
        digest = await import_image(store, args.source, name, tag, args.ref, args.scratch_dir)
        print(f"{name}:{tag} is {digest} in {store.backend.description}")


async def _export(settings: config.Settings, args: argparse.Namespace) -> None:
    from .backing.opening import open_store
    from .oci.reference import parse_image
    from .transfer.exporter import export_image

    name, tag = parse_image(args.image)
    _check_destination(args.dest)
    async with open_store(settings.store) as store:
        digest = await export_image(store, name, tag, args.dest)
        print(f"wrote {name}:{tag} ({digest}) to {args.dest}")


async def _warm(settings: config.Settings, args: argparse.Namespace) -> int:
    from .cache.warm import Warmer, parse_platform
    from .cache.wiring import open_cache
    from .oci.reference import parse_image_reference
    from .progress import Progress, human_bytes
    from .telemetry.metrics import Metrics

    try:
        platforms = [parse_platform(p) for p in args.platform]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    targets = [parse_image_reference(image) for image in args.images]
    failed = 0
    async with open_cache(settings.cache, settings.store, Metrics()) as cache:
        warmer = Warmer(cache.manifests, cache.blobs, max(1, args.concurrency))
        for name, reference in targets:
            progress = Progress(f"warming {name}", 0, 0)

            def blob_done(size: int, progress: Progress = progress) -> None:
                progress.advance(size)
                progress.item_done(human_bytes(size))

            try:
                result = await warmer.warm(name, reference, platforms, blob_done)
            except (RegistryError, RegistryLocalError) as exc:
                failed += 1
                message = exc.message if isinstance(exc, RegistryError) else str(exc)
                print(f"{name}: {message}", file=sys.stderr)
                continue
            progress.finish()
            print(
                f"{result.image} ({result.digest}): {_count(result.manifests, 'manifest')}, "
                f"{_count(result.blobs, 'blob')}, {human_bytes(result.bytes)}, "
                f"{result.fetched_blobs} fetched"
            )
    return 1 if failed else 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _existing_cache_dir(settings: config.Settings) -> None:
    """verify and prune work on a cache dir that is there: a typo is an error."""
    directory = settings.cache.directory
    if not directory.is_dir():
        raise ConfigError(f"--cache-dir {directory} is not a directory (no cache there)")


def _cached(settings: config.Settings, as_json: bool) -> int:
    import dataclasses
    import json

    from .disk.learned import cached_repositories
    from .layout import CacheLayout

    _existing_cache_dir(settings)
    repositories = cached_repositories(CacheLayout(settings.cache.directory))
    if as_json:
        print(json.dumps([dataclasses.asdict(r) for r in repositories], indent=2))
        return 0
    for repository in repositories:
        counts = f"{_count(repository.manifests, 'manifest')}, {_count(repository.blobs, 'blob')}"
        print(f"{repository.name}  ({counts})")
        for tag, digest in repository.tags.items():
            print(f"  {tag}  {digest}")
    if not repositories:
        print(f"nothing cached in {settings.cache.directory}")
    return 0


def _verify(settings: config.Settings, repair: bool) -> int:
    from .disk.maintenance import verify
    from .progress import human_bytes

    _existing_cache_dir(settings)

    def on_file(digest: object, good: bool) -> None:
        if not good:
            print(f"MISMATCH {digest}", flush=True)

    report = verify(settings.cache.directory, repair, on_file)
    print(
        f"checked {report.checked} files, {human_bytes(report.bytes)}: "
        f"{len(report.bad)} did not match their digest"
    )
    for path in report.quarantined:
        print(f"quarantined {path}")
    return 1 if report.bad else 0


def _prune(settings: config.Settings, to: str | None) -> int:
    from .disk.eviction import LOW_WATERMARK, CacheLimit
    from .disk.maintenance import prune
    from .progress import human_bytes

    _existing_cache_dir(settings)
    if to is not None:
        try:
            size, share = config.parse_size(to)
        except ValueError as exc:
            raise ConfigError(f"--to {to!r}: {exc}") from None
        target = CacheLimit(size, share).bytes_for(settings.cache.directory) or 0
    else:
        limit = CacheLimit(settings.cache.max_bytes, settings.cache.max_share)
        configured = limit.bytes_for(settings.cache.directory)
        if configured is None:
            raise ConfigError("give --to SIZE, or set --cache-max-bytes")
        target = int(configured * LOW_WATERMARK)
    report = prune(settings.cache.directory, target)
    print(
        f"removed {report.removed} files: {human_bytes(report.before)} -> "
        f"{human_bytes(report.after)} (target {human_bytes(target)})"
    )
    return 0


def _ask_local(settings: config.Settings, path: str) -> tuple[str, int, bytes] | None:
    """GET `path` of the server these settings describe, over TLS when it
    serves TLS: (url, status, body), or None (said on stderr) when nothing
    answers or another program does."""
    import ssl
    import urllib.error
    import urllib.request

    server = settings.server
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(server.host, server.host)
    host = f"[{host}]" if ":" in host else host
    tls = server.tls_cert is not None
    # Our own process on this host: the point is whether it answers, so the
    # certificate (often issued for another name) is not checked here.
    context = ssl._create_unverified_context() if tls else None
    scheme = "https" if tls else "http"
    url = f"{scheme}://{host}:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"registry-local: {url}: {reason}", file=sys.stderr)
        return None
    if headers.get("Docker-Distribution-API-Version") != "registry/2.0":
        print(f"registry-local: {url}: something else answers there", file=sys.stderr)
        return None
    return url, status, body


def _check(settings: config.Settings, ready: bool) -> int:
    """Probe the server these settings describe; only registry-local's own
    answer counts (another program's 200 does not)."""
    import json

    answer = _ask_local(settings, "/readyz" if ready else "/healthz")
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


def _status(settings: config.Settings, as_json: bool) -> int:
    import dataclasses
    import json

    from .telemetry.summary import summarize

    readiness = _ask_local(settings, "/readyz")  # a fresh probe: the gauge may be older
    answer = None if readiness is None else _ask_local(settings, "/metrics")
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
    if as_json:
        print(json.dumps({**dataclasses.asdict(summary), "fan_out": summary.fan_out}, indent=2))
        return 0
    print(f"registry-local at {url.removesuffix('/metrics')}")
    for line in summary.lines():
        print(f"  {line}")
    return 0 if summary.ready else 1


def _duration(text: str) -> float:
    from .config.values import duration

    try:
        return duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _gc(settings: config.Settings, args: argparse.Namespace) -> int:
    from .backing.opening import open_store
    from .progress import human_bytes
    from .retention.gc import GcBusy, collect
    from .retention.plan import GcOptions
    from .telemetry.gc_metrics import GcRunMetrics
    from .telemetry.metrics import Metrics

    if settings.store.s3 is None and not settings.store.fs_root.is_dir():
        raise ConfigError(f"--fs-root {settings.store.fs_root} does not exist: nothing to collect")
    if args.metrics_file is not None and not args.metrics_file.parent.is_dir():
        raise ConfigError(f"--metrics-file {args.metrics_file}: its directory does not exist")
    options = GcOptions(args.unused_for, args.grace, args.dry_run, args.include_pushed)
    run = GcRunMetrics()

    def say(line: str) -> None:
        print(f"gc: {line}", file=sys.stderr, flush=True)

    try:
        async with open_store(settings.store) as store:
            report = await collect(store, options, Metrics(), say)
    except (GcBusy, RegistryError, RegistryLocalError):
        run.failed()
        _write_gc_metrics(run, args.metrics_file)
        raise
    removal = report.removal
    if report.dry_run:
        for name, digest in removal.manifests:
            print(f"would unlink manifest {name}@{digest}")
        for name, tag in removal.tags:
            print(f"would untag {name}:{tag}")
        for digest, size in removal.blobs:
            print(f"would remove blob {digest} ({human_bytes(size)})")
    counts = {
        "manifest": len(removal.manifests),
        "tag": len(removal.tags),
        "tag_history": len(removal.tag_links),
        "layer_link": len(removal.layers),
        "blob": report.removed_blobs,
        "staged_part": len(removal.staged),
    }
    run.ran(counts, report.removed_bytes, report.seconds, report.dry_run)
    _write_gc_metrics(run, args.metrics_file)
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {_count(counts['manifest'], 'manifest')}, {_count(counts['tag'], 'tag')}, "
        f"{_count(counts['layer_link'], 'layer link')}, {_count(counts['blob'], 'blob')} "
        f"({human_bytes(report.removed_bytes)}), {_count(counts['staged_part'], 'staged part')} "
        f"in {report.seconds:.1f} s"
        + (f"; kept {len(report.kept)} blobs written or linked meanwhile" if report.kept else "")
    )
    return 0


def _write_gc_metrics(run: GcRunMetrics, path: Path | None) -> None:
    if path is None:
        return
    try:
        run.write(path)
    except OSError as exc:
        raise ConfigError(f"--metrics-file {path}: {exc.strerror or exc}") from None


def _loadtest(args: argparse.Namespace) -> int:
    from .loadtest.run import print_report, run_load

    counts = (args.clients, args.waves, args.processes, args.layer_concurrency)
    if min(counts) < 1 or args.ramp < 0:
        raise ConfigError(
            "--clients, --waves, --processes and --layer-concurrency must be at least 1, "
            "--ramp at least 0"
        )
    report = asyncio.run(
        run_load(
            args.url,
            args.image,
            args.clients,
            args.waves,
            args.ramp,
            args.platform,
            args.processes,
            args.layer_concurrency,
        )
    )
    print_report(report, args.json)
    return 1 if report.pulls_failed else 0


def _check_destination(dest: Path) -> None:
    """An OCI layout goes into a directory: refuse a path that is something else."""
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a directory: give a directory for the layout")


def _sample(dest: Path) -> None:
    from .transfer.imagebuild import sample_image
    from .transfer.oci_layout import write_oci_layout

    _check_destination(dest)
    write_oci_layout(dest, sample_image(), "latest")
    print(f"wrote the sample image to {dest} (tag latest)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in config.COMMANDS:
        for warning in config.unknown_variables():
            print(f"registry-local: warning: {warning}", file=sys.stderr)
    try:
        if args.command == "serve":
            _serve(config.load(args))
        elif args.command == "import":
            asyncio.run(_import(config.load(args), args))
        elif args.command == "export":
            asyncio.run(_export(config.load(args), args))
        elif args.command == "warm":
            return asyncio.run(_warm(config.load(args), args))
        elif args.command == "cached":
            return _cached(config.load(args), args.json)
        elif args.command == "verify":
            return _verify(config.load(args), args.repair)
        elif args.command == "prune":
            return _prune(config.load(args), args.to)
        elif args.command == "loadtest":
            return _loadtest(args)
        elif args.command == "check":
            return _check(config.load(args), args.ready)
        elif args.command == "gc":
            return asyncio.run(_gc(config.load(args), args))
        elif args.command == "status":
            return _status(config.load(args), args.json)
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
    return 0


def _debugging(args: argparse.Namespace) -> bool:
    level = getattr(args, "log_level", None) or os.environ.get("REGISTRY_LOCAL_LOG_LEVEL", "")
    return str(level).lower() == "debug"
