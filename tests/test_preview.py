"""Layer previews, coverage and footprint maps, and the report's tables (mvmflow.preview)."""

from __future__ import annotations

import tracemalloc

import matplotlib.image as mpimg
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from mvmflow import preview
from mvmflow.grid import SkyCell
from mvmflow.records import ChipRecord, ExposureRecord

CELL = "skycell-p0081x14y14"


def _layer(path, sci, wht, ctx=None, **cards):
    """A layer product of ``sci``/``wht``/``ctx`` on a window of the sky cell's frame."""
    frame = SkyCell.from_name(CELL).frame.window(100, 200, sci.shape[1], sci.shape[0])
    hdus = [fits.PrimaryHDU()]
    hdus[0].header.update(cards)
    wcs = {k: v for k, v in frame.header().items() if not k.startswith("NAXIS")}
    for name, data in (("SCI", sci), ("WHT", wht), ("CTX", ctx)):
        if data is not None:
            hdu = fits.ImageHDU(data, name=name)
            hdu.header.update(wcs)
            hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)
    return path


def _block_mean(sci, wht, f):
    """The expected preview: mean of the covered, finite pixels of every f x f block."""
    ny, nx = sci.shape
    out = np.full((-(-ny // f), -(-nx // f)), np.nan)
    for j in range(out.shape[0]):
        for i in range(out.shape[1]):
            s = sci[j * f:(j + 1) * f, i * f:(i + 1) * f]
            w = wht[j * f:(j + 1) * f, i * f:(i + 1) * f]
            ok = (w > 0) & np.isfinite(s)
            if ok.any():
                out[j, i] = s[ok].mean()
    return out


def test_downsampled_layer_is_the_block_mean_of_covered_pixels(tmp_path):
    rng = np.random.default_rng(3)
    ny, nx = 95, 131  # not multiples of the block size: partial blocks at the edges
    sci = rng.normal(5, 2, (ny, nx)).astype(np.float32)
    wht = np.full((ny, nx), 100.0, np.float32)
    wht[:, :40] = 0  # uncovered on the left
    sci[:, :40] = 1e6  # what an uncovered pixel holds must not leak into the preview
    sci[50, 60] = np.nan  # a NaN among covered pixels is left out, not propagated
    ctx = np.zeros((ny, nx), np.int32)
    ctx[:, 40:] = 0b1
    ctx[:, 90:] = 0b1011  # three exposures
    path = _layer(tmp_path / "l.fits", sci, wht, ctx, EXPTIME=300.0)
    thumb = preview.read_downsampled(path, size=30)
    assert thumb.factor == 5 == preview.block_factor((ny, nx), 30)
    assert thumb.sci.shape == (19, 27)
    expected = _block_mean(sci, wht, 5)
    np.testing.assert_allclose(thumb.sci, expected, rtol=1e-6)
    assert np.isnan(thumb.sci[:, :8]).all() and np.isfinite(thumb.sci[:, 8:]).all()
    assert thumb.covered == ny * (nx - 40)
    assert thumb.nexp.max() == 3 and thumb.nexp[:, :8].max() == 0
    assert thumb.nexp[0, 17] == 1 and thumb.nexp[0, 18] == 3  # x 85-89: one; 90-94: three
    assert thumb.header["EXPTIME"] == 300.0


def test_context_planes_are_counted_over_all_planes(tmp_path):
    ny, nx = 20, 20
    ctx = np.zeros((2, ny, nx), np.int32)
    ctx[0] = -1  # bits 0..31: 32 exposures (the sign bit is one of them)
    ctx[1, :, 10:] = 0b101  # exposures 32 and 34 on the right half
    path = _layer(tmp_path / "l.fits", np.ones((ny, nx), np.float32),
                  np.ones((ny, nx), np.float32), ctx)
    thumb = preview.read_downsampled(path, size=10)
    assert thumb.nexp[:, :5].max() == 32 and (thumb.nexp[:, 5:] == 34).all()


def test_preview_wcs_follows_the_blocks(tmp_path):
    path = _layer(tmp_path / "l.fits", np.ones((90, 60), np.float32),
                  np.ones((90, 60), np.float32))
    thumb = preview.read_downsampled(path, size=30)
    full = WCS(fits.getheader(path, "SCI"))
    # the centre of block (0, 0) is pixel (1, 1) of the layer (0-based, 3 x 3 blocks)
    np.testing.assert_allclose(thumb.wcs.pixel_to_world_values(0, 0),
                               full.pixel_to_world_values(1, 1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(thumb.wcs.pixel_to_world_values(19, 29),
                               full.pixel_to_world_values(58, 88), rtol=0, atol=1e-10)


def test_reading_a_layer_holds_strips_not_the_array(tmp_path):
    """A 3000 x 3000 layer (36 MB an extension) is read a strip of rows at a time: the
    reader's own allocations stay far below one extension."""
    n = 3000
    sci = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
    path = _layer(tmp_path / "big.fits", sci, np.ones((n, n), np.float32),
                  np.ones((n, n), np.int32))
    del sci
    tracemalloc.start()
    try:
        thumb = preview.read_downsampled(path, size=300)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert thumb.factor == 10 and thumb.sci.shape == (300, 300)
    # strips of 10 rows (a few 240 kB arrays) and the 300 x 300 preview (1 MB in all); one
    # extension would be 36 MB
    assert peak < 4e6, f"peak {peak / 1e6:.1f} MB"


def _rgb(hexcolor):
    return np.array([int(hexcolor[i:i + 2], 16) / 255 for i in (1, 3, 5)])


def _share_of_colour(png, hexcolor):
    image = mpimg.imread(png)[..., :3]
    return np.mean(np.all(np.abs(image - _rgb(hexcolor)) < 1 / 255, axis=-1))


def test_preview_and_coverage_pngs(tmp_path):
    rng = np.random.default_rng(1)
    sci = rng.normal(1, 0.1, (200, 200)).astype(np.float32)
    wht = np.ones((200, 200), np.float32)
    wht[:100] = 0  # the lower half uncovered
    ctx = np.where(wht > 0, 0b11, 0).astype(np.int32)
    path = _layer(tmp_path / "hst_x_drc.fits", sci, wht, ctx, EXPTIME=10.0)
    stats = preview.layer_previews(path, tmp_path / "p.png", tmp_path / "c.png")
    assert stats["covered"] == 0.5 and stats["max_exposures"] == 2
    assert stats["factor"] == 1 and (stats["nx"], stats["ny"]) == (200, 200)
    # the uncovered half is drawn in the blank colour; a fully covered layer has none
    assert _share_of_colour(tmp_path / "p.png", preview.BLANK) > 0.05
    full = _layer(tmp_path / "full_drc.fits", sci, np.ones_like(wht), ctx)
    preview.layer_previews(full, tmp_path / "p2.png", tmp_path / "c2.png")
    assert _share_of_colour(tmp_path / "p2.png", preview.BLANK) == 0
    # the same layer gives the same bytes (no date in the PNG)
    preview.layer_previews(path, tmp_path / "p3.png", tmp_path / "c3.png")
    assert (tmp_path / "p.png").read_bytes() == (tmp_path / "p3.png").read_bytes()
    assert (tmp_path / "c.png").read_bytes() == (tmp_path / "c3.png").read_bytes()
    assert not list(tmp_path.glob(".*.part"))


def test_coverage_without_context_shows_the_weight(tmp_path):
    wht = np.zeros((50, 50), np.float32)
    wht[:, 25:] = 7.0
    path = _layer(tmp_path / "l.fits", np.ones((50, 50), np.float32), wht)
    thumb = preview.read_downsampled(path)
    assert thumb.nexp is None
    preview.write_coverage(thumb, tmp_path / "c.png")
    assert mpimg.imread(tmp_path / "c.png").shape[2] == 4


def test_stretch_limits_ignore_nan_and_survive_flat_or_empty_data():
    data = np.full((10, 10), np.nan)
    assert preview.stretch_limits(data) == (0.0, 1.0)
    data[:5] = 3.0
    lo, hi = preview.stretch_limits(data)
    assert lo == 3.0 and hi > lo
    data[5:] = np.arange(50).reshape(5, 10)
    lo, hi = preview.stretch_limits(data, (0, 100))
    assert (lo, hi) == (0.0, 49.0)


def test_footprint_map_draws_every_detector_and_filter(tmp_path):
    cell = SkyCell.from_name(CELL)
    frame = cell.frame
    wcs = frame.wcs

    def chip(x0, y0, w):
        xs, ys = [x0, x0 + w, x0 + w, x0], [y0, y0, y0 + w, y0 + w]
        ra, dec = wcs.wcs_pix2world(xs, ys, 0)
        return ChipRecord(1, [100, 100], np.column_stack([ra, dec]).tolist())

    records = [ExposureRecord(file="a", accepted=True, instrument="acs", detector="wfc",
                              filter="f814w", chips=[chip(100, 100, 2000)]),
               ExposureRecord(file="b", accepted=True, instrument="wfc3", detector="ir",
                              filter="f110w", chips=[chip(600, 700, 900)])]
    frames = {"fine": frame.window(50, 50, 2100, 2100)}
    out = preview.footprint_map(CELL, records, tmp_path / "fp.png", frames)
    image = mpimg.imread(out)
    assert image.shape[:2] == (700, 1400)
    # tab10's first two colours outline the two keys (sorted: ACS/WFC F814W, WFC3/IR F110W)
    for colour in ("#1f77b4", "#ff7f0e"):
        assert _share_of_colour(out, colour) > 0.0005


def test_screening_table_lists_rejected_with_reasons_escaped(tmp_path):
    acc = Table({"file": ["/d/ja1_flc.fits"], "instrument": ["acs"], "detector": ["wfc"],
                 "filter": ["f814w"], "sha256": ["x" * 64]})
    rej = Table({"file": ["/d/jbad_flt.fits", "/d/u_flt.fits"],
                 "reason": ["not a FITS file: <garbage>", "instrument WFPC2 is not supported"]})
    acc.write(tmp_path / "accepted.ecsv")
    rej.write(tmp_path / "rejected.ecsv")
    out = preview.screening_table(tmp_path / "accepted.ecsv", tmp_path / "rejected.ecsv",
                                  tmp_path / "s.html")
    text = out.read_text()
    assert "1 accepted, 2 rejected" in text
    assert "&lt;garbage&gt;" in text and "<garbage>" not in text
    assert text.index("jbad_flt.fits") < text.index("ja1_flc.fits")  # rejected first
    assert "/d/" not in text and "x" * 64 not in text  # names, not paths or checksums
    assert text.count("<tr>") == 4  # heading + 3 files


def test_align_and_layers_tables(tmp_path):
    Table({"file": ["ib1_flc.fits"], "status": ["unaligned"], "nmatches": [0],
           "rms_ra": [np.nan]}).write(tmp_path / "a.ecsv")
    text = preview.align_table(tmp_path / "a.ecsv", tmp_path / "a.html", CELL).read_text()
    assert f"Alignment of the exposures of {CELL}" in text
    assert "<td>unaligned</td><td>0</td><td></td>" in text
    stats = [{"layer": "hst_x_drc.fits", "nx": 10, "ny": 12, "covered": 0.25,
              "EXPTIME": 100.0}]
    text = preview.layers_table(stats, tmp_path / "l.html").read_text()
    assert "<td>hst_x_drc.fits</td><td>10</td><td>12</td><td>0.25</td><td>100</td>" in text


@pytest.mark.parametrize("shape,size,factor", [((21954, 21954), 1000, 22), ((999, 10), 1000, 1),
                                               ((1001, 10), 1000, 2)])
def test_block_factor(shape, size, factor):
    assert preview.block_factor(shape, size) == factor


def test_reading_in_part_strips_gives_the_same_preview(tmp_path, monkeypatch):
    """A very wide layer is read a few rows at a time (CHUNK_PIXELS): the same preview."""
    rng = np.random.default_rng(7)
    sci = rng.normal(size=(64, 90)).astype(np.float32)
    wht = (rng.random((64, 90)) > 0.2).astype(np.float32) * 3
    ctx = rng.integers(0, 8, (64, 90)).astype(np.int32)
    path = _layer(tmp_path / "l.fits", sci, wht, ctx)
    whole = preview.read_downsampled(path, size=10)
    monkeypatch.setattr(preview, "CHUNK_PIXELS", 200)  # 2 rows of 90 at a time
    parts = preview.read_downsampled(path, size=10)
    assert whole.factor == 9
    np.testing.assert_allclose(parts.sci, whole.sci, rtol=1e-12)
    np.testing.assert_allclose(parts.wht, whole.wht, rtol=1e-6)
    np.testing.assert_array_equal(parts.nexp, whole.nexp)
    np.testing.assert_allclose(whole.sci, _block_mean(sci, wht, 9), rtol=1e-5, atol=1e-6)
    # WHT: the block mean over the block's pixels (edge blocks are smaller)
    assert whole.wht[-1, -1] == pytest.approx(wht[63:, 81:].mean())
