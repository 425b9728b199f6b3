"""Option values as text: parsing what users write, and showing defaults back.

Each parser raises ValueError with a short description of what it expects;
load.py turns that into a ConfigError naming the option.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = [
    "MIN_PART_SIZE",
    "boolean",
    "duration",
    "endpoint_url",
    "is_loopback",
    "listen",
    "log_format",
    "log_level",
    "optional",
    "origin_url",
    "parse_size",
    "part_size",
    "path",
    "positive_int",
    "positive_seconds",
    "registries",
    "seconds",
    "show_duration",
    "show_listen",
    "show_registries",
    "show_seconds",
    "show_size",
    "text",
]

T = TypeVar("T")


def text(value: str) -> str:
    return value


def optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """`parse`, with an empty value meaning unset."""

    def parse_optional(value: str) -> T | None:
        return parse(value) if value != "" else None

    return parse_optional


def path(value: str) -> Path:
    return Path(value)


def listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not match:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:5000 or [::1]:5000")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError("port out of range")
    return host, port


def show_listen(value: tuple[str, int] | None) -> str | None:
    if value is None:
        return None
    host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("a number of seconds, e.g. 30 or 0.5") from None
    if number < 0 or number != number:
        raise ValueError("must be a number of seconds >= 0")
    return number


def positive_seconds(value: str) -> float:
    number = seconds(value)
    if number == 0:
        raise ValueError("must be a number of seconds > 0")
    return number


def show_seconds(value: float) -> str:
    return f"{value:g}"


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> float:
    """`90` or `90s`, `30m`, `1h`, `7d`, `1h30m`: seconds."""
    compact = value.strip().lower().replace(" ", "")
    try:
        return seconds(compact)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError("a duration like 90s, 30m, 1h, 7d or 1h30m")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def show_duration(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("a whole number, at least 1") from None
    if number < 1:
        raise ValueError("must be at least 1")
    return number


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def parse_size(value: str) -> tuple[int, float]:
    """`50GiB`, `500MB`, `1024` (bytes) or `80%` (of the filesystem): (bytes, share)."""
    compact = value.strip().lower().replace(" ", "")
    if compact.endswith("%"):
        try:
            share = float(compact[:-1])
        except ValueError:
            raise ValueError("a percentage like 80%") from None
        if not 0 < share <= 100:
            raise ValueError("a percentage between 0 and 100")
        return 0, share / 100
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", compact)
    if match is None or match.group(2) not in _UNITS:
        raise ValueError("a size like 50GiB, 500MB, 1073741824 or 80%")
    return int(float(match.group(1)) * _UNITS[match.group(2)]), 0.0


def size_limit(value: str) -> tuple[int, float]:
    """A cache limit (parse_size); empty: none, (0, 0.0)."""
    return parse_size(value) if value.strip() else (0, 0.0)


def show_limit(value: tuple[int, float]) -> str | None:
    """A cache limit as it was given; None for none."""
    size, share = value
    if share:
        return f"{share * 100:g}%"
    return show_size(size) if size else None


def show_size(value: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit.lower()]
        if value and value % scale == 0:
            return f"{value // scale}{unit}"
    return str(value)


MIN_PART_SIZE = 64 * 1024


def part_size(value: str) -> int:
    size, share = parse_size(value)
    if share or 0 < size < MIN_PART_SIZE:
        raise ValueError("0 (off) or a size of at least 64KiB, like 8MiB")
    return size


S3_MIN_PART = 5 << 20  # S3's smallest part of a multipart upload but the last


def staged_part_size(value: str) -> int:
    size, share = parse_size(value)
    if share or size < S3_MIN_PART:
        raise ValueError("a size of at least 5MiB (S3's smallest part), like 32MiB")
    return size


def count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("a whole number, 0 or more") from None
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def registries(value: str) -> tuple[str, ...]:
    """Registry hosts, comma-separated (`*`: every one; empty: none)."""
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    for name in names:
        if name != "*" and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", name):
            raise ValueError(f"{name!r} is not a registry host (host or host:port)")
    return names


def show_registries(value: tuple[str, ...]) -> str:
    return ",".join(value)


def origin_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^/\s]+/?", value.strip()):
        raise ValueError("expected http(s)://host[:port]")
    return value.strip().rstrip("/")


def log_level(value: str) -> str:
    level = value.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("one of debug, info, warning, error")
    return level


def log_format(value: str) -> str:
    word = value.strip().lower()
    if word not in ("json", "text"):
        raise ValueError("json or text")
    return word


def endpoint_url(value: str) -> str:
    """An S3 endpoint: http(s)://host[:port], as botocore needs it."""
    if not re.fullmatch(r"https?://[^/\s]+/?", value.strip()):
        raise ValueError("expected http(s)://host[:port], e.g. http://127.0.0.1:9000")
    return value.strip().rstrip("/")


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("true or false")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
