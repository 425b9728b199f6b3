"""What `gc` removes, decided from an inventory and nothing else (no I/O).

A manifest linked into a repository may go when it came from an origin (its
mark is there; pushed content only with `include_pushed`) and nobody used it
for `unused_for`: its newest use record, mark or revision link is older. What
a manifest that stays needs stays with it: the children of an index, the
referrers of a subject. Then tags pointing at what goes are removed, its
history links, the repository's layer links only what goes referenced, and
the blobs nothing that stays references nor any link names. Anything written
less than `grace` ago stays (an upload or a fill in flight)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.settings import GcSettings
from ..oci.digest import Digest
from .inventory import Inventory, Key

__all__ = ["Removal", "plan"]


@dataclass
class Removal:
    """What a gc plan removes, by kind, and the kept manifests it could not read."""

    manifests: list[Key] = field(default_factory=list)  # revision links, records, marks
    tags: list[tuple[str, str]] = field(default_factory=list)  # whole tags
    tag_links: list[tuple[str, str, Digest]] = field(default_factory=list)  # history links
    layers: list[Key] = field(default_factory=list)  # layer links
    blobs: list[tuple[Digest, int]] = field(default_factory=list)  # data, and its size
    staged: list[str] = field(default_factory=list)  # staged parts left by a dead host
    unreadable: list[Digest] = field(default_factory=list)  # kept manifests we cannot read

    @property
    def objects(self) -> int:
        parts = (self.manifests, self.tags, self.tag_links, self.layers, self.blobs, self.staged)
        return sum(len(part) for part in parts)

    @property
    def blob_bytes(self) -> int:
        return sum(size for _, size in self.blobs)


def _last_use(inventory: Inventory, key: Key) -> float:
    return max(
        inventory.revisions[key], inventory.uses.get(key, 0.0), inventory.marks.get(key, 0.0)
    )


def _unused(inventory: Inventory, now: float, options: GcSettings) -> tuple[set[Key], set[Key]]:
    """(what goes, what stays) among the revision links."""
    cutoff = now - options.unused_for
    going = {
        key
        for key in inventory.revisions
        if (key in inventory.marks or options.include_pushed) and _last_use(inventory, key) < cutoff
    }
    staying = set(inventory.revisions) - going
    moved = True
    while moved:  # what stays keeps what it needs, in its repository
        moved = False
        for name, digest in list(staying):
            needed = inventory.manifests.get(digest)
            for child in needed.children if needed else ():
                if (name, child) in going:
                    going.discard((name, child))
                    staying.add((name, child))
                    moved = True
        for name, digest in list(going):
            referrer = inventory.manifests.get(digest)
            if referrer and referrer.subject and (name, referrer.subject) in staying:
                going.discard((name, digest))
                staying.add((name, digest))
                moved = True
    return going, staying


def _references(inventory: Inventory, keys: set[Key]) -> dict[str, set[Digest]]:
    """Per repository, every digest the manifests `keys` are or reference."""
    found: dict[str, set[Digest]] = {}
    for name, digest in keys:
        into = found.setdefault(name, set())
        into.add(digest)
        manifest = inventory.manifests.get(digest)
        if manifest is not None:
            into |= manifest.blobs | manifest.children
    return found


def plan(inventory: Inventory, now: float, options: GcSettings) -> Removal:
    """`now` is the store's clock."""
    settled = now - options.grace
    going, staying = _unused(inventory, now, options)
    removal = Removal(manifests=sorted(going, key=str))
    removal.unreadable = sorted(
        {d for _, d in staying if inventory.manifests.get(d) is None}, key=str
    )
    for (name, tag), target in sorted(inventory.tags.items()):
        if target is not None and (name, target) in going:
            removal.tags.append((name, tag))
            continue
        for old in sorted(inventory.tag_history.get((name, tag), ()), key=str):
            if (name, old) in going:
                removal.tag_links.append((name, tag, old))
    kept = _references(inventory, staying)
    gone = _references(inventory, going)
    for name, digests in sorted(gone.items()):
        for digest in sorted(digests - kept.get(name, set()), key=str):
            linked = inventory.layers.get((name, digest))
            if linked is not None and linked < settled:
                removal.layers.append((name, digest))
    unlinked = set(removal.layers)
    still_linked = {digest for name, digest in inventory.layers if (name, digest) not in unlinked}
    still_needed: set[Digest] = set().union(*kept.values())
    if options.include_pushed:
        candidates = set(inventory.blobs)  # every blob: as the CNCF registry's collector
    else:
        candidates = set().union(*gone.values())
    if not removal.unreadable:  # else what a kept manifest needs is not known: keep all
        for digest in sorted(candidates - still_needed - still_linked, key=str):
            written = inventory.blobs.get(digest)
            if written is not None and written[0] < settled:
                removal.blobs.append((digest, written[1]))
    removal.staged = sorted(key for key, when in inventory.staged.items() if when < settled)
    return removal
