"""Names, tags, digests, byte ranges and media types: the spec grammar, at the edges."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_local.errors import (
    DigestInvalid,
    ManifestInvalid,
    NameInvalid,
    RangeInvalid,
    TagInvalid,
    TooManyRanges,
)
from registry_local.oci.byterange import MAX_RANGES, parse_ranges
from registry_local.oci.digest import Digest
from registry_local.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    acceptable,
    accepts_manifest_lists,
    inspect_manifest,
    parse_accept,
)
from registry_local.oci.reference import parse_name, parse_reference, parse_tag

HEX = "a" * 64


@pytest.mark.parametrize("name", ["alpine", "library/alpine", "a/b/c", "a.b_c__d-e---f", "0"])
def test_valid_names(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Upper",
        "a//b",
        "/a",
        "a/",
        "..",
        "a/../b",
        "a/./b",
        "_a",
        "a_",
        "-a",
        "a b",
        "a%2fb",
        "a\x00b",
        "a" * 256,
        "a/" * 127 + "ab",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        parse_name(name)


@pytest.mark.parametrize("tag", ["latest", "v1.2.3", "_x", "A-b_c.d", "a" * 128])
def test_valid_tags(tag: str) -> None:
    assert parse_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", ".x", "-x", "a" * 129, "a/b", "a b", "..", "a:b"])
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(TagInvalid):
        parse_tag(tag)


def test_digest_round_trip_and_errors() -> None:
    digest = Digest.parse(f"sha256:{HEX}")
    assert str(digest) == f"sha256:{HEX}"
    assert Digest.of(b"") == Digest.parse(
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert Digest.parse("sha512:" + "0" * 128).algorithm == "sha512"
    for bad in [
        "sha256",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX.upper()}",
        f"md5:{HEX}",
        f"sha256:{HEX}0",
        "sha256:../../etc",
        ":" + HEX,
    ]:
        with pytest.raises(DigestInvalid):
            Digest.parse(bad)


def test_reference_is_digest_when_it_has_a_colon() -> None:
    assert isinstance(parse_reference(f"sha256:{HEX}"), Digest)
    assert parse_reference("latest") == "latest"
    with pytest.raises(DigestInvalid):
        parse_reference("latest:x")


@given(st.text(max_size=300))
def test_name_parser_never_lets_traversal_through(text: str) -> None:
    try:
        name = parse_name(text)
    except NameInvalid:
        return
    parts = name.split("/")
    assert all(p and p not in (".", "..") and not p.startswith(("_", "-", ".")) for p in parts)


@given(st.text(max_size=80))
def test_digest_parser_accepts_only_canonical_forms(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except DigestInvalid:
        return
    assert str(digest) == text


def _ranges(header: str | None, size: int = 100) -> list[tuple[int, int]]:
    """The ranges a header resolves to, [(start, end)], the whole blob included."""
    wanted = parse_ranges(header)
    if wanted is None:
        return [(0, size)]
    return [(r.start, r.end) for r in wanted.resolve(size)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, [(0, 100)]),
        ("bytes=0-9", [(0, 10)]),
        ("bytes=10-", [(10, 100)]),
        ("bytes=90-200", [(90, 100)]),
        ("bytes=-5", [(95, 100)]),
        ("bytes=-500", [(0, 100)]),
        ("bytes=0-99", [(0, 100)]),
        ("bytes=abc", [(0, 100)]),  # malformed: ignored
        ("bytes=0-1,9-3", [(0, 2)]),  # the invalid one is dropped
        ("items=0-3", [(0, 100)]),
        ("BYTES=0-1", [(0, 2)]),
        ("bytes=0-1,5-6", [(0, 2), (5, 7)]),
        ("bytes=50-59, 0-1 ,-10", [(0, 2), (50, 60), (90, 100)]),  # sent ascending
        ("bytes=0-4,5-9", [(0, 10)]),  # adjacent: merged
        ("bytes=0-9,5-14,12-20", [(0, 21)]),  # overlapping: merged
        ("bytes=0-1,,5-6", [(0, 2), (5, 7)]),  # the list syntax allows empty elements
        ("bytes=0-1,200-300", [(0, 2)]),  # the unsatisfiable one is dropped
    ],
)
def test_ranges(header: str | None, expected: list[tuple[int, int]]) -> None:
    assert _ranges(header) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=1000-2000", "bytes=-0", "bytes=100-,200-", "bytes=9-3"]
)
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeInvalid) as info:
        _ranges(header)
    assert info.value.status == 416
    assert info.value.headers == {"Content-Range": "bytes */100"}


def test_more_ranges_than_the_bound_are_refused_with_400() -> None:
    many = ",".join(f"{2 * i}-{2 * i}" for i in range(MAX_RANGES + 1))  # none adjacent
    with pytest.raises(TooManyRanges) as info:
        _ranges(f"bytes={many}", 10_000)
    assert info.value.status == 400 and info.value.code.name == "RANGE_INVALID"
    assert len(_ranges(f"bytes={','.join(many.split(',')[:MAX_RANGES])}", 10_000)) == MAX_RANGES
    merged = ",".join(f"{i}-{i}" for i in range(1000))  # adjacent: one range
    assert _ranges(f"bytes={merged}", 10_000) == [(0, 1000)]


def test_the_first_byte_wanted_is_known_before_the_size_unless_counted_from_the_end() -> None:
    first = parse_ranges("bytes=500-599,100-199")
    assert first is not None and first.first == 100
    suffix = parse_ranges("bytes=100-199,-51")
    assert suffix is not None and suffix.first is None


@given(st.integers(0, 10**6), st.text(max_size=40))
def test_range_parser_is_total(size: int, header: str | None) -> None:
    try:
        ranges = _ranges(header, size)
    except RangeInvalid:
        return
    assert all(0 <= start < end <= size for start, end in ranges) or ranges == [(0, 0)]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))  # disjoint, apart


def test_accept_from_several_lines_or_one() -> None:
    joined = parse_accept([f"{OCI_MANIFEST}, {OCI_INDEX};q=0.9"])
    lines = parse_accept([OCI_MANIFEST, f"{OCI_INDEX}; q=0.5"])
    assert joined == lines == {OCI_MANIFEST, OCI_INDEX}


def test_acceptability_follows_distribution() -> None:
    none: frozenset[str] = frozenset()
    assert acceptable(DOCKER_MANIFEST, none)  # schema2 always
    assert not acceptable(OCI_MANIFEST, none)
    assert not acceptable(OCI_INDEX, frozenset({DOCKER_MANIFEST}))
    assert acceptable(DOCKER_MANIFEST_LIST, frozenset({DOCKER_MANIFEST}))  # by digest
    assert not accepts_manifest_lists(frozenset({DOCKER_MANIFEST}))  # by tag: amd64 child
    assert accepts_manifest_lists(frozenset({DOCKER_MANIFEST_LIST}))
    assert acceptable(OCI_INDEX, frozenset({"*/*"}))


def test_inspect_manifest_kinds() -> None:
    layer = {"mediaType": "x", "size": 3, "digest": f"sha256:{HEX}"}
    oci = json.dumps({"schemaVersion": 2, "config": layer, "layers": [layer]}).encode()
    assert inspect_manifest(oci).media_type == OCI_MANIFEST  # mediaType may be omitted
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [{**layer, "platform": {"os": "linux", "architecture": "arm64"}}],
        }
    ).encode()
    info = inspect_manifest(index)
    assert info.is_index and info.platform_child("linux", "arm64") == Digest("sha256", HEX)
    assert info.platform_child() is None
    for bad in [
        b"not json",
        b"[]",
        b'{"mediaType": "text/plain"}',
        b"{}",
        json.dumps({"layers": [{"digest": "sha256:x", "size": 1}]}).encode(),
    ]:
        with pytest.raises(ManifestInvalid):
            inspect_manifest(bad)
