"""Tests of mvmflow.poller against the spec (grid_and_names.md section 4, test vector 7)."""

import argparse
import os
from pathlib import Path

import pytest
from astropy.io import fits

from mvmflow import poller
from mvmflow.poller import (
    MissingInputWarning,
    PollerRow,
    format_poller,
    locate_input,
    make_poller,
    parse_poller,
    poller_skycell,
    read_poller,
    row_from_header,
    row_from_record,
    write_poller,
)
from mvmflow.records import ExposureRecord

SC = "skycell-p0081x14y14"
IR = {"INSTRUME": "WFC3", "PROPOSID": 11360, "EXPTIME": 602.937, "FILTER": "F160W",
      "DETECTOR": "IR", "ROOTNAME": "ib2v01abq"}
ACS_POL = {"INSTRUME": "ACS", "PROPOSID": 9442, "EXPTIME": 30.0, "FILTER1": "POL0UV",
           "FILTER2": "F435W", "DETECTOR": "WFC", "ROOTNAME": "j8cw03f6q"}
ACS_POL60 = {"INSTRUME": "ACS", "PROPOSID": 9442, "EXPTIME": 1000.0, "FILTER1": "F606W",
             "FILTER2": "POL60V", "DETECTOR": "WFC", "ROOTNAME": "j8cw03f2q"}


def write_fits(path: Path, cards: dict) -> Path:
    """A primary-header-only FITS file with ``cards``."""
    hdr = fits.Header()
    for key, value in cards.items():
        hdr[key] = value
    fits.PrimaryHDU(header=hdr).writeto(path)
    return path


# ------------------------------------------------------------------------------------------
# lines (spec 4.1, vector 7)


def test_vector7_mvm_line_from_header(tmp_path):
    """Spec vector 7: the exact MVM line of the WFC3/IR F160W FLT."""
    path = tmp_path / "ib2v01abq_flt.fits"
    row = row_from_header(path, IR, kind="mvm", skycell=SC)
    assert row.to_line() == (
        f"ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,{SC},NEW,{path}"
    )
    assert row.kind == "mvm" and row.is_new and row.exptime_value == 602.937


def test_relative_path_written_absolute(tmp_path, monkeypatch):
    """The last column is the absolute path even for a relative input path."""
    monkeypatch.chdir(tmp_path)
    row = row_from_header("ib2v01abq_flt.fits", IR, kind="svm")
    assert row.path == f"{tmp_path}/ib2v01abq_flt.fits" and os.path.isabs(row.path)
    assert row.to_line().split(",")[0] == "ib2v01abq_flt.fits"


def test_vector7_acs_polarizer_filter_column(tmp_path):
    """Spec vector 7 / 4.1: ACS FILTER1=POL0UV FILTER2=F435W gives column 6 F435W-POL0UV."""
    path = tmp_path / "j8cw03f6q_flc.fits"
    row = row_from_header(path, ACS_POL, kind="mvm", skycell=SC)
    assert row.to_line() == (
        f"j8cw03f6q_flc.fits,9442,8CW,03,30.0,F435W-POL0UV,WFC,{SC},NEW,{path}"
    )
    assert row.filter_name == "f435w-pol0uv"


def test_svm_lines_from_header(tmp_path):
    """Spec 4.1 verified SVM lines: 8 columns, no sky cell and no NEW/OLD."""
    ir = row_from_header(tmp_path / "ib2v01abq_flt.fits", IR, kind="svm")
    acs = row_from_header(tmp_path / "j8cw03f2q_flc.fits", ACS_POL60, kind="svm")
    assert ir.kind == "svm"
    assert ir.to_line() == (
        f"ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,{tmp_path}/ib2v01abq_flt.fits"
    )
    assert acs.to_line() == (
        f"j8cw03f2q_flc.fits,9442,8CW,03,1000.0,F606W-POL60V,WFC,{tmp_path}/j8cw03f2q_flc.fits"
    )
    with pytest.raises(ValueError, match="lacks column"):
        ir.to_line("mvm")


def test_exptime_is_python_float_text(tmp_path):
    """Column 5 is str(float): 350 -> 350.0 (an integer card too, a documented difference)."""
    path = tmp_path / "ib2v01abq_flt.fits"
    assert row_from_header(path, {**IR, "EXPTIME": 350.0}, skycell=SC).exptime == "350.0"
    assert row_from_header(path, {**IR, "EXPTIME": 1000}, skycell=SC).exptime == "1000.0"
    assert row_from_header(path, {**IR, "EXPTIME": 0.1 + 0.2}, skycell=SC).exptime == (
        "0.30000000000000004")


def test_visit_from_rootname_not_linenum(tmp_path):
    """Spec 4.1: column 4 comes from ROOTNAME chars 5-6 even when PRIMESI == INSTRUME."""
    hdr = {**IR, "PRIMESI": "WFC3", "LINENUM": "07.001", "ROOTNAME": "ib2v04abq"}
    row = row_from_header(tmp_path / "ib2v01abq_flt.fits", hdr, skycell=SC)
    assert (row.program_id, row.obset_id) == ("B2V", "04")


def test_program_id_from_svm_style_name(tmp_path):
    """Spec 4.1: PPP and the visit come from the rootname token of an hst_ SVM name."""
    path = tmp_path / "hst_11360_01_wfc3_ir_f160w_ib2v01ab_flt.fits"
    hdr = {k: v for k, v in IR.items() if k != "ROOTNAME"}
    row = row_from_header(path, hdr, skycell=SC)
    assert row.to_line().startswith(
        "hst_11360_01_wfc3_ir_f160w_ib2v01ab_flt.fits,11360,B2V,01,602.937,F160W,IR,")


def test_row_from_header_errors(tmp_path):
    """MVM needs a sky cell; a missing keyword or bad sky cell is an error."""
    path = tmp_path / "ib2v01abq_flt.fits"
    with pytest.raises(ValueError, match="sky-cell"):
        row_from_header(path, IR, kind="mvm")
    with pytest.raises(ValueError, match="PROPOSID"):
        row_from_header(path, {k: v for k, v in IR.items() if k != "PROPOSID"}, skycell=SC)
    with pytest.raises(ValueError):
        row_from_header(path, IR, skycell="skycell-p0081x14y14x")
    with pytest.raises(ValueError, match="kind"):
        row_from_header(path, IR, kind="svn")


def test_row_from_record_matches_header_row(tmp_path):
    """A record gives the same line as the header; raw and normalised filters agree."""
    path = tmp_path / "j8cw03f2q_flc.fits"
    want = row_from_header(path, ACS_POL60, skycell=SC, status="OLD").to_line()
    for filt in ("F606W;POL60V", "f606w-pol60v"):
        rec = ExposureRecord(file=str(path), accepted=True, filename=path.name,
                             rootname="j8cw03f2q", detector="wfc", filter=filt,
                             exptime=1000.0, proposid="9442")
        assert row_from_record(rec, skycell=SC, status="OLD").to_line() == want
    assert want.endswith(f",{SC},OLD,{path}")


def test_row_validation():
    """Commas, bad status and non-numeric EXPTIME are refused when a row is built."""
    with pytest.raises(ValueError):
        PollerRow(filename="a,b_flt.fits")
    with pytest.raises(ValueError, match="NEW or OLD"):
        PollerRow(filename="ib2v01abq_flt.fits", status="1")
    with pytest.raises(ValueError, match="not a number"):
        PollerRow(filename="ib2v01abq_flt.fits", exptime="long")
    assert PollerRow(filename="x_flt.fits", status="old").status == "OLD"


# ------------------------------------------------------------------------------------------
# files: no trailing newline, round trip


def _rows(tmp_path):
    return [
        row_from_header(tmp_path / "ib2v01abq_flt.fits", IR, skycell=SC),
        row_from_header(tmp_path / "j8cw03f6q_flc.fits", ACS_POL, skycell=SC, status="OLD"),
    ]


def test_write_poller_exact_bytes_no_trailing_newline(tmp_path):
    """Spec 4.1/8.4: lines joined by \\n, no header, no trailing newline."""
    out = tmp_path / f"{SC}_input.out"
    write_poller(_rows(tmp_path), out)
    assert out.read_bytes() == (
        f"ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,{SC},NEW,{tmp_path}/ib2v01abq_flt.fits\n"
        f"j8cw03f6q_flc.fits,9442,8CW,03,30.0,F435W-POL0UV,WFC,{SC},OLD,{tmp_path}/j8cw03f6q_flc.fits"
    ).encode()
    assert format_poller([]) == ""


def test_round_trip(tmp_path):
    """write -> read gives the same rows, MVM and SVM; rewriting gives the same bytes."""
    rows = _rows(tmp_path)
    out = tmp_path / "mvm.out"
    write_poller(rows, out)
    back = read_poller(out)
    assert back == rows
    assert [r.kind for r in back] == ["mvm", "mvm"]
    write_poller(back, tmp_path / "again.out")
    assert (tmp_path / "again.out").read_bytes() == out.read_bytes()
    svm = [row_from_header(tmp_path / "ib2v01abq_flt.fits", IR, kind="svm")]
    write_poller(svm, tmp_path / "svm.out")
    assert read_poller(tmp_path / "svm.out") == svm
    assert read_poller(tmp_path / "svm.out")[0].obset_id == "01"  # stays text


def test_read_tolerates_trailing_newline_and_blanks(tmp_path):
    """A trailing newline, blank lines, spaces around fields and lower-case new are read."""
    text = (f"ib2v01abq_flt.fits, 11360,B2V,01,602.937,F160W,IR,{SC},new,/d/ib2v01abq_flt.fits\n"
            "\n"
            f"ib2v01acq_flt.fits,11360,B2V,01,10.0,F160W,IR,{SC},Old,/d/ib2v01acq_flt.fits\n")
    rows = parse_poller(text)
    assert [(r.filename, r.proposid, r.status) for r in rows] == [
        ("ib2v01abq_flt.fits", "11360", "NEW"), ("ib2v01acq_flt.fits", "11360", "OLD")]
    assert [r.is_new for r in rows] == [True, False]


def test_read_file_list(tmp_path):
    """A 1-column list of file names is read as rows without kind."""
    out = tmp_path / "list.txt"
    out.write_text("ib2v01abq_flt.fits\nj8cw03f6q_flc.fits\n")
    rows = read_poller(out)
    assert [r.filename for r in rows] == ["ib2v01abq_flt.fits", "j8cw03f6q_flc.fits"]
    assert [r.kind for r in rows] == [None, None]
    assert format_poller(rows) == "ib2v01abq_flt.fits\nj8cw03f6q_flc.fits"
    assert read_poller(tmp_path / "list.txt") == rows
    (tmp_path / "empty.out").write_text("")
    assert read_poller(tmp_path / "empty.out") == []


@pytest.mark.parametrize("line, match", [
    (f"f_flt.fits,1,B2V,01,1.0,F160W,IR,{SC},0,/d/f_flt.fits", r"line 1: column 9.*'0'.*0/1"),
    (f"f_flt.fits,1,B2V,01,1.0,F160W,IR,{SC},YES,/d/f_flt.fits", "NEW or OLD"),
    (f"f_flt.fits,1,B2V,01,1.0,F160W,IR,{SC}x,NEW,/d/f_flt.fits", "column 8"),
    (f"f_flt.fits,1,B2V,01,x,F160W,IR,{SC},NEW,/d/f_flt.fits", "column 5"),
    (f"f_flt.fits,1,B2V,01,1.0,F160W,IR,{SC},/d/f_flt.fits", "has 9 columns"),
    (f"f_flt.fits,1,B2V,01,1.0,,IR,{SC},NEW,/d/f_flt.fits", r"column\(s\) \[6\]"),
])
def test_read_errors_name_file_and_line(tmp_path, line, match):
    """Malformed lines are ValueErrors naming the file and the line."""
    out = tmp_path / "bad.out"
    out.write_text(line)
    with pytest.raises(ValueError, match=match) as err:
        read_poller(out)
    assert str(out) in str(err.value) and "line 1" in str(err.value)


def test_read_mixed_column_counts(tmp_path):
    """Lines with different column counts are refused."""
    text = f"a_flt.fits,1,B2V,01,1.0,F160W,IR,{SC},NEW,/d/a_flt.fits\nb_flt.fits"
    with pytest.raises(ValueError, match="line 2: has 1 columns but earlier lines have 10"):
        parse_poller(text)


def test_poller_skycell_first_row_governs(tmp_path):
    """Spec 7.6: the first row's sky cell governs; other cells are warned about."""
    rows = _rows(tmp_path)
    assert poller_skycell(rows) == SC
    other = row_from_header(tmp_path / "ib2v01acq_flt.fits", IR, skycell="skycell-p0081x15y14")
    with pytest.warns(UserWarning, match="skycell-p0081x15y14 are ignored"):
        assert poller_skycell(rows + [other]) == SC
    with pytest.raises(ValueError, match="not an MVM poller"):
        poller_skycell([row_from_header(tmp_path / "ib2v01abq_flt.fits", IR, kind="svm")])


# ------------------------------------------------------------------------------------------
# locating inputs and making pollers from files


def test_make_poller_from_files(tmp_path, monkeypatch):
    """Real FITS headers give the vector 7 lines; rootnames prefer FLC; missing warns."""
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    (data / "j8cw" / "j8cw03f6q").mkdir(parents=True)
    write_fits(tmp_path / "ib2v01abq_flt.fits", IR)
    write_fits(data / "j8cw" / "j8cw03f6q" / "j8cw03f6q_flt.fits", ACS_POL)
    write_fits(data / "j8cw" / "j8cw03f6q" / "j8cw03f6q_flc.fits", ACS_POL)
    with pytest.warns(MissingInputWarning, match="nothere_flt.fits"):
        rows = make_poller(["ib2v01abq_flt.fits", "nothere_flt.fits", "J8CW03F6Q"], "mvm", SC,
                           search_path=str(data))
    assert format_poller(rows) == (
        f"ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,{SC},NEW,{tmp_path}/ib2v01abq_flt.fits\n"
        f"j8cw03f6q_flc.fits,9442,8CW,03,30.0,F435W-POL0UV,WFC,{SC},NEW,"
        f"{data}/j8cw/j8cw03f6q/j8cw03f6q_flc.fits"
    )
    with pytest.raises(ValueError, match="sky-cell"):
        make_poller(["ib2v01abq_flt.fits"], "mvm")
    with pytest.raises(ValueError, match="SVM"):
        make_poller(["ib2v01abq_flt.fits"], "svm", skycell=SC)


def test_locate_input(tmp_path, monkeypatch):
    """Relative paths become absolute; a bare name under the search path is found."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    write_fits(tmp_path / "sub" / "ib2v01abq_flt.fits", IR)
    write_fits(tmp_path / "elsewhere" / "ib2v01acq_flt.fits", IR)
    assert locate_input("sub/ib2v01abq_flt.fits") == tmp_path / "sub" / "ib2v01abq_flt.fits"
    assert locate_input("ib2v01abq_flt.fits") is None  # not in cwd, no search path
    found = locate_input("ib2v01acq_flt.fits", [tmp_path / "sub", tmp_path / "elsewhere"])
    assert found == tmp_path / "elsewhere" / "ib2v01acq_flt.fits"
    assert locate_input("ib2v01acq", os.pathsep.join(["sub", "elsewhere"])) == found
    assert locate_input("sub/missing_flt.fits") is None
    assert locate_input("  ") is None


def test_cli_writes_default_poller(tmp_path, monkeypatch, capsys):
    """`mvmflow poller` writes <skycell>_input.out with NEW and OLD rows, no newline at end."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_PATH", raising=False)
    write_fits(tmp_path / "ib2v01abq_flt.fits", IR)
    write_fits(tmp_path / "j8cw03f6q_flc.fits", ACS_POL)
    parser = argparse.ArgumentParser()
    poller.add_poller_arguments(parser)
    args = parser.parse_args(["ib2v01abq_flt.fits", "--skycell", SC, "--old",
                              "j8cw03f6q_flc.fits", "missing_flt.fits"])
    assert poller.run_poller(args) == 0
    text = (tmp_path / f"{SC}_input.out").read_text()
    assert text.splitlines()[0].endswith(f",{SC},NEW,{tmp_path}/ib2v01abq_flt.fits")
    assert text.splitlines()[1].endswith(f",{SC},OLD,{tmp_path}/j8cw03f6q_flc.fits")
    assert not text.endswith("\n") and len(text.splitlines()) == 2
    assert "missing_flt.fits" in capsys.readouterr().err
    args.strict = True
    assert poller.run_poller(args) == 1
