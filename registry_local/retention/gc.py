"""`registry-local gc`: one run at a time (a lease in the bucket), the inventory
read, the plan made (plan.py), then removals in the order that keeps every
reader whole: tags first (a pull by tag then goes to the origin), then the
revision links, then layer links, then blobs, each blob looked at again just
before it goes (one written or linked since the inventory stays)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..backing.distribution import DistributionStore
from ..config.settings import GcSettings
from ..errors import BackendError, RegistryLocalError
from ..fleet.leases import Lease, Leases
from ..oci.digest import Digest
from ..telemetry.metrics import FleetRecorder
from .inventory import Inventory, parse_digest, read_inventory, read_references
from .plan import Removal, plan

__all__ = ["GcBusy", "GcReport", "collect"]

_LEASE_TTL = 120.0  # seconds a gc's lease outlives its last renewal (every 40 s)
_DELETES_AT_ONCE = 16


class GcBusy(RegistryLocalError):
    """Another gc holds the lease."""


@dataclass(frozen=True)
class GcReport:
    """What a gc run removed (or would have, in a dry run), how long it took, and which
    blobs it kept because they were written or linked again meanwhile."""

    removal: Removal
    dry_run: bool
    seconds: float
    kept: frozenset[Digest]  # blobs of the plan written or linked again meanwhile: kept

    @property
    def removed_blobs(self) -> int:
        return len(self.removal.blobs) - len(self.kept)

    @property
    def removed_bytes(self) -> int:
        return sum(size for digest, size in self.removal.blobs if digest not in self.kept)


async def _store_now(store: DistributionStore, lease: str) -> float:
    """The store's clock, read from the lease just written (hosts' clocks and
    the store's may differ; every time gc compares is the store's)."""
    now = await store.backend.modified(lease)
    return time.time() if now is None else now


@contextlib.asynccontextmanager
async def _one_gc(store: DistributionStore, metrics: FleetRecorder) -> AsyncIterator[Lease]:
    leases = Leases(store.backend, store.layout, "gc", _LEASE_TTL, metrics)
    key = store.layout.gc_lease()
    async with leases.lease(key) as lease:
        await lease.take()
        if lease.other:
            written = await store.backend.modified(key)
            if written is not None and time.time() - written < _LEASE_TTL:
                raise GcBusy(
                    "another registry-local gc is running on this bucket (its lease is held)"
                )
            await lease.take_over()  # its run died: its lease went unrenewed
        if not lease.mine:
            raise GcBusy("another registry-local gc took the lease as this one started")
        yield lease


async def collect(
    store: DistributionStore,
    options: GcSettings,
    metrics: FleetRecorder,
    say: Callable[[str], None],
) -> GcReport:
    """Plan and (unless a dry run) remove. Raises GcBusy, BackendError."""
    began = time.monotonic()
    await store.backend.check()  # a missing bucket or a wrong endpoint: said before anything
    async with _one_gc(store, metrics):
        now = await _store_now(store, store.layout.gc_lease())
        say("reading the bucket")
        inventory = await read_inventory(store)
        removal = plan(inventory, now, options)
        say(
            f"{len(inventory.revisions)} manifests in {len(inventory.repositories)} "
            f"repositories, {len(inventory.blobs)} blobs: {len(removal.manifests)} manifests "
            f"unused for {options.unused_for:g} s"
        )
        for digest in removal.unreadable:
            say(f"cannot read manifest {digest}: no blob is removed in this run")
        kept: list[Digest] = []
        if not options.dry_run:
            kept = await _remove(store, inventory, removal, say)
    return GcReport(removal, options.dry_run, time.monotonic() - began, frozenset(kept))


async def _remove(
    store: DistributionStore, inventory: Inventory, removal: Removal, say: Callable[[str], None]
) -> list[Digest]:
    layout, backend = store.layout, store.backend
    for name, tag in removal.tags:
        await store.untag(name, tag)
        say(f"untagged {name}:{tag}")
    for name, tag, digest in removal.tag_links:
        await store.forget_tag_target(name, tag, digest)
    for n, (name, digest) in enumerate(removal.manifests, 1):
        await store.unlink_manifest(name, digest)
        for subject in _subjects_of(digest, inventory):
            await store.unlink_referrer(name, subject, digest)
        await backend.delete(layout.use_record(name, digest))
        await backend.delete(layout.origin_mark(name, digest))
        say(f"unlinked manifest {name}@{digest} ({n}/{len(removal.manifests)})")
    for name, digest in removal.layers:
        await store.unlink_blob(name, digest)
    kept = await _remove_blobs(store, inventory, removal, say)
    for key in removal.staged:
        await backend.delete(key)
    return kept


def _subjects_of(digest: Digest, inventory: Inventory) -> list[Digest]:
    manifest = inventory.manifests.get(digest)
    return [] if manifest is None or manifest.subject is None else [manifest.subject]


async def _remove_blobs(
    store: DistributionStore, inventory: Inventory, removal: Removal, say: Callable[[str], None]
) -> list[Digest]:
    """Delete the plan's blobs but those a host wrote or linked since the
    inventory (a fill from the origin while gc ran): links listed again, each
    blob's time read again. Returns those kept that way."""
    linked: set[Digest] = set()
    unlinked = set(removal.layers)
    for listed in await store.backend.walk_dated(store.layout.repositories()):
        entry = store.layout.repository_entry(listed.name)
        digest = None if entry is None else parse_digest(entry.digest)
        if entry is None or digest is None:
            continue
        if entry.kind == "layer" and (entry.name, digest) not in unlinked:
            linked.add(digest)
        elif entry.kind == "revision" and (entry.name, digest) not in inventory.revisions:
            needed = await _needed_by_new(store, digest)  # a manifest linked since
            if needed is None:
                say(f"cannot read manifest {digest}, linked meanwhile: no blob removed")
                return [digest for digest, _ in removal.blobs]
            linked |= needed
    first = {digest: written for digest, (written, _) in inventory.blobs.items()}
    turns = asyncio.Semaphore(_DELETES_AT_ONCE)
    kept: list[Digest] = []
    done = 0

    async def one(digest: Digest) -> None:
        nonlocal done
        async with turns:
            key = store.layout.blob_data(digest)
            if digest in linked or await store.backend.modified(key) != first.get(digest):
                kept.append(digest)
                return
            await store.remove_blob(digest)
            done += 1
            if done % 100 == 0 or done + len(kept) == len(removal.blobs):
                say(f"removed {done}/{len(removal.blobs)} blobs")

    await asyncio.gather(*(one(digest) for digest, _ in removal.blobs))
    return kept


async def _needed_by_new(store: DistributionStore, digest: Digest) -> set[Digest] | None:
    """What a manifest linked since the inventory needs; None if it cannot be read."""
    try:
        manifest = await read_references(store, digest)
    except BackendError:
        return None
    return None if manifest is None else {digest, *manifest.blobs, *manifest.children}
