"""A local HTTP server that speaks MAST's protocol as astroquery and mvmflow use it.

The build machines cannot reach MAST, so every archive test starts one of these on
127.0.0.1 (docs/archive.md). It serves:

- files by ``dataURI``: ``GET``/``HEAD``/``POST`` ``/api/v0.1/Download/file?uri=<uri>``, with
  ``Content-Length``, ``Accept-Ranges: bytes`` and ranges (``206``);
- bundles: ``POST /api/v0.1/Download/bundle.tar.gz`` with the form field ``uri`` repeated, a
  ``tar.gz`` of ``mastDownload/<mission>/<obs_id>/<filename>`` members;
- the portal's "mashup" services: ``POST /api/v0/invoke`` with the form field ``request`` (the
  JSON astroquery's ``discovery_portal`` sends), answered in the mashup envelope with paging,
  and ``/portal/Mashup/Mashup.asmx/columnsconfig`` (the recorded CAOM column configuration in
  ``tests/data/mast/columnsconfig.json``);
- any route a test adds (:meth:`MastServer.add_route`).

Faults (:meth:`MastServer.add_fault`) are consumed one per request: HTTP errors, a connection
dropped mid-body, a body shorter than its ``Content-Length``, corrupted bytes, a stall longer
than the client's timeout. Every request is recorded (:attr:`MastServer.requests`), so a test
can count what a client asked for.

Pure standard library, apart from the optional pytest fixture :func:`mast_server`.
"""

from __future__ import annotations

import io
import json
import math
import re
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

__all__ = ["MastServer", "Request", "mast_server", "FAULT_KINDS", "DATA_DIR"]

#: Recorded MAST responses copied from astroquery's test data (tests/data/mast/).
DATA_DIR = Path(__file__).parent / "data" / "mast"

#: The fault kinds :meth:`MastServer.add_fault` accepts.
FAULT_KINDS = ("500", "503", "404", "403", "drop", "short", "corrupt", "timeout", "stall",
               "executing")

DOWNLOAD_PATH = "/api/v0.1/Download/file"
BUNDLE_PATH = "/api/v0.1/Download/bundle.tar.gz"
INVOKE_PATH = "/api/v0/invoke"
COLUMNS_CONFIG_PATH = "/portal/Mashup/Mashup.asmx/columnsconfig"

_REASONS = {200: "OK", 206: "Partial Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 416: "Range Not Satisfiable",
            500: "Internal Server Error", 503: "Service Unavailable"}


LAST_MODIFIED = "Tue, 14 May 2019 08:30:00 GMT"
"""The ``Last-Modified`` of every file served (the archive's files carry their own)."""


class _Headers(dict):
    """Request headers; lookups ignore case, as HTTP does."""

    def __init__(self, items=()):
        super().__init__((k.lower(), v) for k, v in items)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())

    def get(self, key, default=None):
        return super().get(key.lower(), default)


@dataclass
class Request:
    """One request the server received.

    Attributes
    ----------
    method : str
        ``GET``, ``POST``, ``HEAD``...
    path : str
        The URL path, without the query string.
    query : dict of str to list of str
        The decoded query string.
    form : dict of str to list of str
        The decoded ``application/x-www-form-urlencoded`` body (empty otherwise).
    body : bytes
        The raw body.
    headers : dict
        The request headers (case-insensitive lookups).
    """

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    form: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    headers: dict = field(default_factory=_Headers)

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` in the form, else in the query string."""
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else default

    def params(self, name: str) -> list[str]:
        """Every value of ``name`` in the form and the query string."""
        return self.form.get(name, []) + self.query.get(name, [])

    @property
    def mashup(self) -> dict | None:
        """The decoded mashup request (``/api/v0/invoke``'s ``request`` field), if any."""
        text = self.param("request")
        return json.loads(text) if text else None


@dataclass
class _File:
    data: bytes
    filename: str
    mission: str
    obs_id: str


Handler = Callable[[Request], "tuple[int, dict, bytes]"]


class MastServer:
    """A local server speaking MAST's download and portal protocol.

    Parameters
    ----------
    fixtures_dir : path, optional
        Where the recorded responses are (``columnsconfig.json``); default
        :data:`DATA_DIR`.

    Examples
    --------
    >>> with MastServer() as server:                          # doctest: +SKIP
    ...     server.add_file("mast:HST/product/x_flt.fits", data)
    ...     requests.get(f"{server.url}/api/v0.1/Download/file?uri=mast:HST/product/x_flt.fits")
    """

    def __init__(self, fixtures_dir: str | Path | None = None):
        self.fixtures_dir = Path(fixtures_dir) if fixtures_dir else DATA_DIR
        self.url = ""
        self.requests: list[Request] = []
        #: seconds a "timeout" or "stall" fault waits (longer than the client's timeout)
        self.timeout_sleep = 3.0
        #: answer ranges with 206; False makes the server ignore ``Range`` (always 200)
        self.honor_ranges = True
        self._files: dict[str, _File] = {}
        self._services: dict[str, Callable] = {}
        self._columns_configs: dict[str, dict] = {}
        self._routes: list[tuple[str, str, Handler]] = []
        self._faults: dict[str, list[str]] = {}
        self._bundle_raw: list[tuple[str, bytes, str]] = []
        self._lock = threading.Lock()
        self._connections: set = set()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> MastServer:
        """Listen on 127.0.0.1 (a free port) in a daemon thread; sets :attr:`url`."""
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"mast": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="MastServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled fault handlers wake up and close their connections."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
        with self._lock:  # kept-alive connections: end them, and their handler threads
            connections, self._connections = list(self._connections), set()
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd = None
        self._thread = None

    def __enter__(self) -> MastServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content ------------------------------------------------------------------------

    def add_file(self, uri: str, data: bytes, *, filename: str | None = None,
                 obs_id: str | None = None) -> None:
        """Serve ``data`` under the dataURI ``uri``.

        Parameters
        ----------
        uri : str
            The dataURI, e.g. ``mast:HST/product/ib4606c5q_flc.fits``.
        data : bytes
            The file's content.
        filename : str, optional
            The name in ``Content-Disposition`` and in bundles; default the URI's last
            path component.
        obs_id : str, optional
            The bundle directory (``mastDownload/<mission>/<obs_id>/``); default the file
            name up to its first ``_``.
        """
        name = filename or uri.rstrip("/").rsplit("/", 1)[-1]
        mission = uri.split(":", 1)[-1].split("/", 1)[0] or "HST"
        obs = obs_id or name.split("_", 1)[0].split(".", 1)[0]
        with self._lock:
            self._files[uri] = _File(bytes(data), name, mission, obs)

    def remove_file(self, uri: str) -> None:
        """Stop serving ``uri`` (it then answers 404)."""
        with self._lock:
            self._files.pop(uri, None)

    def add_service(self, name: str, handler: Callable[[dict], tuple[list, list]]) -> None:
        """Answer the mashup service ``name`` at ``/api/v0/invoke``.

        Parameters
        ----------
        name : str
            The service, e.g. ``Mast.Caom.Filtered.Position``.
        handler : callable
            ``handler(params) -> (fields, rows)``: ``params`` is the request's ``params``
            object; ``fields`` a list of ``{"name", "type"}``, ``rows`` a list of dicts. The
            server pages the rows by the request's ``pagesize`` and ``page``. An exception
            raised by the handler is answered as ``{"status": "ERROR", "msg": str(exc)}``.
        """
        with self._lock:
            self._services[name] = handler

    def add_columns_config(self, name: str, config: dict) -> None:
        """Answer ``columnsconfig`` for ``colConfigId=name`` with ``config``."""
        with self._lock:
            self._columns_configs[name] = config

    def add_route(self, method: str, path_prefix: str, handler: Handler) -> None:
        """Answer ``method`` requests whose path starts with ``path_prefix``.

        ``handler(request) -> (status, headers, body)``. Routes added here win over the
        built-in ones; the longest matching prefix wins among them.
        """
        with self._lock:
            self._routes.append((method.upper(), path_prefix, handler))
            self._routes.sort(key=lambda r: -len(r[1]))

    def add_fault(self, uri_or_path: str, *kinds: str) -> None:
        """Queue faults for the next requests of a dataURI (or a path prefix).

        Each request for it consumes one fault, in order; when the queue is empty the
        server answers normally.

        Parameters
        ----------
        uri_or_path : str
            A dataURI (matched against the ``uri`` parameter) or a path prefix
            (e.g. ``/api/v0/invoke``).
        *kinds : str
            ``"500"``, ``"503"``, ``"404"``, ``"403"`` (that HTTP status); ``"drop"``
            (headers and half the body, then the connection is closed); ``"short"``
            (the body stops 100 bytes short of its ``Content-Length``, then closed);
            ``"corrupt"`` (full length, some bytes changed); ``"timeout"`` (no answer for
            :attr:`timeout_sleep` seconds, then closed); ``"stall"`` (headers and half the
            body, then nothing for :attr:`timeout_sleep` seconds); ``"executing"`` (a
            mashup answer ``{"status": "EXECUTING"}``: the portal's "still working, ask
            again", which astroquery polls). ``HEAD`` requests do not consume faults.
        """
        bad = [k for k in kinds if k not in FAULT_KINDS]
        if bad:
            raise ValueError(f"unknown fault kind(s) {bad}; known: {FAULT_KINDS}")
        with self._lock:
            self._faults.setdefault(uri_or_path, []).extend(kinds)

    def pending_faults(self, uri_or_path: str) -> list[str]:
        """The faults not yet consumed for ``uri_or_path``."""
        with self._lock:
            return list(self._faults.get(uri_or_path, []))

    def add_bundle_member_raw(self, name: str, data: bytes | str = b"",
                              type: str = "file") -> None:
        """Put a raw member into the next bundle (to test safe extraction).

        ``type`` is ``"file"`` (``data`` is its content), ``"symlink"`` or ``"hardlink"``
        (``data`` is the link target), ``"chrdev"``, ``"fifo"`` or ``"dir"``.
        """
        if type not in ("file", "symlink", "hardlink", "chrdev", "fifo", "dir"):
            raise ValueError(f"unknown member type {type!r}")
        raw = data.encode() if isinstance(data, str) else bytes(data)
        with self._lock:
            self._bundle_raw.append((name, raw, type))

    # -- what was asked -----------------------------------------------------------------

    def count(self, path_prefix: str = "") -> int:
        """How many requests had a path starting with ``path_prefix``."""
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    def reset_requests(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    def file_url(self, uri: str) -> str:
        """The URL that serves ``uri`` (as ``mvmflow.archive.service.file_url`` builds it)."""
        return f"{self.url}{DOWNLOAD_PATH}?uri={quote(uri, safe=':/')}"

    # -- internals used by the handler --------------------------------------------------

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, request: Request) -> str | None:
        if request.method == "HEAD":  # astroquery asks HEAD before GET: faults are for GETs
            return None
        with self._lock:
            keys = [u for u in request.params("uri") if self._faults.get(u)]
            keys += sorted((k for k, v in self._faults.items()
                            if v and k.startswith("/") and request.path.startswith(k)),
                           key=len, reverse=True)
            return self._faults[keys[0]].pop(0) if keys else None

    def _respond(self, request: Request) -> tuple[int, dict, bytes]:
        with self._lock:
            routes = list(self._routes)
        for method, prefix, handler in routes:
            if request.method in (method, "HEAD" if method == "GET" else "") and \
                    request.path.startswith(prefix):
                return handler(request)
        if request.path == DOWNLOAD_PATH:
            return self._download(request)
        if request.path.startswith(BUNDLE_PATH):
            return self._bundle(request)
        if request.path == INVOKE_PATH:
            return self._invoke(request)
        if request.path == COLUMNS_CONFIG_PATH:
            return self._columnsconfig(request)
        return 404, {"Content-Type": "text/plain"}, f"no route {request.path}".encode()

    def _download(self, request: Request) -> tuple[int, dict, bytes]:
        uri = request.param("uri")
        with self._lock:
            entry = self._files.get(uri) if uri else None
        if entry is None:
            return 404, {"Content-Type": "text/plain"}, f"file not found: {uri}".encode()
        data, total = entry.data, len(entry.data)
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                   "Content-Disposition": f'attachment; filename="{entry.filename}"',
                   "Last-Modified": LAST_MODIFIED}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", (request.headers.get("Range") or "").strip())
        if match and self.honor_ranges and any(match.groups()):
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last) if last else total - 1, total - 1)
            else:  # suffix range: the last N bytes
                start, end = max(total - int(last), 0), total - 1
            if start >= total or start > end:
                headers["Content-Range"] = f"bytes */{total}"
                return 416, headers, b""
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
            return 206, headers, data[start:end + 1]
        return 200, headers, data

    def _bundle(self, request: Request) -> tuple[int, dict, bytes]:
        if request.method != "POST":
            return 405, {"Content-Type": "text/plain"}, b"POST the uri list"
        uris = request.params("uri")
        with self._lock:
            members = [self._files[u] for u in uris if u in self._files]
            raw, self._bundle_raw = self._bundle_raw, []
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            for entry in members:
                info = tarfile.TarInfo(f"mastDownload/{entry.mission}/{entry.obs_id}/"
                                       f"{entry.filename}")
                info.size, info.mode, info.mtime = len(entry.data), 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(entry.data))
            for name, data, kind in raw:
                info = tarfile.TarInfo(name)
                info.mode, info.mtime = 0o644, 1_700_000_000
                if kind == "file":
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    continue
                info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                             "chrdev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE,
                             "dir": tarfile.DIRTYPE}[kind]
                if kind in ("symlink", "hardlink"):
                    info.linkname = data.decode()
                tar.addfile(info)
        name = "mastDownload_" + time.strftime("%Y%m%d%H%M%S") + ".tar.gz"
        return 200, {"Content-Type": "application/x-tar",
                     "Content-Disposition": f'attachment; filename="{name}"'}, buffer.getvalue()

    def _invoke(self, request: Request) -> tuple[int, dict, bytes]:
        try:
            mashup = request.mashup
        except ValueError as exc:
            return 400, {"Content-Type": "text/plain"}, f"bad request JSON: {exc}".encode()
        if not mashup or "service" not in mashup:
            return _json(400, {"status": "ERROR", "msg": "no request", "data": []})
        with self._lock:
            handler = self._services.get(mashup["service"])
        if handler is None:
            return _json(200, {"status": "ERROR", "data": [], "fields": [],
                               "msg": f"Unknown service: {mashup['service']}"})
        try:
            fields, rows = handler(mashup.get("params") or {})
        except Exception as exc:  # the mashup reports a failed service in its envelope
            return _json(200, {"status": "ERROR", "msg": str(exc), "data": [], "fields": []})
        rows = list(rows)
        pagesize = int(mashup.get("pagesize") or 50000)
        page = int(mashup.get("page") or 1)
        pages = math.ceil(len(rows) / pagesize)
        chunk = rows[(page - 1) * pagesize: page * pagesize]
        return _json(200, {"status": "COMPLETE", "msg": "", "data": chunk, "fields": fields,
                           "paging": {"page": page, "pageSize": pagesize,
                                      "pagesFiltered": pages, "rows": len(chunk),
                                      "rowsFiltered": len(rows), "rowsTotal": len(rows)}})

    def _columnsconfig(self, request: Request) -> tuple[int, dict, bytes]:
        name = request.param("colConfigId") or ""
        with self._lock:
            config = self._columns_configs.get(name)
        if config is None and name.startswith("Mast.Caom"):
            config = json.loads((self.fixtures_dir / "columnsconfig.json").read_text())
        if config is None:
            config = {"_selected_": {"text": "selected", "add": True, "type": "boolean",
                                     "hidden": True}}
        return _json(200, config)


def _json(status: int, obj) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(obj).encode()


class _Handler(BaseHTTPRequestHandler):
    """Parses a request, records it, answers it (with the queued fault, if any)."""

    mast: MastServer  # set on the subclass made by MastServer.start
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle kept-alive connection is closed after this many seconds

    def setup(self):
        super().setup()
        with self.mast._lock:
            self.mast._connections.add(self.connection)

    def finish(self):
        with self.mast._lock:
            self.mast._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):  # quiet: tests read server.requests instead
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def _handle(self):
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        form = {}
        if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or "").lower():
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        request = Request(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                          form, body, _Headers(self.headers.items()))
        self.mast._record(request)
        fault = self.mast._take_fault(request)
        try:
            if fault == "timeout":
                self.mast._stopping.wait(self.mast.timeout_sleep)
                self.close_connection = True
                return
            if fault == "executing":
                status, headers, payload = _json(200, {"status": "EXECUTING", "msg": "",
                                                       "data": [], "fields": []})
                self._send(status, headers, payload)
                return
            if fault in ("500", "503", "404", "403"):
                status = int(fault)
                self._send(status, {"Content-Type": "text/plain"},
                           f"{status} {_REASONS[status]} (injected)".encode())
                return
            try:
                status, headers, payload = self.mast._respond(request)
            except Exception as exc:  # a test's handler failed: say so, do not hang
                status, headers, payload = 500, {"Content-Type": "text/plain"}, repr(exc).encode()
            self._send(status, headers, payload, fault)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, status: int, headers: dict, payload: bytes, fault: str | None = None):
        self.send_response(status, _REASONS.get(status))
        for key, value in headers.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        if fault in ("drop", "short", "stall"):
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "corrupt" and payload:
            middle = len(payload) // 2
            payload = payload[:middle] + bytes([payload[middle] ^ 0xFF]) + payload[middle + 1:]
        elif fault in ("drop", "stall"):
            payload = payload[: len(payload) // 2]
        elif fault == "short":
            payload = payload[: max(len(payload) - 100, 0)]
        self.wfile.write(payload)
        self.wfile.flush()
        if fault == "stall":
            self.mast._stopping.wait(self.mast.timeout_sleep)
        if fault in ("drop", "short", "stall"):
            self.close_connection = True


try:
    import pytest
except ImportError:  # pragma: no cover - the module is usable without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def mast_server():
        """A started :class:`MastServer`, stopped after the test."""
        with MastServer() as server:
            yield server
