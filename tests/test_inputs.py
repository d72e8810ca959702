"""Input forms: demo truth table, glob pattern, list file; keys and clear errors."""

from pathlib import Path

import pytest
from astropy.table import Table

from mvmflow.inputs import exposure_key, read_input_table, resolve_inputs, write_input_table


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_key():
    assert exposure_key("/a/b/ib2v01abq_flc.fits") == "ib2v01abq_flc"
    assert exposure_key("hst_11665_06_wfc3_ir_f110w_ib4606cp_flt.fits.gz") == (
        "hst_11665_06_wfc3_ir_f110w_ib4606cp_flt")


def test_glob(tmp_path):
    a = touch(tmp_path / "d" / "ib2v01abq_flc.fits")
    b = touch(tmp_path / "d" / "j8cw03f2q_flt.fits")
    touch(tmp_path / "d" / "notes.txt")
    table = resolve_inputs(str(tmp_path / "d" / "*_fl?.fits"))
    assert table == {"ib2v01abq_flc": str(a.resolve()), "j8cw03f2q_flt": str(b.resolve())}


def test_list_file_relative_paths_and_comments(tmp_path):
    a = touch(tmp_path / "data" / "ib2v01abq_flc.fits")
    lst = tmp_path / "inputs.txt"
    lst.write_text("# my exposures\n\ndata/ib2v01abq_flc.fits  # first\n")
    assert resolve_inputs(str(lst)) == {"ib2v01abq_flc": str(a.resolve())}


def test_list_file_missing_entry_names_line(tmp_path):
    lst = tmp_path / "inputs.txt"
    lst.write_text("nope_flc.fits\n")
    with pytest.raises(FileNotFoundError, match=r"inputs.txt, line 1: .*nope_flc.fits"):
        resolve_inputs(str(lst))


def test_duplicate_names_are_an_error(tmp_path):
    touch(tmp_path / "a" / "ib2v01abq_flc.fits")
    touch(tmp_path / "b" / "ib2v01abq_flc.fits")
    with pytest.raises(ValueError, match="share the name ib2v01abq_flc"):
        resolve_inputs(str(tmp_path / "*" / "*.fits"))


def test_nothing_matches(tmp_path):
    with pytest.raises(ValueError, match="matches no file"):
        resolve_inputs(str(tmp_path / "*.fits"))
    with pytest.raises(FileNotFoundError, match="neither"):
        resolve_inputs(str(tmp_path / "missing.txt"))


def test_demo_truth_table(tmp_path):
    a = touch(tmp_path / "demo" / "jabc01a1q_flc.fits")
    truth = tmp_path / "demo" / "truth" / "exposures.ecsv"
    truth.parent.mkdir()
    Table({"file": ["jabc01a1q_flc.fits"]}).write(truth, format="ascii.ecsv")
    assert resolve_inputs("demo", demo_truth=truth) == {"jabc01a1q_flc": str(a.resolve())}


def test_table_round_trip(tmp_path):
    table = {"a_flc": "/x/a_flc.fits", "b_flt": "/y/b_flt.fits"}
    write_input_table(table, tmp_path / "t.tsv")
    assert read_input_table(tmp_path / "t.tsv") == table


def test_mvm_poller_new_and_old_rows_are_inputs(tmp_path):
    """A 10-column MVM poller: both NEW and OLD rows are inputs; a row whose path is gone
    is found beside the poller file; a missing one names the row."""
    a = touch(tmp_path / "data" / "ib2v01abq_flt.fits")
    b = touch(tmp_path / "ib2v01acq_flt.fits")
    poller = tmp_path / "skycell-p0081x14y14_input.out"
    poller.write_text(
        f"ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,skycell-p0081x14y14,NEW,{a}\n"
        "ib2v01acq_flt.fits,11360,B2V,01,602.937,F160W,IR,skycell-p0081x14y14,OLD,"
        "/archive/gone/ib2v01acq_flt.fits")
    assert resolve_inputs(str(poller)) == {"ib2v01abq_flt": str(a.resolve()),
                                           "ib2v01acq_flt": str(b.resolve())}
    b.unlink()
    with pytest.raises(FileNotFoundError, match=r"input.out, row 2: .*ib2v01acq_flt.fits"):
        resolve_inputs(str(poller))


def test_svm_poller(tmp_path):
    a = touch(tmp_path / "ib2v01abq_flt.fits")
    poller = tmp_path / "svm_input.out"
    poller.write_text(f"ib2v01abq_flt.fits,11360,B2V,01,602.937,F160W,IR,{a}")
    assert resolve_inputs(str(poller)) == {"ib2v01abq_flt": str(a.resolve())}


def test_glob_matches_that_are_not_files_are_skipped_with_a_reason(tmp_path):
    """A directory or a dangling symbolic link the pattern matches, and a second file of one
    name, are recorded as skipped (the first of a name is used; issue 17)."""
    from mvmflow.inputs import check_inputs, read_input_table, read_skipped, write_input_table

    a = touch(tmp_path / "a" / "ib2v01abq_flc.fits")
    touch(tmp_path / "b" / "ib2v01abq_flc.fits")
    (tmp_path / "a" / "ib2v01acq_flc.fits").mkdir()
    (tmp_path / "a" / "ib2v01adq_flc.fits").symlink_to(tmp_path / "gone.fits")
    pattern = str(tmp_path / "*" / "*_fl?.fits")
    skipped = []
    assert resolve_inputs(pattern, skipped=skipped) == {"ib2v01abq_flc": str(a.resolve())}
    reasons = dict(skipped)
    assert reasons == {
        str(tmp_path / "a" / "ib2v01acq_flc.fits"): "not a regular file: a directory",
        str(tmp_path / "a" / "ib2v01adq_flc.fits"):
            f"dangling symbolic link: its target {tmp_path / 'gone.fits'} does not exist",
        str((tmp_path / "b" / "ib2v01abq_flc.fits").resolve()):
            f"same file name as {a.resolve()}, which is used (two inputs of one name would "
            "be ambiguous)",
    }
    check_inputs(pattern)  # the run starts: nothing above stops it
    # one table holds both: the inputs and, as rows without a key, the skipped names
    table = resolve_inputs(pattern, skipped=[])
    write_input_table(table, tmp_path / "inputs.tsv", skipped)
    assert read_input_table(tmp_path / "inputs.tsv") == table
    assert read_skipped(tmp_path / "inputs.tsv") == skipped
    with pytest.raises(ValueError, match="matches no file"):  # only names that are not files
        resolve_inputs(str(tmp_path / "a" / "ib2v01ac?_flc.fits"), skipped=[])
