"""The archive's base URL and the URLs built from it (docs/archive.md, "Which server").

The same code talks to the real archive by default and to any server that speaks its
protocol (a mirror, or the tests' local server on 127.0.0.1). The URL is chosen, first match
wins, from: an explicit value (``--mast-url`` on the command line), the environment variable
``MVMFLOW_MAST_URL`` (every command and the workflow), the config key ``archive.mast_url``,
and :data:`DEFAULT_MAST_URL`.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

__all__ = ["DEFAULT_MAST_URL", "ENV_VAR", "mast_url", "file_url", "bundle_url"]

#: The real archive.
DEFAULT_MAST_URL = "https://mast.stsci.edu"

#: The environment variable that overrides the configured URL for every command.
ENV_VAR = "MVMFLOW_MAST_URL"


def mast_url(explicit: str | None = None, configured: str | None = None) -> str:
    """The base URL of the archive, without a trailing ``/``.

    Parameters
    ----------
    explicit : str, optional
        A value given on the command line (``--mast-url``); wins over everything.
    configured : str, optional
        The config value ``archive.mast_url``; used when neither ``explicit`` nor the
        environment variable :data:`ENV_VAR` is set.

    Raises
    ------
    ValueError
        If the chosen value is not an ``http`` or ``https`` URL with a host; the message names
        where the value came from.
    """
    candidates = [("--mast-url", explicit), (ENV_VAR, os.environ.get(ENV_VAR)),
                  ("archive.mast_url", configured), ("default", DEFAULT_MAST_URL)]
    source, value = next((s, v) for s, v in candidates if v)
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{source}: {value!r} is not an http(s) URL such as {DEFAULT_MAST_URL}")
    return value.strip().rstrip("/")


def file_url(base: str, uri: str) -> str:
    """The URL that serves one file of the archive by its ``dataURI`` (``mast:HST/...``)."""
    return f"{base}/api/v0.1/Download/file?uri={quote(uri, safe=':/')}"


def bundle_url(base: str) -> str:
    """The URL that serves many files as one ``tar.gz`` (POST, ``uri`` repeated)."""
    return f"{base}/api/v0.1/Download/bundle.tar.gz"
