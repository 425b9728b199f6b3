"""Content digests (`algorithm:hex`) as the OCI image spec defines them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DigestInvalid

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["ALGORITHMS", "Digest"]

# The algorithms distribution accepts, with the length of their hex encoding.
ALGORITHMS = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated digest; `str()` gives the canonical `algorithm:hex` form."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse `algorithm:hex`; raise DigestInvalid for anything else."""
        algorithm, sep, encoded = text.partition(":")
        if not sep:
            raise DigestInvalid("invalid digest format", detail={"digest": text[:200]})
        length = ALGORITHMS.get(algorithm)
        if length is None:
            raise DigestInvalid("unsupported digest algorithm", detail={"digest": text[:200]})
        if len(encoded) != length or not _HEX.fullmatch(encoded):
            raise DigestInvalid("invalid digest format", detail={"digest": text[:200]})
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of some bytes."""
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> _Hash:
        """A fresh hash object of this digest's algorithm."""
        return hashlib.new(self.algorithm)

    def matches(self, hasher: _Hash) -> bool:
        return hasher.hexdigest() == self.hex

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"
