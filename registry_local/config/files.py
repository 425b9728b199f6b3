"""Files that options name, read at start or on a reload: one clear ConfigError
saying which option and why, never what the file holds."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

__all__ = ["read_text"]


def read_text(path: Path, option: str) -> str:
    """The file's text; `option` (such as `--auth-htpasswd`) names it in errors."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {option} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{option} {path} is not UTF-8 text") from None
