"""The MVM on/off switches: config keys, overridden by ``MVM_*`` environment variables.

drizzlepac 3.11.0 reads ``MVM_INCLUDE_SMALL``, ``MVM_ONLY_CTE`` and ``MVM_QUALITY_TESTING``
with ``util.get_envvar_switch`` at different points of a run, so a bad value can fail late
(spec ``processing.md`` §3). Here they are all resolved once, up front, and a bad value is a
``ValueError`` naming the variable. Unlike the reference, ``1``/``0`` are accepted too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["FALSE_WORDS", "SWITCHES", "TRUE_WORDS", "parse_switch", "resolve_switches"]

TRUE_WORDS = ("on", "yes", "true", "1")
FALSE_WORDS = ("off", "no", "false", "0")
SWITCHES = {
    "include_small": ("MVM_INCLUDE_SMALL", True),
    "only_cte": ("MVM_ONLY_CTE", False),
    "quality_testing": ("MVM_QUALITY_TESTING", False),
}
"""Config key -> (environment variable, default)."""


def parse_switch(value, name: str) -> bool:
    """Return the boolean meaning of a switch value.

    Parameters
    ----------
    value : str or bool
        ``on/yes/true/1`` or ``off/no/false/0``, case-insensitive, blanks stripped; a bool
        is returned as it is (YAML configs give bools).
    name : str
        Name of the variable or config key, for the error message.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        For any other value, naming ``name``, the value and the accepted words.
    """
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str | int) else None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(
        f"{name}: invalid value {value!r}; use one of {', '.join(TRUE_WORDS)} (true) "
        f"or {', '.join(FALSE_WORDS)} (false), case-insensitive"
    )


def resolve_switches(
    config: Mapping | None, environ: Mapping[str, str] = os.environ
) -> dict[str, bool]:
    """Resolve the three MVM switches.

    Parameters
    ----------
    config : Mapping or None
        The workflow config; the keys ``include_small``, ``only_cte`` and
        ``quality_testing`` are used when present (other keys are ignored).
    environ : Mapping
        Environment; ``MVM_INCLUDE_SMALL``, ``MVM_ONLY_CTE`` and ``MVM_QUALITY_TESTING``
        override the config when set (even to an empty string, which is invalid).

    Returns
    -------
    dict
        ``{'include_small': bool, 'only_cte': bool, 'quality_testing': bool}``; defaults
        True, False, False.

    Raises
    ------
    ValueError
        For an invalid value, naming the variable (or ``config key ...``) and the value.
    """
    config = config or {}
    resolved = {}
    for key, (variable, default) in SWITCHES.items():
        if variable in environ:
            resolved[key] = parse_switch(environ[variable], f"environment variable {variable}")
        elif config.get(key) is not None:
            resolved[key] = parse_switch(config[key], f"config key {key!r}")
        else:
            resolved[key] = default
    return resolved
