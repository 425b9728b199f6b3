"""Repository names and tags, checked against the distribution-spec grammar.

Every name and tag that reaches the storage layer has passed through here, so a
path component can never be `..`, empty, or carry a separator of its own.
"""

from __future__ import annotations

import re

from ..errors import NameInvalid, TagInvalid
from .digest import Digest

__all__ = [
    "NAME_MAX_LENGTH",
    "parse_image",
    "parse_image_reference",
    "parse_name",
    "parse_reference",
    "parse_tag",
]

# distribution/reference: path components joined by "/", each lower-case
# alphanumerics separated by ".", "_", "__" or runs of "-".
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NAME_MAX_LENGTH = 255


def parse_name(name: str) -> str:
    """A valid repository name, or NameInvalid."""
    if len(name) > NAME_MAX_LENGTH:
        raise NameInvalid(
            f"repository name must not be longer than {NAME_MAX_LENGTH} characters",
            detail={"name": name[:NAME_MAX_LENGTH]},
        )
    if not _NAME.fullmatch(name):
        raise NameInvalid(detail={"name": name})
    return name


def parse_tag(tag: str) -> str:
    """A valid tag, or TagInvalid."""
    if not _TAG.fullmatch(tag):
        raise TagInvalid("invalid tag", detail={"tag": tag[:200]})
    return tag


def parse_reference(reference: str) -> Digest | str:
    """A manifest reference: a digest if it has a colon, otherwise a tag."""
    if ":" in reference:
        return Digest.parse(reference)
    return parse_tag(reference)


def parse_image(text: str) -> tuple[str, str]:
    """`NAME[:TAG]` as on a command line; the tag defaults to latest."""
    name, sep, tag = text.rpartition(":")
    if not sep or "/" in tag:
        name, tag = text, "latest"
    return parse_name(name), parse_tag(tag)


def parse_image_reference(text: str) -> tuple[str, Digest | str]:
    """`NAME@DIGEST` or `NAME[:TAG]`."""
    name, sep, digest = text.partition("@")
    if sep:
        return parse_name(name), Digest.parse(digest)
    return parse_image(text)
