"""`registry-local sample`: a tiny multi-platform image as an OCI image layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..transfer.imagebuild import sample_image
from ..transfer.oci_layout import write_oci_layout
from .paths import layout_destination

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dest", type=Path, metavar="DEST")


def run(args: argparse.Namespace) -> int:
    dest = layout_destination(args.dest)
    write_oci_layout(dest, sample_image(), "latest")
    print(f"wrote the sample image to {dest} (tag latest)")
    return 0
