"""Downloads that never leave a bad file under its final name (docs/archive.md, "Downloads"),
each fault injected by the local MAST server."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import tarfile
import threading
import time

import numpy as np
import pytest
from astropy.io import fits
from mastserver import MastServer

from mvmflow.archive.download import (
    DownloadError,
    Transfer,
    fetch,
    fetch_all,
    fetch_bundle,
    fits_problem,
    part_path,
    safe_extract,
    sidecar_path,
    verify,
)
from mvmflow.archive.service import bundle_url, file_url

FAST = {"backoff": 0.01, "timeout": 5.0}
DOWNLOAD = "/api/v0.1/Download/file"


def fits_bytes(shape=(60, 70), seed=0) -> bytes:
    """A small valid FITS file: a primary header and one image extension."""
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")]).writeto(buffer)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def serve(server, name: str, data: bytes) -> str:
    uri = f"mast:HST/product/{name}"
    server.add_file(uri, data)
    return uri


def never_early(dest):
    """A progress callback asserting that nothing is under the final name mid-transfer."""
    calls = []

    def progress(done, total):
        assert not dest.exists(), f"{dest.name} appeared before it was verified"
        calls.append((done, total))

    progress.calls = calls
    return progress


def ranges(server, uri):
    return [r.headers.get("Range") for r in server.requests
            if r.path == DOWNLOAD and r.param("uri") == uri]


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


# -- faults ---------------------------------------------------------------------------------

def test_http_500_then_success(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0001a1q_flc.fits", data)
    mast_server.add_fault(uri, "500", "503")
    dest = tmp_path / "ib0001a1q_flc.fits"
    progress = never_early(dest)
    transfer = Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data))
    assert fetch(transfer, progress=progress, **FAST) == dest
    assert dest.read_bytes() == data
    assert ranges(mast_server, uri) == [None, None, None]
    assert progress.calls[-1] == (len(data), len(data))
    assert leftovers(tmp_path) == [".ib0001a1q_flc.fits.verified", "ib0001a1q_flc.fits"]


@pytest.mark.parametrize("kind", ["drop", "short"])
def test_interrupted_transfer_resumes_with_range(mast_server, tmp_path, kind):
    data = fits_bytes(shape=(200, 200))
    uri = serve(mast_server, "ib0001a2q_flt.fits", data)
    mast_server.add_fault(uri, kind)
    dest = tmp_path / "ib0001a2q_flt.fits"
    fetch(Transfer(file_url(mast_server.url, uri), dest, len(data)),
          progress=never_early(dest), **FAST)
    assert dest.read_bytes() == data
    asked = ranges(mast_server, uri)
    assert len(asked) == 2 and asked[0] is None
    start = int(asked[1].removeprefix("bytes=").removesuffix("-"))
    sent = len(data) // 2 if kind == "drop" else len(data) - 100
    assert 0 < start <= sent  # resumed where the part stopped, not from byte 0


def test_server_that_ignores_ranges_restarts_from_zero(mast_server, tmp_path):
    data = fits_bytes(shape=(200, 200))
    uri = serve(mast_server, "ib0001a3q_flt.fits", data)
    mast_server.honor_ranges = False
    mast_server.add_fault(uri, "drop")
    dest = tmp_path / "ib0001a3q_flt.fits"
    fetch(Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data)), **FAST)
    assert dest.read_bytes() == data
    assert ranges(mast_server, uri)[1] is not None  # asked, got a 200, started again


def test_wrong_checksum_never_gives_the_file(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0001a4q_flc.fits", data)
    dest = tmp_path / "ib0001a4q_flc.fits"
    url = file_url(mast_server.url, uri)
    wrong = md5(data + b"x")
    with pytest.raises(DownloadError) as err:
        fetch(Transfer(url, dest, len(data), wrong), retries=2, progress=never_early(dest),
              **FAST)
    message = str(err.value)
    assert message.startswith("ib0001a4q_flc.fits: checksum differs")
    assert "after 3 attempts" in message and message.endswith(f"({url})")
    assert "\n" not in message
    assert not dest.exists() and not part_path(dest).exists()
    assert len(ranges(mast_server, uri)) == 3


def test_corrupt_bytes_are_fetched_again(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0001a5q_flc.fits", data)
    mast_server.add_fault(uri, "corrupt")
    dest = tmp_path / "ib0001a5q_flc.fits"
    fetch(Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data)),
          progress=never_early(dest), **FAST)
    assert dest.read_bytes() == data
    assert ranges(mast_server, uri) == [None, None]  # the bad part restarted from byte 0


def test_incomplete_fits_is_refused_without_size_or_checksum(mast_server, tmp_path):
    data = fits_bytes()[:-2880]  # the extension's last data block is missing
    uri = serve(mast_server, "ib0001a6q_flc.fits", data)
    dest = tmp_path / "ib0001a6q_flc.fits"
    with pytest.raises(DownloadError, match=r"ib0001a6q_flc.fits: not a complete FITS file"):
        fetch(Transfer(file_url(mast_server.url, uri), dest), retries=1, **FAST)
    assert not dest.exists()
    assert len(ranges(mast_server, uri)) == 2


def test_timeout_is_retried(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0001a7q_flc.fits", data)
    mast_server.timeout_sleep = 2.0
    mast_server.add_fault(uri, "timeout")
    dest = tmp_path / "ib0001a7q_flc.fits"
    url = file_url(mast_server.url, uri)
    fetch(Transfer(url, dest, len(data)), timeout=0.5, backoff=0.01)
    assert dest.read_bytes() == data
    other = tmp_path / "other.fits"
    mast_server.add_fault(uri, "timeout", "stall")
    with pytest.raises(DownloadError, match=r"^other.fits: timed out after 0.5 s, after 2 "):
        fetch(Transfer(url, other, len(data)), retries=1, timeout=0.5, backoff=0.01)
    assert not other.exists()


def test_not_found_and_not_public_fail_at_once(mast_server, tmp_path):
    dest = tmp_path / "ib0001a8q_flc.fits"
    url = file_url(mast_server.url, "mast:HST/product/ib0001a8q_flc.fits")
    with pytest.raises(DownloadError) as err:
        fetch(Transfer(url, dest), retries=4, backoff=5.0)
    assert str(err.value) == f"ib0001a8q_flc.fits: not found (HTTP 404) ({url})"
    assert mast_server.count(DOWNLOAD) == 1
    uri = serve(mast_server, "ib0001a9q_flc.fits", b"x")
    mast_server.add_fault(uri, "403")
    with pytest.raises(DownloadError, match="not public"):
        fetch(Transfer(file_url(mast_server.url, uri), dest), retries=4, backoff=5.0)
    assert mast_server.count(DOWNLOAD) == 2
    assert leftovers(tmp_path) == []


# -- what is already there ------------------------------------------------------------------

def test_truncated_file_already_present_is_fetched_again(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0001b1q_flc.fits", data)
    dest = tmp_path / "ib0001b1q_flc.fits"
    dest.write_bytes(data[: len(data) // 2])
    assert verify(dest, len(data)).startswith("size differs")
    fetch(Transfer(file_url(mast_server.url, uri), dest, len(data)), **FAST)
    assert dest.read_bytes() == data
    assert ranges(mast_server, uri) == [None]  # a whole new file, not a resume of the bad one
    # without a size, the FITS structure tells a truncated file too
    dest.write_bytes(data[: len(data) // 2 // 2880 * 2880])
    fetch(Transfer(file_url(mast_server.url, uri), dest), **FAST)
    assert dest.read_bytes() == data


def test_good_file_already_present_makes_no_request(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0001b2q_flc.fits", data)
    dest = tmp_path / "ib0001b2q_flc.fits"
    transfer = Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data))
    fetch(transfer, **FAST)
    mast_server.reset_requests()
    fetch(transfer, **FAST)
    result = fetch_all([transfer], **FAST)
    assert result == {dest: None}
    assert mast_server.count() == 0


def test_verification_is_remembered_until_the_file_changes(tmp_path):
    data = fits_bytes()
    dest = tmp_path / "ib0001b3q_flc.fits"
    dest.write_bytes(data)
    assert verify(dest, len(data), md5(data)) is None
    record = json.loads(sidecar_path(dest).read_text())
    assert record["checksum"] == md5(data) and record["size"] == len(data)
    # same size and time: the sidecar answers, the bytes are not hashed again
    st = dest.stat()
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    dest.write_bytes(bytes(flipped))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verify(dest, len(data), md5(data)) is None
    # a new time: hashed again, and the change is found
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert verify(dest, len(data), md5(data)).startswith("checksum differs (md5 ")
    # another expected checksum is not answered by the sidecar either
    assert verify(dest, None, md5(b"other")).startswith("checksum differs")


def test_verify_reasons(tmp_path):
    data = fits_bytes()
    good = tmp_path / "good.fits"
    good.write_bytes(data)
    assert verify(tmp_path / "none.fits") == "missing"
    assert verify(good) is None
    assert verify(good, len(data) + 1) == f"size differs ({len(data)} bytes, expected " \
                                          f"{len(data) + 1})"
    assert verify(good, checksum="sha256:" + hashlib.sha256(data).hexdigest()) is None
    with pytest.raises(ValueError, match="not '<algorithm>:<hex>'"):
        verify(good, checksum="d41d8cd98f00b204e9800998ecf8427e")
    cut = tmp_path / "cut.fits"
    cut.write_bytes(data[:-2880])
    assert verify(cut).startswith("not a complete FITS file (data of HDU 1 end at byte")
    assert verify(cut, fits=False) is None
    odd = tmp_path / "odd.fits"
    odd.write_bytes(data[:-10])
    assert "not a multiple of 2880" in verify(odd)
    noend = tmp_path / "noend.fits"
    noend.write_bytes(data[:2880])  # the primary header only: fine as a FITS file
    assert fits_problem(noend) is None
    noend.write_bytes(data[:2880].replace(b"END" + b" " * 77, b" " * 80))
    assert "has no END" in fits_problem(noend)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(data + b"\0" * 2880)
    assert "no header of HDU 2" in fits_problem(junk)


def test_part_from_an_earlier_run_is_resumed(mast_server, tmp_path):
    data = fits_bytes(shape=(100, 100))
    uri = serve(mast_server, "ib0001b4q_flc.fits", data)
    dest = tmp_path / "ib0001b4q_flc.fits"
    part_path(dest).write_bytes(data[:5000])
    fetch(Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data)), **FAST)
    assert dest.read_bytes() == data
    assert ranges(mast_server, uri) == ["bytes=5000-"]
    # a part longer than the file cannot be a prefix: start again
    other = tmp_path / "other.fits"
    part_path(other).write_bytes(data + b"extra")
    fetch(Transfer(file_url(mast_server.url, uri), other, len(data)), **FAST)
    assert other.read_bytes() == data
    assert ranges(mast_server, uri)[-1] is None


def test_mode_follows_umask(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0001b5q_flc.fits", data)
    old = os.umask(0o027)
    try:
        dest = tmp_path / "ib0001b5q_flc.fits"
        fetch(Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data)), **FAST)
        extracted = fetch_bundle(bundle_url(mast_server.url), [uri], tmp_path / "bundle")
    finally:
        os.umask(old)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert stat.S_IMODE(sidecar_path(dest).stat().st_mode) == 0o640
    assert stat.S_IMODE(extracted[0].stat().st_mode) == 0o640


# -- many files -----------------------------------------------------------------------------

def test_fetch_all_one_failure_does_not_stop_the_others(mast_server, tmp_path, caplog):
    transfers = []
    for i in range(5):
        data = fits_bytes(seed=i)
        uri = serve(mast_server, f"ib0002c{i}q_flc.fits", data)
        transfers.append(Transfer(file_url(mast_server.url, uri),
                                  tmp_path / f"ib0002c{i}q_flc.fits", len(data), md5(data)))
    mast_server.add_fault("mast:HST/product/ib0002c1q_flc.fits", "500", "500", "500")
    mast_server.add_fault("mast:HST/product/ib0002c3q_flc.fits", "drop")
    mast_server.remove_file("mast:HST/product/ib0002c4q_flc.fits")
    with caplog.at_level(logging.INFO, logger="mvmflow.archive"):
        result = fetch_all(transfers + transfers[:1], workers=3, retries=2, **FAST)
    assert list(result) == [t.dest for t in transfers]
    failed = {dest.name: str(err) for dest, err in result.items() if err is not None}
    assert list(failed) == ["ib0002c1q_flc.fits", "ib0002c4q_flc.fits"]
    assert failed["ib0002c1q_flc.fits"].startswith("ib0002c1q_flc.fits: HTTP 500, after 3")
    assert "not found" in failed["ib0002c4q_flc.fits"]
    for i in (0, 2, 3):
        assert transfers[i].dest.read_bytes() == fits_bytes(seed=i)
    assert not transfers[1].dest.exists() and not transfers[4].dest.exists()
    assert "2 of 5 files could not be fetched" in caplog.text
    assert "fetched 5 of 5 files" in caplog.text


def test_long_transfers_log_progress(mast_server, tmp_path, caplog):
    data = os.urandom(12 << 20)
    uri = serve(mast_server, "big.dat", data)
    dest = tmp_path / "big.dat"
    with caplog.at_level(logging.INFO, logger="mvmflow.archive"):
        result = fetch_all([Transfer(file_url(mast_server.url, uri), dest, len(data))], **FAST)
    assert result == {dest: None}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("big.dat: ")]
    assert lines[-1] == "big.dat: 100% of 12.6 MB"
    assert 5 <= len(lines) <= 11


# -- bundles --------------------------------------------------------------------------------

def test_bundle_is_extracted(mast_server, tmp_path):
    uris = [serve(mast_server, f"ib0003d{i}q_flt.fits", fits_bytes(seed=i)) for i in range(3)]
    dest = tmp_path / "out"
    paths = fetch_bundle(bundle_url(mast_server.url), uris, dest)
    assert [p.relative_to(dest).as_posix() for p in paths] == [
        f"mastDownload/HST/ib0003d{i}q/ib0003d{i}q_flt.fits" for i in range(3)]
    assert [p.read_bytes() for p in paths] == [fits_bytes(seed=i) for i in range(3)]
    assert mast_server.requests[-1].form["uri"] == uris
    assert leftovers(dest) == ["mastDownload"]


@pytest.mark.parametrize("name, data, kind, why", [
    ("../x", b"evil", "file", "a '..' component"),
    ("mastDownload/../../x", b"evil", "file", "a '..' component"),
    ("ABSOLUTE", b"evil", "file", "an absolute path"),
    ("mastDownload/link", "../../x", "symlink", "a link"),
    ("mastDownload/hard", "mastDownload/HST/ib0004e0q/ib0004e0q_flt.fits", "hardlink", "a link"),
    ("mastDownload/dev", b"", "chrdev", "a device"),
])
def test_bundle_with_unsafe_members_is_refused(mast_server, tmp_path, name, data, kind, why):
    uri = serve(mast_server, "ib0004e0q_flt.fits", fits_bytes())
    outside = tmp_path / "x"
    name = str(outside) if name == "ABSOLUTE" else name
    mast_server.add_bundle_member_raw(name, data, type=kind)
    dest = tmp_path / "a" / "b"
    with pytest.raises(DownloadError) as err:
        fetch_bundle(bundle_url(mast_server.url), [uri], dest, **FAST)
    message = str(err.value)
    assert message.startswith(f"bundle.tar.gz: refused member {name!r}: {why}")
    assert not outside.exists()
    assert leftovers(dest) == []  # nothing extracted, the temporary bundle removed
    assert leftovers(tmp_path) == ["a"]


def test_bundle_error_page_is_not_extracted(mast_server, tmp_path):
    mast_server.add_route("POST", "/api/v0.1/Download/bundle", lambda req: (
        200, {"Content-Type": "text/html"}, b"<html>Service temporarily unavailable</html>"))
    with pytest.raises(DownloadError, match=r"bundle.tar.gz: the answer is text/html, not a tar "
                                            r"archive: <html>Service temporarily"):
        fetch_bundle(bundle_url(mast_server.url), ["mast:HST/product/a.fits"], tmp_path, **FAST)
    assert mast_server.count() == 1
    assert leftovers(tmp_path) == []


def test_bundle_retried_after_5xx_and_garbage(mast_server, tmp_path):
    uri = serve(mast_server, "ib0005f0q_flt.fits", fits_bytes())
    mast_server.add_fault("/api/v0.1/Download/bundle", "503", "corrupt")
    paths = fetch_bundle(bundle_url(mast_server.url), [uri], tmp_path, **FAST)
    assert paths[0].read_bytes() == fits_bytes()
    assert mast_server.count("/api/v0.1/Download/bundle") == 3


def test_safe_extract_refuses_before_writing_anything(tmp_path):
    tar_path = tmp_path / "t.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name in ("good/a.txt", "good/../../escape.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(DownloadError, match=r"^t.tar: refused member 'good/../../escape.txt'"):
        safe_extract(tar_path, tmp_path / "dest")
    assert not (tmp_path / "dest" / "good").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_no_server_is_a_clear_error(tmp_path):
    with MastServer() as server:
        url = file_url(server.url, "mast:HST/product/z.fits")
    with pytest.raises(DownloadError, match=r"^z.fits: connection broken .*after 2 attempts"):
        fetch(Transfer(url, tmp_path / "z.fits"), retries=1, **FAST)


def test_local_write_error_names_the_file(mast_server, tmp_path):
    data = fits_bytes()
    uri = serve(mast_server, "ib0006g0q_flc.fits", data)
    (tmp_path / "notadir").write_bytes(b"")
    blocked = Transfer(file_url(mast_server.url, uri), tmp_path / "notadir" / "x.fits")
    good = Transfer(file_url(mast_server.url, uri), tmp_path / "ok" / "y.fits", len(data))
    result = fetch_all([blocked, good], workers=2, **FAST)
    assert str(result[blocked.dest]).startswith("x.fits: cannot write: ")
    assert result[good.dest] is None and good.dest.read_bytes() == data


def test_two_fetches_of_one_file_take_turns(mast_server, tmp_path):
    data = fits_bytes(shape=(200, 200))
    uri = serve(mast_server, "ib0006g1q_flc.fits", data)
    mast_server.timeout_sleep = 0.5
    mast_server.add_fault(uri, "stall")  # the first transfer is slow and needs a resume
    dest = tmp_path / "ib0006g1q_flc.fits"
    transfer = Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data))
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(transfer, **FAST)))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join(timeout=30)
    assert results == [dest, dest]
    assert dest.read_bytes() == data
    assert len(ranges(mast_server, uri)) == 2  # the stalled transfer and its resume, only
    assert leftovers(tmp_path) == [".ib0006g1q_flc.fits.verified", "ib0006g1q_flc.fits"]


def test_the_file_keeps_the_servers_modification_time(mast_server, tmp_path):
    """A file fetched again (say, after a user deleted it from a shared mirror) gets the
    time it had, the server's Last-Modified, so other runs that used it redo nothing."""
    from email.utils import parsedate_to_datetime

    from mastserver import LAST_MODIFIED

    data = fits_bytes()
    uri = serve(mast_server, "ib0001a1q_flc.fits", data)
    dest = tmp_path / "ib0001a1q_flc.fits"
    transfer = Transfer(file_url(mast_server.url, uri), dest, len(data), md5(data))
    fetch(transfer, **FAST)
    stamp = parsedate_to_datetime(LAST_MODIFIED).timestamp()
    assert dest.stat().st_mtime == stamp
    dest.unlink()
    fetch(transfer, **FAST)
    assert dest.stat().st_mtime == stamp
    # the remembered verification is of this file and time: no request, no new fetch
    before = len(mast_server.requests)
    fetch(transfer, **FAST)
    assert len(mast_server.requests) == before
