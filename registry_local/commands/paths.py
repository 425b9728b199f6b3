"""Checks of the directories an operator names, made before a command starts work."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from ..errors import ConfigError

__all__ = ["existing_cache_dir", "layout_destination"]


def existing_cache_dir(settings: Settings) -> Path:
    """The cache dir, which must be there: maintenance of a typo is an error."""
    directory = settings.cache.directory
    if not directory.is_dir():
        raise ConfigError(f"--cache-dir {directory} is not a directory (no cache there)")
    return directory


def layout_destination(dest: Path) -> Path:
    """An OCI layout goes into a directory: refuse a path that is something else."""
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} exists and is not a directory: give a directory for the layout")
    return dest
