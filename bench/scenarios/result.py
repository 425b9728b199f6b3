"""What every scenario hands back: a frozen result that reports itself as text
and serialises to its section of the results file (bench/results/*.json, read by
bench/charts.py)."""

from __future__ import annotations

import os
from typing import Protocol, TypeAlias

from registry_local.transfer.imagebuild import Image, build_image

__all__ = ["MIB", "Json", "Result", "random_image", "ratio"]

MIB = 1 << 20

Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None


class Result(Protocol):
    """A scenario's result: what it measured, as the results file holds it and
    as the run prints it."""

    def to_json(self) -> Json:
        """The scenario's section of the results file."""
        ...

    def report(self) -> str:
        """The lines the run prints, ratios against the scenario's baseline."""
        ...


def ratio(value: float, baseline: float) -> str:
    """`value` as a multiple of `baseline`, "-" without one."""
    return f"{value / baseline:.2f}x" if baseline else "-"


def random_image(layers_mb: list[float]) -> Image:
    """An image of one file of random bytes per layer, of the given sizes."""
    return build_image(
        [{f"layer{n}.bin": os.urandom(int(mb * MIB))} for n, mb in enumerate(layers_mb)]
    )
