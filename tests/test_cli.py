"""Tests of the ``mvmflow`` command line (mvmflow/cli.py)."""

import argparse
import shutil

import numpy as np
import pytest
from astropy.io import fits
from test_cutouts import DEC, RA, write_product

from mvmflow.cli import build_parser, main, sky_position

FINE = "hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits"
CUT_FINE = "hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w.fits"
CELLS_8492 = ["skycell-p0081x14y14", "skycell-p0081x14y15", "skycell-p0081x15y14",
              "skycell-p0081x15y15"]


# ------------------------------------------------------------------------------------------
# every option has a help text


def _actions(parser: argparse.ArgumentParser, where: str = "mvmflow"):
    """``(where, action)`` of every action of ``parser`` and its subcommands' parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        yield where, action
        if isinstance(action, argparse._SubParsersAction):
            for pseudo in action._choices_actions:  # the one-line help of each subcommand
                yield f"{where} {pseudo.dest}", pseudo
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{where} {name}")


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    actions = list(_actions(parser))
    commands = {where for where, _ in actions}
    assert {"mvmflow which-skycell", "mvmflow cut", "mvmflow mosaic", "mvmflow poller",
            "mvmflow simulate", "mvmflow combine", "mvmflow params", "mvmflow skycell"} <= commands
    options = {(where, s) for where, a in actions for s in a.option_strings}
    assert {("mvmflow mosaic", "--scale"), ("mvmflow mosaic", "--cores"),
            ("mvmflow which-skycell", "--frame")} <= options
    missing = [f"{where}: {'/'.join(a.option_strings) or a.dest}" for where, a in actions
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert missing == []


@pytest.mark.parametrize("command", ["which-skycell", "skycell", "simulate", "poller", "params",
                                     "cut", "combine", "mosaic"])
def test_help_of_each_command(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: mvmflow {command}")
    if command == "mosaic":
        assert "--cores N CPU cores snakemake may use (default: 2)" in out
        assert '--scale {auto,fine,coarse} pixel scale: auto' in out


# ------------------------------------------------------------------------------------------
# which-skycell


@pytest.mark.parametrize("ra, dec", [
    ("84.92", "-69.15"),
    ("84.92deg", "-69.15deg"),
    ("05:39:40.8", "-69:09:00"),
    ("5h39m40.8s", "-69d09m00s"),
    ("05 39 40.8", "-69 09 00"),
    ("84d55m12s", "-69.15"),
])
def test_which_skycell_reads_sexagesimal(ra, dec, capsys):
    assert main(["which-skycell", ra, dec]) == 0
    assert capsys.readouterr().out.split() == CELLS_8492
    assert sky_position(ra, dec) == pytest.approx((84.92, -69.15), abs=1e-12)


def test_which_skycell_readme_example_and_options_after(capsys):
    assert main(["which-skycell", "358.3", "-1.0"]) == 0
    assert capsys.readouterr().out.split() == ["skycell-p1232x18y15", "skycell-p1321x01y15"]
    assert main(["which-skycell", "05:39:40.8", "-69:09:00", "--frame", "icrs"]) == 0
    assert capsys.readouterr().out.split() == CELLS_8492
    assert main(["which-skycell", "--", "05:39:40.8", "-69:09:00"]) == 0  # -- ends options
    assert capsys.readouterr().out.split() == CELLS_8492


def test_which_skycell_frame(capsys):
    ra, dec = sky_position("84.92", "-69.15")
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    gal = SkyCoord(ra * u.deg, dec * u.deg).galactic
    glon, glat = repr(float(gal.l.deg)), repr(float(gal.b.deg))
    assert sky_position(glon, glat, "galactic") == pytest.approx((84.92, -69.15), abs=1e-9)
    assert sky_position(glon, glat, "icrs") != pytest.approx((84.92, -69.15), abs=1.0)
    assert main(["which-skycell", glon, glat, "--frame", "galactic"]) == 0
    assert capsys.readouterr().out.split() == CELLS_8492


@pytest.mark.parametrize("args, message", [
    (["400", "-69.15"], "RA 400 is outside [0, 360) degrees"),
    (["360", "0"], "RA 360 is outside [0, 360) degrees"),
    (["-0.5", "0"], "RA -0.5 is outside [0, 360) degrees"),
    (["24:00:00", "0"], "RA 24:00:00 (= 360 deg) is outside [0, 360) degrees"),
    (["84.92", "95"], "Dec 95 is outside [-90, 90] degrees"),
    (["84.92", "-90:30:00"], "Dec -90:30:00 (= -90.5 deg) is outside [-90, 90] degrees"),
    (["84.92", "nan"], "Dec 'nan' is not a finite number"),
    (["5h39x", "0"], "cannot read RA '5h39x'"),
])
def test_which_skycell_rejects_bad_positions(args, message, capsys):
    assert main(["which-skycell", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mvmflow which-skycell: error: ")
    assert message in err


def test_which_skycell_unknown_frame_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["which-skycell", "84.92", "-69.15", "--frame", "altaz"])
    assert stop.value.code == 2
    assert "invalid choice: 'altaz'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# cut


def test_cut_missing_renamed_and_good_files(tmp_path, capsys):
    good, *_ = write_product(tmp_path / FINE)
    other = tmp_path / "other"
    other.mkdir()
    renamed = other / "f160w_copy.fits"
    shutil.copy(good, renamed)
    missing = tmp_path / "missing_drz.fits"
    rc = main(["cut", str(missing), str(renamed), "--ra", str(RA), "--dec", str(DEC),
               "--size", "3", "-o", str(tmp_path / "renamed")])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.splitlines() == [f"mvmflow cut: {missing}: no such file"]
    assert captured.out.split() == [str(tmp_path / "renamed" / CUT_FINE)]
    assert main(["cut", str(good), "--ra", str(RA), "--dec", str(DEC), "--size", "3",
                 "-o", str(tmp_path / "good")]) == 0
    with fits.open(tmp_path / "renamed" / CUT_FINE) as a, \
            fits.open(tmp_path / "good" / CUT_FINE) as b:
        assert a["SCI"].data.shape == (75, 75)
        np.testing.assert_array_equal(a["SCI"].data, b["SCI"].data)
        np.testing.assert_array_equal(a["WHT"].data, b["WHT"].data)
        assert a[0].header["ORIG_FLE"] == "f160w_copy.fits"


def test_cut_reports_why_a_file_is_not_a_product(tmp_path, capsys):
    good, *_ = write_product(tmp_path / FINE)
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4), dtype=np.float32)).writeto(image)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"this is not FITS" * 300)
    rc = main(["cut", str(image), str(junk), str(tmp_path), str(good), "--ra", str(RA),
               "--dec", str(DEC), "--size", "3", "-o", str(tmp_path / "cuts")])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out.split() == [str(tmp_path / "cuts" / CUT_FINE)]
    err = captured.err.splitlines()
    assert err[0] == f"mvmflow cut: {image}: not a layer product: no SCI or WHT extension (it has PRIMARY)"
    assert err[1].startswith(f"mvmflow cut: {junk}: not a FITS file, or a corrupt one: ")
    assert err[2] == f"mvmflow cut: {tmp_path}: is a directory, not a FITS file"
    assert len(err) == 3


def test_cut_all_good_exits_zero_and_bad_size_is_a_usage_error(tmp_path, capsys):
    good, *_ = write_product(tmp_path / FINE)
    assert main(["cut", str(good), "--ra", str(RA), "--dec", str(DEC), "--size", "3", "2",
                 "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
    assert main(["cut", str(good), "--ra", str(RA), "--dec", str(DEC), "--size", "1", "2", "3",
                 "-o", str(tmp_path)]) == 2


# ------------------------------------------------------------------------------------------
# -- : snakemake's arguments for mosaic, the end of the options elsewhere


def test_double_dash(tmp_path, monkeypatch, capsys):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    exposure = tmp_path / "ib2v03acq_flc.fits"
    exposure.write_bytes(b"")
    assert main(["mosaic", str(exposure), "--outdir", str(tmp_path / "run"), "--cores", "3",
                 "--", "-n", "--quiet"]) == 0
    (cmd,) = calls
    assert cmd[cmd.index("--cores") + 1] == "3" and cmd[-2:] == ["-n", "--quiet"]
    capsys.readouterr()
    assert main(["skycell", "--", "skycell-p0081x14y14"]) == 0
    assert "SCELLID = 'p0081x14y14'" in capsys.readouterr().out
