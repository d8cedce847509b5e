"""Names that become folder names (runs, sweeps, splits): a safe alphabet, so no name leaves its folder."""

from __future__ import annotations

import re

from toco_ray.config import ConfigError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALPHABET = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters, no '..'"


def check_name(what: str, name: str) -> str:
    """Returns ``name`` if it is safe as a single folder name, else raises :class:`ConfigError` naming ``what``.

    Example:
        >>> check_name("--run-name", "../../escape")
        Traceback (most recent call last):
        ConfigError: --run-name '../../escape' is not a valid name: use letters, digits, ...
    """
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(f"{what} {name!r} is not a valid name: use {ALPHABET}")
    return name
