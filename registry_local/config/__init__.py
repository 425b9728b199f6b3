"""Configuration: one table of options (options.py), read from flags, the
environment and a YAML file (load.py) into frozen settings (settings.py), whose
fields hold every default once; the flags of one command run (flags.py). Option
values as text are parsed in values.py."""

from .flags import FLAGS, Flag, add_flags
from .load import check_exposure, load, unknown_variables
from .options import COMMANDS, OPTIONS, Command, Option, add_options, reference_markdown
from .settings import (
    AccessSettings,
    CacheSettings,
    FleetSettings,
    GcSettings,
    LoadSettings,
    OriginSettings,
    PushSettings,
    S3Settings,
    ServerSettings,
    Settings,
    StoreSettings,
    WarmSettings,
)
from .values import is_loopback, parse_size

__all__ = [
    "COMMANDS",
    "FLAGS",
    "OPTIONS",
    "AccessSettings",
    "CacheSettings",
    "Command",
    "Flag",
    "FleetSettings",
    "GcSettings",
    "LoadSettings",
    "Option",
    "OriginSettings",
    "PushSettings",
    "S3Settings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "WarmSettings",
    "add_flags",
    "add_options",
    "check_exposure",
    "is_loopback",
    "load",
    "parse_size",
    "reference_markdown",
    "unknown_variables",
]
