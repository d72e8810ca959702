"""Trailers (``<rootname>_trl.txt``): the product's summary and its job's log, without the
log's wall-clock times, so that a rerun writes identical trailers."""

import logging
import re

from mvmflow.products import write_trailer
from mvmflow.provenance import TRAILER_KEYS, trailer_lines, untimed
from mvmflow.workflow import rule_logging

PRODUCT = "hst_skycell-p0081x14y14_wfc3_uvis_f606w_all_drc.fits"
TRAILER = "hst_skycell-p0081x14y14_wfc3_uvis_f606w_all_trl.txt"
HEADER = {"NUMEXP": 4, "NDRIZIM": 8, "MEANEXPT": 350.5, "CFGDGST": "ab" * 32, "OTHER": 1}
TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def _layer_log(path):
    """A log as a layer job writes it (through rule_logging), with a multi-line message."""
    with rule_logging(path):
        log = logging.getLogger("mvmflow")
        log.info("sky offset %s: %.6g e-/s per pixel", "ib2v01abq_flc.fits", 0.0123)
        logging.getLogger("mvmflow.products").warning("two lines\n  the second at "
                                                      "2021-01-01 00:00:00")
        log.info("wrote %s (%d x %d, %d inputs)", PRODUCT, 100, 200, 4)
    return path.read_text()


def test_log_records_start_with_a_time_the_trailer_drops(tmp_path):
    text = _layer_log(tmp_path / "layer.log")
    records = text.splitlines()
    assert len(records) == 4 and all(TIME.match(r) for r in (records[0], records[1], records[3]))
    assert [untimed(r) for r in records] == [
        "INFO mvmflow: sky offset ib2v01abq_flc.fits: 0.0123 e-/s per pixel",
        "WARNING mvmflow.products: two lines",
        "  the second at 2021-01-01 00:00:00",  # a message's own text stays whole
        f"INFO mvmflow: wrote {PRODUCT} (100 x 200, 4 inputs)",
    ]


def test_trailers_of_logs_differing_only_in_times_are_identical(tmp_path):
    text = _layer_log(tmp_path / "layer.log")
    # the same log written at another time
    later = re.sub(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} ",
                   "2031-12-24 23:59:58,999 ", text, flags=re.M)
    assert later != text
    a = write_trailer(tmp_path / "a" / TRAILER, PRODUCT, trailer_lines(PRODUCT, HEADER, text))
    b = write_trailer(tmp_path / "b" / TRAILER, PRODUCT, trailer_lines(PRODUCT, HEADER, later))
    assert a.read_bytes() == b.read_bytes()
    lines = a.read_text().splitlines()
    assert lines[:5] == [f"# mvmflow trailer of {PRODUCT}", PRODUCT, "NUMEXP = 4",
                         "NDRIZIM = 8", "MEANEXPT = 350.5"]
    assert f"CFGDGST = {'ab' * 32}" in lines and "OTHER = 1" not in lines
    assert "INFO mvmflow: sky offset ib2v01abq_flc.fits: 0.0123 e-/s per pixel" in lines
    assert not any(TIME.match(line) for line in lines)


def test_trailer_without_a_log():
    assert trailer_lines(PRODUCT, {"NUMEXP": 1}) == [PRODUCT, "NUMEXP = 1"]
    assert set(TRAILER_KEYS) >= {"NUMEXP", "CFGDGST"}


def test_warnings_and_printed_output_go_to_the_log_not_the_terminal(tmp_path, capsys):
    """A job's warnings (astropy's among them) and prints land in its log file: the run's
    terminal stays quiet (docs/terminal_output.md)."""
    import sys
    import warnings

    from astropy.io import fits

    path = tmp_path / "job.log"
    with rule_logging(path):
        warnings.warn("a library warning", UserWarning, stacklevel=1)
        print("printed by a library")
        print("to stderr", file=sys.stderr)
        fits.Card("D001OUDA", "x" * 66, "a comment that cannot fit").image  # noqa: B018
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    text = path.read_text()
    for line in ("a library warning", "printed by a library", "to stderr",
                 "Card is too long"):
        assert line in text, line
