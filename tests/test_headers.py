"""Headers files: the screen job's copy of each exposure's primary and SCI headers."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from mvmflow.headers import (
    HEADERS_FORMAT,
    InputHeaders,
    headers_of_records,
    load_input_headers,
    member_headers,
    read_input_headers,
    write_exposure_headers,
    write_input_headers,
)
from mvmflow.records import ExposureRecord

TEMPLATE = Path(__file__).resolve().parents[1] / "mvmflow" / "data" / "hst" / "templates" / \
    "wfc3_uvis.fits"


def awkward_cards(header: fits.Header) -> fits.Header:
    """``header`` plus the cards a naive copy loses: long strings (CONTINUE) with comments,
    HISTORY/COMMENT/blank cards, HIERARCH, an undefined value, duplicate keywords, a value
    in a non-standard column and trailing blanks inside a string."""
    header = header.copy()
    header["LONGSTR"] = ("x" * 150 + " y  ", "a long comment " * 6)
    header["PADDED"] = ("text   ", "blanks inside the quotes")
    header.add_history("first history card   ")
    header.add_history("x" * 100)  # two HISTORY cards
    header.add_comment("a comment card")
    header.add_blank("a blank-keyword card")
    header.add_blank("")
    for image in ("FIXED   =                  1.0 / a value in another column",
                  "HIERARCH ESO DET CHIP = 5 / a HIERARCH card",
                  "UNDEF   =  / an undefined value",
                  "DUP     =                    1 / first",
                  "DUP     =                    2 / second"):
        header.append(fits.Card.fromstring(image), useblanks=False)
    return header


def assert_same_cards(got: fits.Header, want: fits.Header):
    assert len(got) == len(want)
    for a, b in zip(got.cards, want.cards, strict=True):
        assert (a.keyword, a.image, a.comment) == (b.keyword, b.image, b.comment)
        assert repr(a.value) == repr(b.value)
    assert got.tostring() == want.tostring()


def test_every_card_round_trips(tmp_path):
    hdrs = read_input_headers(TEMPLATE)
    hdrs = InputHeaders(awkward_cards(hdrs.primary),
                        {v: awkward_cards(h) for v, h in hdrs.chips.items()})
    path = write_input_headers(hdrs, tmp_path / "h" / "ib4606c5q_flc.json")
    got = load_input_headers(path)
    assert_same_cards(got.primary, hdrs.primary)
    assert sorted(got.chips) == sorted(hdrs.chips) == [1, 2]
    for extver in hdrs.chips:
        assert_same_cards(got.chips[extver], hdrs.chips[extver])
    assert got.primary["LONGSTR"] == "x" * 150 + " y"  # astropy's value, as from a file
    assert got.primary.comments["LONGSTR"] == hdrs.primary.comments["LONGSTR"]
    assert list(got.primary["HISTORY"]) == list(hdrs.primary["HISTORY"])
    assert got.primary["ESO DET CHIP"] == 5 and got.primary[("DUP", 1)] == 2
    # plain JSON, one card image a line, no trailing blanks
    data = json.loads(path.read_text())
    assert data["format"] == HEADERS_FORMAT and set(data["chips"]) == {"1", "2"}
    assert all(len(c) <= 80 and c == c.rstrip() for c in data["primary"])
    assert path.stat().st_size < sum(len(h.tostring()) for h in (hdrs.primary,
                                                                 *hdrs.chips.values()))


def test_file_is_written_whole_with_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        path = write_input_headers(read_input_headers(TEMPLATE), tmp_path / "a.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no .part left behind


def test_the_exposure_is_read_once_into_its_file(tmp_path):
    path = tmp_path / "ib4606c5q_flc.json"
    hdrs = write_exposure_headers(TEMPLATE, path)
    assert hdrs.primary.tostring() == read_input_headers(TEMPLATE).primary.tostring()
    assert load_input_headers(path).chips[2].tostring() == hdrs.chips[2].tostring()


@pytest.mark.parametrize("content", [None, b"", b"not a FITS file at all" * 10])
def test_a_rejected_file_gets_a_file_without_headers(tmp_path, content):
    exposure = tmp_path / "ib4606c5q_flc.fits"
    if content is not None:
        exposure.write_bytes(content)
    out = tmp_path / "ib4606c5q_flc.json"
    assert write_exposure_headers(exposure, out, required=False) is None
    assert json.loads(out.read_text()) == {"format": HEADERS_FORMAT, "primary": None,
                                           "chips": {}}
    assert load_input_headers(out) is None
    # an accepted exposure's headers must be there
    out.unlink()
    with pytest.raises(OSError, match="ib4606c5q_flc.fits"):
        write_exposure_headers(exposure, out, required=True)
    assert not out.exists()


def test_a_readable_rejected_file_keeps_its_headers(tmp_path):
    exposure = tmp_path / "x_flt.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("TELESCOP", "JWST")])),
                  fits.ImageHDU(np.zeros((2, 2), np.float32), name="SCI")]).writeto(exposure)
    out = tmp_path / "x_flt.json"
    write_exposure_headers(exposure, out, required=False)
    got = load_input_headers(out)
    assert got.primary["TELESCOP"] == "JWST" and list(got.chips) == [1]


def test_not_a_headers_file(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"file": "a screen record"}')
    with pytest.raises(ValueError, match="r.json is not an input headers file"):
        load_input_headers(bad)


def record(name, file=None):
    return ExposureRecord(file=file or f"/elsewhere/{name}", accepted=True, filename=name)


def test_member_headers_by_file_name(tmp_path):
    a = write_exposure_headers(TEMPLATE, tmp_path / "ib4606c5q_flc.json")
    write_input_headers(None, tmp_path / "ib4606c6q_flc.json")
    recs = [record("ib4606c5q_flc.fits")]
    got = member_headers(recs, [tmp_path / "ib4606c5q_flc.json"])
    assert list(got) == ["ib4606c5q_flc.fits"]
    assert got["ib4606c5q_flc.fits"].primary.tostring() == a.primary.tostring()
    with pytest.raises(ValueError, match="is not that of ib4606c5q_flc.fits"):
        member_headers(recs, [tmp_path / "ib4606c6q_flc.json"])
    with pytest.raises(ValueError, match="holds no headers"):
        member_headers([record("ib4606c6q_flc.fits")], [tmp_path / "ib4606c6q_flc.json"])
    with pytest.raises(ValueError):  # not one file per record
        member_headers(recs, [])


def test_headers_of_records_uses_only_the_given_headers_by_name(tmp_path, caplog):
    """The records' files are there, but only the given headers are used, looked up by input
    name or by the record's file name; an input without any is named in a warning."""
    exposure = tmp_path / "ib4606c5q_flc.fits"
    exposure.write_bytes(TEMPLATE.read_bytes())
    recs = [record("ib4606c5q_flc.fits", str(exposure)), record("ib4606c6q_flc.fits")]
    files = [r.filename for r in recs]
    assert headers_of_records(files, recs) == {}
    assert not caplog.records  # nothing given: record-only keywords, as asked
    hdrs = read_input_headers(TEMPLATE)
    # by input name, or by the record's file name when the inputs are paths
    got = headers_of_records(["/p/ib4606c5q_flc.fits", "/p/ib4606c6q_flc.fits"], recs,
                             {"ib4606c5q_flc.fits": hdrs})
    assert got == {"/p/ib4606c5q_flc.fits": hdrs}
    assert "ib4606c6q_flc.fits" in caplog.text  # given, but not for every input
