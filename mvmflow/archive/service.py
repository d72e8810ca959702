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

__all__ = ["DEFAULT_MAST_URL", "ENV_VAR", "mast_url", "file_url", "bundle_url",
           "astroquery_client"]

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


def astroquery_client(cls, url: str | None = None, timeout: float | None = None):
    """A fresh astroquery MAST client of class ``cls`` pointed at the archive ``url``.

    ``cls`` is ``ObservationsClass``, ``MastClass`` or ``HapcutClass`` (astroquery.mast).
    The instance's portal and service URLs are set from :func:`mast_url` (``url`` >
    ``MVMFLOW_MAST_URL`` > the real archive); astroquery's global configuration is not
    touched, and the column configurations the portal fetches are kept on this instance only
    (astroquery shares them between instances by default). The portal's requests are never
    cached by astroquery (its PortalAPI passes ``cache=False``). This is the one place that
    knows astroquery's URL attributes (docs/archive.md, "Which server").
    """
    base = mast_url(url)
    client = cls()
    portal = client._portal_api_connection
    portal.MAST_REQUEST_URL = f"{base}/api/v0/invoke"
    portal.COLUMNS_CONFIG_URL = f"{base}/portal/Mashup/Mashup.asmx/columnsconfig"
    portal.MAST_DOWNLOAD_URL = f"{base}/api/v0.1/Download/file"
    portal.MAST_BUNDLE_URL = f"{base}/api/v0.1/Download/bundle"
    portal._column_configs = {}  # the class attribute is shared by every instance
    portal._current_service = None
    if timeout is not None:
        portal.TIMEOUT = timeout
    api = client._service_api_connection
    api.SERVICE_URL = base
    api.REQUEST_URL = f"{base}/api/v0.1/"
    api.MISSIONS_DOWNLOAD_URL = f"{base}/search/"
    api.MAST_DOWNLOAD_URL = f"{base}/api/v0.1/Download/file"
    if getattr(api, "SERVICES", None) and "astrocut" in api.SERVICES:  # Hapcut
        api.set_service_params(api.SERVICES, "hapcut")
    return client
