"""The gc plan on inventories built by hand: what stays with what is kept."""

from __future__ import annotations

from registry_local.config.settings import GcSettings
from registry_local.oci.digest import Digest
from registry_local.retention.inventory import Inventory, Manifest
from registry_local.retention.plan import plan

NOW = 1_000_000.0
OLD = NOW - 10_000  # older than the run's unused-for and grace
OPTIONS = GcSettings(unused_for=1000, grace=100)


def _d(name: str) -> Digest:
    return Digest.of(name.encode())


def _image(inv: Inventory, repo: str, top: str, blobs: list[str], when: float = OLD) -> None:
    inv.revisions[(repo, _d(top))] = when
    inv.marks[(repo, _d(top))] = when
    inv.manifests[_d(top)] = Manifest(frozenset(), frozenset(map(_d, blobs)), None)
    for blob in [top, *blobs]:
        inv.blobs[_d(blob)] = (when, 10)
    for blob in blobs:
        inv.layers[(repo, _d(blob))] = when


def test_an_index_in_use_keeps_its_children_and_a_kept_subject_its_referrers() -> None:
    inv = Inventory()
    _image(inv, "r", "child", ["layer"])
    _image(inv, "r", "signature", ["sig-blob"])
    inv.revisions[("r", _d("index"))] = OLD
    inv.marks[("r", _d("index"))] = OLD
    inv.uses[("r", _d("index"))] = NOW  # pulled just now, by tag
    inv.manifests[_d("index")] = Manifest(frozenset({_d("child")}), frozenset(), None)
    inv.blobs[_d("index")] = (OLD, 10)
    inv.manifests[_d("signature")] = Manifest(frozenset(), frozenset({_d("sig-blob")}), _d("index"))
    removal = plan(inv, NOW, OPTIONS)
    assert removal.manifests == [] and removal.blobs == [] and removal.layers == []


def test_what_goes_takes_only_its_own_blobs_and_a_fresh_one_stays() -> None:
    inv = Inventory()
    _image(inv, "a", "a-top", ["shared", "a-only"])
    _image(inv, "b", "b-top", ["shared", "b-only", "b-fresh"])
    inv.uses[("a", _d("a-top"))] = NOW
    inv.blobs[_d("b-fresh")] = (NOW - 10, 10)  # written within the grace
    inv.tags[("b", "v1")] = _d("b-top")
    inv.tags[("a", "v1")] = _d("a-top")
    removal = plan(inv, NOW, OPTIONS)
    assert removal.manifests == [("b", _d("b-top"))]
    assert removal.tags == [("b", "v1")]
    assert {d for _, d in removal.layers} == {_d("shared"), _d("b-only"), _d("b-fresh")}
    assert {d for d, _ in removal.blobs} == {_d("b-top"), _d("b-only")}  # not shared, not fresh


def test_pushed_content_and_unreadable_manifests_keep_every_blob() -> None:
    inv = Inventory()
    _image(inv, "p", "pushed", ["p-layer"])
    del inv.marks[("p", _d("pushed"))]  # no origin mark: pushed
    _image(inv, "o", "origin", ["o-layer"])
    inv.revisions[("o", _d("broken"))] = NOW
    inv.manifests[_d("broken")] = None  # kept, and what it references is not known
    removal = plan(inv, NOW, OPTIONS)
    assert removal.manifests == [("o", _d("origin"))]
    assert removal.unreadable == [_d("broken")] and removal.blobs == []
    everything = plan(inv, NOW, GcSettings(unused_for=1000, grace=100, include_pushed=True))
    assert ("p", _d("pushed")) in everything.manifests
