"""REDUCE and layer products: combine_partials, write_layer, trailer, manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS

from mvmflow import combine, grid, products, tiles
from mvmflow.combine import combine_partials, context_planes
from mvmflow.headers import (
    InputHeaders,
    member_headers,
    read_input_headers,
    write_exposure_headers,
)
from mvmflow.names import LayerName, manifest_filename
from mvmflow.params import config_digest, layer_parameters, load_defaults, resolve_table
from mvmflow.records import ChipRecord, ExposureRecord
from mvmflow.sregion import region_polygons, s_region

ROOT = Path(__file__).resolve().parents[1]
SKYCELL = "skycell-p0081x14y14"
FRAME = grid.SkyCell(81, 14, 14).frame.window(1000, 2000, 60, 50)
LAYER = LayerName.for_skycell(SKYCELL, "wfc3", "uvis", "f606w", product_type="drc")
PARAMS = layer_parameters(
    resolve_table(load_defaults(ROOT / "config" / "detectors.yaml")), "wfc3_uvis", "f606w", 2.0
)


@dataclass
class FakePartial:
    """The Partial protocol of mvmflow.combine, as resample.py will provide it."""

    file: str
    ipppssoo: str
    exptime: float
    frame: grid.Frame
    box_x0: int
    box_y0: int
    flux: np.ndarray
    weight: np.ndarray
    nchips: np.ndarray | None = None


def ipp(k):
    return f"ib2v{k:04d}"


def make_partial(k, ix, iy, nx, ny, value, exptime, *, frame=FRAME, nchips=1):
    """Exposure k: constant (or array) count rate over a box at (ix, iy) of ``frame``."""
    weight = np.full((ny, nx), exptime, dtype=np.float32)
    data = np.broadcast_to(np.asarray(value, dtype=np.float64), (ny, nx))
    return FakePartial(
        file=f"/data/in/{ipp(k)}q_flc.fits", ipppssoo=ipp(k), exptime=float(exptime),
        frame=frame, box_x0=ix, box_y0=iy, flux=(weight * data).astype(np.float32),
        weight=weight, nchips=np.full((ny, nx), nchips, dtype=np.uint8),
    )


def make_record(k, exptime, proposid="11665", nchip=2):
    name = f"{ipp(k)}q_flc.fits"
    start = 55611.0 + 0.25 * k
    return ExposureRecord(
        file=f"/data/in/{name}", accepted=True, filename=name, rootname=f"{ipp(k)}q",
        ipppssoo=ipp(k), instrument="wfc3", detector="uvis", filter="f606w", ptype="flc",
        exptime=float(exptime), expstart=start, expend=start + exptime / 86400.0,
        date_obs="2011-02-19", proposid=proposid, photflam=1.8e-19 + k * 1e-21,
        photplam=5300.0, bunit="ELECTRONS", wcsname="IDC_2731450pi-FIT_SVM_GAIAeDR3",
        sha256=hashlib.sha256(name.encode()).hexdigest(), size=1000,
        chips=[ChipRecord(e, [2051, 4096], []) for e in range(1, nchip + 1)],
    )


def standard_layer():
    """Three overlapping exposures with known values and exposure times."""
    parts = [
        make_partial(0, 0, 0, 30, 40, 2.0, 100.0),
        make_partial(1, 20, 5, 30, 40, 4.0, 300.0),
        make_partial(2, 10, 30, 20, 15, 1.0, 200.0),
    ]
    recs = [make_record(0, 100.0), make_record(1, 300.0, "9999"), make_record(2, 200.0)]
    return parts, recs


def expected_mean(parts, frame=FRAME, sky=None):
    num = np.zeros(frame.shape)
    den = np.zeros(frame.shape)
    for p in parts:
        ix, iy = combine.placement(p, frame)
        ny, nx = p.weight.shape
        s = (sky or {}).get(p.file, 0.0)
        # sum(w (d - s)) = flux - s w; pixels without weight add nothing
        num[iy:iy + ny, ix:ix + nx] += p.flux.astype(np.float64) - s * p.weight
        den[iy:iy + ny, ix:ix + nx] += p.weight
    with np.errstate(invalid="ignore"):
        return np.where(den > 0, num / den, np.nan), den


# ------------------------------------------------------------------------- combine_partials


def test_sci_is_the_weighted_mean_and_wht_the_sum():
    parts, _ = standard_layer()
    arrays = combine_partials(parts, FRAME)
    sci, wht = expected_mean(parts)
    assert arrays.sci.dtype == np.float32 and arrays.wht.dtype == np.float32
    assert arrays.sci.shape == FRAME.shape
    np.testing.assert_allclose(arrays.sci, sci, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(arrays.wht, wht.astype(np.float32))
    # where all three overlap: (100*2 + 300*4 + 200*1) / 600
    assert arrays.sci[32, 22] == pytest.approx(1600.0 / 600.0, rel=1e-6)
    off = wht == 0
    assert off.any() and np.isnan(arrays.sci[off]).all() and (arrays.wht[off] == 0).all()
    assert np.isfinite(arrays.sci[~off]).all()


def test_sky_offsets_are_subtracted_per_exposure():
    parts, _ = standard_layer()
    sky = {parts[0].file: 0.5, parts[1].file: 1.5}
    arrays = combine_partials(parts, FRAME, sky)
    sci, _ = expected_mean(parts, sky=sky)
    np.testing.assert_allclose(arrays.sci, sci, rtol=1e-6, atol=1e-7, equal_nan=True)
    assert arrays.sky == (0.5, 1.5, 0.0)
    assert arrays.sci[10, 5] == pytest.approx(1.5)  # exposure 0 alone: 2.0 - 0.5


def test_context_bits_mark_contributing_exposures():
    parts, _ = standard_layer()
    parts[1].weight[10:12, 3:6] = 0  # a masked patch in exposure 1
    arrays = combine_partials(parts, FRAME)
    assert arrays.ctx.dtype == np.int32 and arrays.ctx.shape == FRAME.shape
    for k, p in enumerate(parts):
        ix, iy = combine.placement(p, FRAME)
        want = np.zeros(FRAME.shape, dtype=bool)
        want[iy:iy + p.weight.shape[0], ix:ix + p.weight.shape[1]] = p.weight > 0
        np.testing.assert_array_equal(arrays.context_bit(k), want)
        np.testing.assert_array_equal((arrays.ctx >> k) & 1 == 1, want)
    assert arrays.ctx[32, 22] == 0b111
    assert not arrays.context_bit(1)[15, 23]  # masked pixel (y 10+5, x 3+20)
    np.testing.assert_array_equal(arrays.nexp, sum(arrays.context_bit(k) for k in range(3)))


@pytest.mark.parametrize("as_generator", [False, True])
def test_more_than_32_exposures_use_two_context_planes(as_generator):
    n = 40
    parts = [make_partial(k, k, 0, 2, 3, 1.0 + k, 10.0) for k in range(n)]
    arrays = combine_partials((p for p in parts) if as_generator else parts, FRAME)
    assert context_planes(n) == 2
    assert arrays.ctx.shape == (2, *FRAME.shape) and arrays.ctx.dtype == np.int32
    # pixel x=31, y=0 is covered by exposures 30 and 31 (bit 31 makes int32 negative)
    assert arrays.ctx[0, 0, 31] == np.array(0xC0000000, dtype=np.uint32).view(np.int32)
    assert arrays.ctx[0, 0, 31] < 0 and arrays.ctx[1, 0, 31] == 0
    # pixel x=35: exposures 34 and 35 -> plane 1, bits 2 and 3
    assert arrays.ctx[0, 0, 35] == 0 and arrays.ctx[1, 0, 35] == 0b1100
    for k in (0, 31, 32, 39):
        assert arrays.context_bit(k)[0, k] and arrays.context_bit(k)[0, k + 1]
        assert not arrays.context_bit(k)[0, k + 2]
    assert arrays.nplanes == 2 and len(arrays.files) == n


def test_summation_order_is_bitwise_reproducible_and_order_independent_in_value():
    rng = np.random.default_rng(3)
    parts = [make_partial(k, 3 * k, 2 * k, 30, 30, rng.normal(5, 1, (30, 30)),
                          50.0 + 7 * k) for k in range(6)]
    a = combine_partials(parts, FRAME)
    b = combine_partials(list(parts), FRAME)
    for name in ("sci", "wht", "ctx", "nexp", "nchips", "exptime"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    r = combine_partials(parts[::-1], FRAME)
    np.testing.assert_allclose(r.sci, a.sci, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(r.wht, a.wht, rtol=1e-6)
    np.testing.assert_array_equal(r.nexp, a.nexp)
    # the context bits follow the order given
    np.testing.assert_array_equal(r.context_bit(0), a.context_bit(5))


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
def test_sums_do_not_depend_on_the_block_of_rows(monkeypatch, block):
    """The partials are added a block of rows at a time: any block gives the same bits as
    one block per partial, with sky offsets, masked and non-finite pixels, partials
    sticking out of the frame or off it, with and without ``nchips``."""
    rng = np.random.default_rng(5)
    parts = [make_partial(k, 9 * k - 6, 5 * k - 4, 31, 27, rng.normal(5, 1, (27, 31)),
                          50.0 + 7 * k, nchips=1 + k % 2) for k in range(7)]
    parts[1].weight[3:9, 4:11] = 0
    parts[2].flux[5, 5] = np.nan
    parts[3].nchips = None
    parts[4].nchips[:4] = 0
    parts[6].weight[9:] = 0  # its last rows without weight: still used
    parts.append(make_partial(7, 200, 200, 4, 4, 1.0, 10.0))  # outside the frame
    sky = {parts[0].file: 0.5, parts[5].file: -1.25}
    monkeypatch.setattr(combine, "_BLOCK_PIXELS", 1 << 30)
    whole = combine_partials(parts, FRAME, sky)
    monkeypatch.setattr(combine, "_BLOCK_PIXELS", block)
    got = combine_partials(parts, FRAME, sky)
    for name in ("sci", "wht", "ctx", "nexp", "nchips", "exptime"):
        assert getattr(got, name).tobytes() == getattr(whole, name).tobytes(), name
    assert got.used == whole.used == (True,) * 7 + (False,)
    # and the bits are right: a pixel of exposures 3 and 4 alone is their weighted mean
    y, x = 18, 45
    assert [k for k in range(8) if got.context_bit(k)[y, x]] == [3, 4]
    f = [p.flux[y - p.box_y0, x - p.box_x0] - sky.get(p.file, 0) * p.weight[y - p.box_y0,
         x - p.box_x0] for p in parts[3:5]]
    w = [p.weight[y - p.box_y0, x - p.box_x0] for p in parts[3:5]]
    assert got.sci[y, x] == np.float32((float(f[0]) + float(f[1])) / (float(w[0]) + float(w[1])))


def test_partials_are_clipped_to_the_frame_and_must_be_on_its_grid():
    inside = make_partial(0, 50, 40, 30, 30, 3.0, 10.0)  # sticks out right and top
    outside = make_partial(1, 100, 100, 5, 5, 9.0, 10.0)
    arrays = combine_partials([inside, outside], FRAME)
    assert np.isfinite(arrays.sci[40:, 50:]).all() and np.isnan(arrays.sci[:40]).all()
    assert arrays.files == (inside.file, outside.file)
    assert not arrays.context_bit(1).any()
    off = make_partial(2, 0, 0, 5, 5, 1.0, 1.0)
    off.frame = dataclasses.replace(FRAME, crpix1=FRAME.crpix1 + 0.5)
    with pytest.raises(ValueError, match="not pixel-aligned"):
        combine_partials([off], FRAME)
    # placed through its own frame: a partial drizzled onto a neighbouring window
    rel = make_partial(3, 0, 0, 5, 5, 1.0, 1.0, frame=FRAME.window(7, 8, 20, 20))
    arrays = combine_partials([rel], FRAME)
    assert np.isfinite(arrays.sci[8:13, 7:12]).all() and np.isnan(arrays.sci[:8]).all()
    with pytest.raises(ValueError, match="twice"):
        combine_partials([inside, inside], FRAME)


def test_coarse_frames_with_fractional_plane_origin():
    coarse = grid.SkyCell(81, 14, 14, "coarse").frame.window(10, 20, 30, 30)
    assert coarse.x0 != int(coarse.x0)
    p = make_partial(0, 4, 5, 10, 10, 2.0, 10.0, frame=coarse)
    arrays = combine_partials([p], coarse)
    assert np.isfinite(arrays.sci[5:15, 4:14]).all() and np.isnan(arrays.sci).sum() == 800


def coverage_stats(arrays, npix_total: int | None = None) -> dict[str, float]:
    """The footprint keywords of a layer held in memory, computed over the whole arrays: an
    independent check of the tiled statistics the headers get (mvmflow.tiles.summarize_tiles;
    docs/data_path.md). spec processing.md 1.5.

    Parameters
    ----------
    npix_total : int, optional
        Denominator of ``NPIXFRAC``. Default: the layer array's pixel count (the
        reference divides by the whole sky cell; spec section 8 lists that as a
        weakness). Pass ``SkyCell.frame.nx * ny`` to reproduce the reference.

    Returns
    -------
    dict
        ``NPIXFRAC`` (covered / total), ``MEANEXPT``, ``MEDEXPT`` (exposure time per
        covered pixel), ``MEANNEXP``, ``MEDNEXP`` (chips per covered pixel, the
        reference's definition), ``MEANWHT``, ``MEDWHT`` (over ``WHT > 0``). A pixel is
        covered when at least one chip footprint covers it. Empty sets give 0.
    """
    covered = arrays.nchips > 0
    total = int(npix_total) if npix_total is not None else int(covered.size)
    if total <= 0:
        raise ValueError(f"npix_total must be positive, got {npix_total!r}")
    ncov = int(np.count_nonzero(covered))
    out = {"NPIXFRAC": ncov / total}
    for key, arr, mask in (
        ("EXPT", arrays.exptime, covered),
        ("NEXP", arrays.nchips, covered),
        ("WHT", arrays.wht, arrays.wht > 0),
    ):
        vals = arr[mask].astype(np.float64)
        out["MEAN" + key] = float(vals.mean()) if vals.size else 0.0
        out["MED" + key] = float(np.median(vals)) if vals.size else 0.0
    return out


def known_coverage():
    """A: 10x10 at (0,0), 100 s; B: 10x10 at (5,0), 200 s (chips: 1 each)."""
    return [make_partial(0, 0, 0, 10, 10, 1.0, 100.0),
            make_partial(1, 5, 0, 10, 10, 1.0, 200.0)]


def tiled_stats(arrays, npix_total=None) -> dict[str, float]:
    """The footprint keywords as the product writer gets them (tile by tile)."""
    source = tiles.ArraysTile(arrays)
    summary = tiles.summarize_tiles(arrays.frame, [(source.box, source)], arrays.files)
    return summary.layer_summary([0.0] * len(arrays.files), [0.0] * len(arrays.files),
                                 npix_total).stats


@pytest.mark.parametrize("stats_of", [coverage_stats, tiled_stats], ids=["whole", "tiled"])
def test_coverage_statistics_on_a_known_configuration(stats_of):
    arrays = combine_partials(known_coverage(), FRAME)
    stats = stats_of(arrays)
    assert stats["NPIXFRAC"] == pytest.approx(150 / 3000)
    assert stats["MEANNEXP"] == pytest.approx(200 / 150)  # 50 px x 2 chips + 100 px x 1
    assert stats["MEDNEXP"] == 1.0
    assert stats["MEANEXPT"] == pytest.approx((50 * 100 + 50 * 300 + 50 * 200) / 150)
    assert stats["MEDEXPT"] == 200.0
    assert stats["MEANWHT"] == pytest.approx(200.0) and stats["MEDWHT"] == 200.0
    assert stats_of(arrays, npix_total=21954 ** 2)["NPIXFRAC"] == pytest.approx(150 / 21954 ** 2)
    # chip coverage, not weight: a chip with zero weight still counts as covered
    parts = known_coverage()
    parts[1].weight[:] = 0
    stats = stats_of(combine_partials(parts, FRAME))
    assert stats["MEANNEXP"] == pytest.approx(200 / 150) and stats["MEANWHT"] == 100.0


# ------------------------------------------------------------------------- S_REGION


def _inside_convex(poly, x, y):
    """True where (x, y) is inside or on the convex polygon (any orientation)."""
    n = len(poly)
    signs = []
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        signs.append((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1))
    signs = np.array(signs)
    return (signs >= -1e-6).all(axis=0) | (signs <= 1e-6).all(axis=0)


def parse_sregion(text, frame):
    polys = []
    for chunk in text.split("POLYGON ICRS")[1:]:
        vals = np.array(chunk.split(), dtype=float).reshape(-1, 2)
        x, y = frame.wcs.world_to_pixel_values(vals[:, 0], vals[:, 1])
        polys.append(np.column_stack([x, y]))
    return polys


def test_s_region_polygons_contain_all_the_data():
    sci = np.full(FRAME.shape, np.nan, dtype=np.float32)
    sci[3:20, 2:25] = 1.0
    sci[10:30, 20:28] = 1.0  # joined to the first region: an L shape
    sci[40:48, 45:58] = 1.0  # a separate region
    text = s_region(sci, FRAME)
    assert text.startswith("POLYGON ICRS ") and text.count("POLYGON ICRS") == 2
    polys = parse_sregion(text, FRAME)
    yy, xx = np.nonzero(np.isfinite(sci))
    inside = np.zeros(yy.size, dtype=bool)
    for poly in polys:
        inside |= _inside_convex(poly, xx.astype(float), yy.astype(float))
    assert inside.all()
    # the second polygon is the separate block: tight around it (pixel edges)
    lo, hi = polys[1].min(axis=0), polys[1].max(axis=0)
    np.testing.assert_allclose(lo, [44.5, 39.5], atol=1e-3)
    np.testing.assert_allclose(hi, [57.5, 47.5], atol=1e-3)
    assert s_region(np.full(FRAME.shape, np.nan), FRAME) == ""


def test_s_region_downsampling_of_large_arrays_still_contains_the_data():
    mask = np.zeros((3000, 2500), dtype=bool)
    mask[100:1700, 300:2100] = True
    mask[2900:2950, 10:40] = True
    polys = region_polygons(mask, max_blocks=256)
    assert len(polys) == 2
    yy, xx = np.nonzero(mask[::7, ::7])
    yy, xx = yy * 7.0, xx * 7.0
    inside = np.zeros(yy.size, dtype=bool)
    for poly in polys:
        inside |= _inside_convex(poly, xx, yy)
    assert inside.all()
    # close regions merge (merge_px), far ones do not
    near = np.zeros((50, 50), dtype=bool)
    near[5:20, 5:20] = near[5:20, 25:40] = True
    assert len(region_polygons(near, merge_px=11)) == 1
    assert len(region_polygons(near, merge_px=0)) == 2


# ------------------------------------------------------------------------- write_layer


def write(tmp_path, parts=None, recs=None, **kwargs):
    if parts is None:
        parts, recs = standard_layer()
    arrays = combine_partials(parts, FRAME, kwargs.pop("sky", None))
    path = tmp_path / LAYER.filename
    products.write_layer(path, arrays, FRAME, LAYER, recs, PARAMS, **kwargs)
    return path, arrays


def test_layer_file_structure_and_arrays(tmp_path):
    path, arrays = write(tmp_path)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT", "CTX", "HDRTAB"]
        assert hdul[0].data is None
        assert hdul["SCI"].data.dtype == np.dtype(">f4")
        assert hdul["WHT"].data.dtype == np.dtype(">f4")
        assert hdul["CTX"].data.dtype == np.dtype(">i4")
        np.testing.assert_array_equal(hdul["SCI"].data, arrays.sci)
        np.testing.assert_array_equal(hdul["WHT"].data, arrays.wht)
        np.testing.assert_array_equal(hdul["CTX"].data, arrays.ctx)
        assert isinstance(hdul["HDRTAB"], fits.BinTableHDU)


def test_sci_wcs_equals_the_frame_wcs(tmp_path):
    path, _ = write(tmp_path)
    with fits.open(path) as hdul:
        for ext in ("SCI", "WHT", "CTX"):
            w = WCS(hdul[ext].header)
            np.testing.assert_array_equal(w.wcs.crpix, FRAME.wcs.wcs.crpix)
            np.testing.assert_array_equal(w.wcs.crval, FRAME.wcs.wcs.crval)
            # FITS fixed-format reals keep 20 characters: CD agrees to ~1e-14 relative
            np.testing.assert_allclose(w.wcs.cd, FRAME.wcs.wcs.cd, rtol=1e-13, atol=0)
            assert list(w.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
            x = np.array([0.0, 59.0, 12.3])
            y = np.array([0.0, 49.0, 40.1])
            np.testing.assert_allclose(w.pixel_to_world_values(x, y),
                                       FRAME.wcs.pixel_to_world_values(x, y), rtol=0, atol=1e-11)
        sci = hdul["SCI"].header
        assert sci["ORIENTAT"] == 0.0
        assert (sci["CRVAL1"], sci["CRVAL2"]) == grid.ProjectionCell(81).crval
        assert sci["PCX0"] == FRAME.x0 and sci["PCELLID"] == 81
        # the same WCSNAME in SCI, WHT and CTX (the reference's WHT differs)
        names = {hdul[e].header["WCSNAME"] for e in ("SCI", "WHT", "CTX")}
        assert names == {"IDC_2731450pi-FIT_SVM_GAIAeDR3"}


def test_primary_header_keywords(tmp_path):
    parts, recs = standard_layer()
    path, arrays = write(tmp_path, parts, recs)
    h = fits.getheader(path, 0)
    assert h["FILENAME"] == LAYER.filename
    assert h["ROOTNAME"] == "hst_skycell-p0081x14y14_wfc3_uvis_f606w_all"
    assert h["HAPLEVEL"] == 4 and h["SCELLID"] == "p0081x14y14" and h["NEXTEND"] == 4
    assert h["INSTRUME"] == "WFC3" and h["DETECTOR"] == "UVIS" and h["FILTER"] == "F606W"
    assert h["EXPTIME"] == h["TEXPTIME"] == 600.0
    assert h["EXPSTART"] == 55611.0 and h["EXPEND"] == pytest.approx(55611.5 + 200 / 86400)
    assert h["DATE-BEG"] == Time(55611.0, format="mjd").isot == "2011-02-19T00:00:00.000"
    assert h["DATE-END"] == Time(h["EXPEND"], format="mjd").isot
    assert h["PROPOSID"] == "9999; 11665"  # sorted numerically, unique
    assert h["NUMEXP"] == 3 and h["NDRIZIM"] == 6
    assert h["DRIZPARS"] == LAYER.trailer == "hst_skycell-p0081x14y14_wfc3_uvis_f606w_all_trl.txt"
    stats = coverage_stats(arrays)
    for key in ("NPIXFRAC", "MEANEXPT", "MEDEXPT", "MEANNEXP", "MEDNEXP", "MEANWHT", "MEDWHT"):
        assert h[key] == pytest.approx(stats[key]), key
    assert "PHOTFLAM" not in h  # moved to SCI
    assert "DATE" not in h
    # one D### set per input chip, in HDRTAB order
    assert h["D001DATA"] == "ib2v0000q_flc.fits[sci,1]"
    assert h["D002DATA"] == "ib2v0000q_flc.fits[sci,2]"
    assert h["D006DATA"] == "ib2v0002q_flc.fits[sci,2]" and "D007DATA" not in h
    assert h["D003DEXP"] == 300.0
    assert h["D001KERN"] == "square" and h["D001PIXF"] == 1.0 and h["D001WTSC"] == 1.0
    assert h["D001OUUN"] == "cps" and h["D001FVAL"] == "INDEF"
    assert h["D001OUDA"] == h["D001OUWE"] == h["D001OUCO"] == LAYER.filename
    # provenance
    assert h["CFGDGST"] == config_digest(PARAMS)
    assert h["VMVMFLOW"] and h["VNUMPY"] == np.__version__
    assert h["NINPUTS"] == 3
    assert h["IN002NAM"] == "ib2v0001q_flc.fits"
    assert h["IN002SHA"] == recs[1].sha256


def test_sci_header_keywords(tmp_path):
    parts, recs = standard_layer()
    path, arrays = write(tmp_path, parts, recs)
    h = fits.getheader(path, "SCI")
    assert h["BUNIT"] == "ELECTRONS/S"
    assert h["PHOTFLAM"] == pytest.approx(np.mean([r.photflam for r in recs]))
    assert h["PHOTPLAM"] == 5300.0
    assert h["NCOMBINE"] == 3 and h["CCDCHIP"] == "-999"
    assert h["S_REGION"].startswith("POLYGON ICRS")
    polys = parse_sregion(h["S_REGION"], FRAME)
    yy, xx = np.nonzero(np.isfinite(arrays.sci))
    assert any(_inside_convex(p, xx.astype(float), yy.astype(float)).all() for p in polys)
    assert "DATE" not in h


def test_hdrtab_rows_and_columns(tmp_path):
    parts, recs = standard_layer()
    sky = {parts[1].file: 0.25}
    path, _ = write(tmp_path, parts, recs, sky=sky)
    tab = fits.getdata(path, "HDRTAB")
    names = tab.columns.names
    assert names[:6] == ["SVMROOTNAME", "GENDATE", "ROOTNAME", "EXTNAME", "EXTVER", "FILENAME"]
    assert names[-3:] == ["WCSNAME", "WCSTYPE", "HAPEXPNAME"]
    for col in ("EXPTIME", "EXPSTART", "EXPEND", "PHOTFLAM", "PHOTPLAM", "FILTER", "DETECTOR",
                "PROPOSID", "MDRIZSKY", "CTXBIT", "INSHA256"):
        assert col in names, col
    assert len(tab) == 6
    assert list(tab["ROOTNAME"]) == ["ib2v0000q"] * 2 + ["ib2v0001q"] * 2 + ["ib2v0002q"] * 2
    assert list(tab["EXTVER"]) == [1, 2] * 3 and set(tab["EXTNAME"]) == {"SCI"}
    assert list(tab["PROPOSID"]) == [11665, 11665, 9999, 9999, 11665, 11665]
    assert list(tab["MDRIZSKY"]) == [0.0, 0.0, 0.25, 0.25, 0.0, 0.0]
    assert list(tab["CTXBIT"]) == [0, 0, 1, 1, 2, 2]
    assert tab["HAPEXPNAME"][2] == LAYER.exposure("ib2v0001", "flc").rootname == (
        "hst_skycell-p0081x14y14_wfc3_uvis_f606w_all-ib2v0001")
    assert tab["INSHA256"][4] == recs[2].sha256
    assert tab["SVMROOTNAME"][0] == "ib2v0000q"


def _astropy_hdrtab_bytes(rows) -> bytes:
    """HDRTAB as astropy writes it (fits.Column, BinTableHDU.from_columns, writeto): what
    headers.hdrtab_bytes must give, byte for byte. The column formats are those of the
    values, decided as the product documents (L, K, D, else <n>A)."""
    import io

    from mvmflow.headers import _ALWAYS as always
    from mvmflow.headers import ALIGN_KEYWORDS, HDRTAB_KEYWORDS

    head = ["SVMROOTNAME", "GENDATE", "ROOTNAME", "EXTNAME", "EXTVER", "FILENAME"]
    tail = ["MDRIZSKY", "CTXBIT", "INSHA256", "WCSNAME", "WCSTYPE", "HAPEXPNAME"]
    tail += [k for k in ALIGN_KEYWORDS if k != "WCSNAME" and any(k in r.values for r in rows)]
    middle = [k for k in HDRTAB_KEYWORDS if k in always or any(k in r.values for r in rows)]
    cols = []
    for name in head + middle + tail:
        vals = [r.values.get(name) for r in rows]
        present = [v for v in vals if v is not None]
        if present and len(present) == len(vals) and all(isinstance(v, bool) for v in present):
            cols.append(fits.Column(name=name, format="L", array=np.array(vals, dtype=bool)))
        elif present and all(isinstance(v, int | float) and not isinstance(v, bool)
                             for v in present):
            if len(present) == len(vals) and all(isinstance(v, int) for v in present):
                cols.append(fits.Column(name=name, format="K", array=np.array(vals, np.int64)))
            else:
                cols.append(fits.Column(name=name, format="D", array=np.array(
                    [np.nan if v is None else float(v) for v in vals], np.float64)))
        else:
            text = ["" if v is None else str(v) for v in vals]
            width = max([1, *(len(t) for t in text)])
            cols.append(fits.Column(name=name, format=f"{width}A",
                                    array=np.array(text, dtype=f"U{width}")))
    hdu = fits.BinTableHDU.from_columns(cols, name="HDRTAB")
    hdu.header["EXTVER"] = 1
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()[2880:]


@pytest.mark.parametrize("case", ["layer", "odd"])
def test_hdrtab_bytes_are_astropys(tmp_path, case):
    """The HDRTAB written directly is astropy's bytes for the same table: a real layer's
    rows (with input headers) and rows with every kind of column, missing values, quotes,
    trailing blanks, one row and many."""
    from mvmflow.headers import ChipRow, hdrtab, hdrtab_bytes

    if case == "layer":
        parts, recs = standard_layer()
        path, _ = write(tmp_path, parts, recs, sky={parts[1].file: 0.25})
        tab = fits.getdata(path, "HDRTAB")
        rows = [ChipRow(str(t["FILENAME"]), int(t["EXTVER"]),
                        {n: (t[n].item() if hasattr(t[n], "item") else t[n])
                         for n in tab.columns.names}) for t in tab]
        for r in rows:
            r.values = {k: (str(v) if isinstance(v, str | np.str_) else v)
                        for k, v in r.values.items()}
        with fits.open(path) as hdul:
            raw = path.read_bytes()
            start = hdul.fileinfo(4)["hdrLoc"]
        assert raw[start:] == hdrtab_bytes(rows) == _astropy_hdrtab_bytes(rows)
        batches = [rows]
    else:
        rng = np.random.default_rng(3)
        batches = []
        for n in (1, 2, 7, 40):
            rows = []
            for k in range(n):
                v = {"FILENAME": f"j{k:08d}q_flc.fits", "ROOTNAME": f"j{k:08d}q",
                     "EXTVER": k % 2 + 1, "EXPTIME": float(rng.uniform(1, 500)),
                     "PROPOSID": 10000 + k, "PHOTFLAM": 1e-19 * (k + 1),
                     "TARGNAME": ("O'Brien field ", "", " a b  ", "   ")[k % 4],
                     "APERTURE": None if k % 2 else "WFC", "CCDCHIP": k % 2 == 0,
                     "MDRIZSKY": 0 if k % 4 else 0.5, "CTXBIT": k, "WCSNAME": "IDC_x",
                     "DATE-OBS": "2020-01-01", "NMATCHES": k if k % 5 else None}
                if k % 2:
                    v["EXPSTART"] = 58000.5 + k
                rows.append(ChipRow(v["FILENAME"], v["EXTVER"], v))
            got = hdrtab_bytes(rows)
            assert got == _astropy_hdrtab_bytes(rows), n
            assert len(got) % 2880 == 0
            batches.append(rows)
    for rows in batches:  # the HDU form reads back as the table
        tab = hdrtab(rows).data
        assert len(tab) == len(rows)
        assert list(tab["FILENAME"]) == [r.values["FILENAME"] for r in rows]
    with pytest.raises(ValueError, match="TARGNAME.*ASCII"):
        hdrtab_bytes([ChipRow("a", 1, {"FILENAME": "a", "TARGNAME": "M\u00e9"})])


def test_records_are_matched_by_file_and_missing_ones_are_named(tmp_path):
    parts, recs = standard_layer()
    path, _ = write(tmp_path, parts, recs[::-1])  # any order
    assert fits.getheader(path)["IN001NAM"] == "ib2v0000q_flc.fits"
    with pytest.raises(ValueError, match="ib2v0002q_flc.fits"):
        write(tmp_path, parts, recs[:2])


def test_input_headers_feed_the_merge_rules(tmp_path):
    """ACS-like inputs with headers: FILTER joined without CLEAR, MULTIPLE, zero, PINAME."""
    parts, recs = standard_layer()
    headers = {}
    for k, (p, r) in enumerate(zip(parts, recs, strict=True)):
        r.instrument, r.detector = "acs", "wfc"
        prim = fits.Header([
            ("DATE", f"2020-01-0{k + 1}"), ("TELESCOP", "HST"), ("INSTRUME", "ACS"),
            ("DETECTOR", "WFC"), ("FILTER1", "F606W"), ("FILTER2", "CLEAR2L"),
            ("APERTURE", "WFC" if k else "WFCENTER"), ("PA_V3", 123.0 + k),
            ("PR_INV_L", "Brown"), ("TARGNAME", f"T{k}"), ("EXPTIME", r.exptime),
            ("EXPSTART", r.expstart), ("EXPEND", r.expend), ("PROPOSID", 10000 + k % 2),
            ("CALIBSWI", "COMPLETE"),
        ])
        sci = fits.Header([("PHOTFLAM", 7e-20), ("PHOTMODE", "ACS WFC1 F606W"),
                           ("WCSNAME", "IDC_x-FIT"), ("CCDCHIP", 2), ("BUNIT", "ELECTRONS")])
        headers[p.file] = InputHeaders(prim, {1: sci, 2: sci.copy()})
    path, _ = write(tmp_path, parts, recs, input_headers=headers)
    h = fits.getheader(path)
    assert h["FILTER"] == "F606W" and h["FILTER2"] == "CLEAR2L"
    assert h["APERTURE"] == "MULTIPLE" and h["PA_V3"] == 0.0
    assert h["TARGNAME"] == "T0" and h["PINAME"] == "Brown" and h["TELESCOP"] == "HST"
    assert h["PROPOSID"] == "10000; 10001"
    assert "CALIBSWI" not in h and "DATE" not in h
    s = fits.getheader(path, "SCI")
    assert s["PHOTFLAM"] == 7e-20 and s["PHOTMODE"] == "ACS WFC1 F606W"
    assert s["WCSNAME"] == fits.getheader(path, "WHT")["WCSNAME"] == "IDC_x-FIT"
    tab = fits.getdata(path, "HDRTAB")
    assert list(tab["GENDATE"]) == ["2020-01-01"] * 2 + ["2020-01-02"] * 2 + ["2020-01-03"] * 2
    assert list(tab["CCDCHIP"]) == [2] * 6 and list(tab["FILTER"]) == ["F606W"] * 6


def test_read_input_headers(tmp_path):
    prim = fits.PrimaryHDU(header=fits.Header([("INSTRUME", "WFC3"), ("DATE", "2023-12-15")]))
    hdus = [prim] + [fits.ImageHDU(np.zeros((2, 2), np.float32), name=n, ver=v)
                     for n, v in (("SCI", 1), ("ERR", 1), ("DQ", 1), ("SCI", 2))]
    path = tmp_path / "ib4606c5q_flc.fits"
    fits.HDUList(hdus).writeto(path)
    got = read_input_headers(path)
    assert got.primary["INSTRUME"] == "WFC3" and sorted(got.chips) == [1, 2]
    bad = tmp_path / "bad_flc.fits"
    bad.write_text("not fits")
    with pytest.raises(OSError, match="bad_flc.fits"):
        read_input_headers(bad)


def test_rerun_is_byte_identical(tmp_path):
    a, _ = write(tmp_path / "a")
    b, _ = write(tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    # and something changes when an input changes (the comparison can fail)
    parts, recs = standard_layer()
    recs[0].sha256 = "0" * 64
    c, _ = write(tmp_path / "c", parts, recs)
    assert c.read_bytes() != a.read_bytes()
    text = a.read_bytes().decode("ascii", errors="replace")
    assert not re.search(r"DATE    =", text)


def test_no_wall_clock_date_anywhere(tmp_path):
    path, _ = write(tmp_path)
    today = Time.now().isot[:10]
    with fits.open(path) as hdul:
        for hdu in hdul:
            for card in hdu.header.cards:
                assert today not in str(card.value), card


def test_atomic_write_leaves_no_file_when_interrupted(tmp_path, monkeypatch):
    parts, recs = standard_layer()
    arrays = combine_partials(parts, FRAME)
    path = tmp_path / LAYER.filename

    def broken_write(f, *args, **kwargs):  # the headers are written, then the disk fills
        f.write(b"\0" * 100)
        raise OSError("disk full (simulated)")

    import mvmflow.tiles

    monkeypatch.setattr(mvmflow.tiles, "_write_pixels", broken_write)
    with pytest.raises(OSError, match="simulated"):
        products.write_layer(path, arrays, FRAME, LAYER, recs, PARAMS)
    assert list(tmp_path.iterdir()) == []
    # an existing product survives a failed rewrite untouched
    path.write_bytes(b"old product")
    with pytest.raises(OSError, match="simulated"):
        products.write_layer(path, arrays, FRAME, LAYER, recs, PARAMS)
    assert path.read_bytes() == b"old product" and list(tmp_path.iterdir()) == [path]


def test_product_names_come_from_names(tmp_path):
    parts, recs = standard_layer()
    arrays = combine_partials(parts, FRAME)
    with pytest.raises(ValueError, match="not the layer name"):
        products.write_layer(tmp_path / "x_drc.fits", arrays, FRAME, LAYER, recs, PARAMS)
    with pytest.raises(ValueError, match="not on the layer frame"):
        products.write_layer(tmp_path / LAYER.filename, arrays, FRAME.window(1, 0, 10, 10),
                             LAYER, recs, PARAMS)
    coarse = LayerName.for_skycell(SKYCELL, "wfc3", "ir", "f160w", scale="coarse")
    assert coarse.filename == "hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits"
    # a name given as text is parsed
    path = products.write_layer(tmp_path / LAYER.filename, arrays, FRAME, LAYER.filename,
                                recs, PARAMS)
    assert fits.getheader(path)["ROOTNAME"] == LAYER.rootname


# ------------------------------------------------------------------------- trailer, manifest


def test_trailer(tmp_path):
    lines = ["inputs: ib2v0001q_flc.fits", "MEANNEXP = 1", "sky matching: none"]
    path = products.write_trailer(tmp_path / LAYER.trailer, LAYER, lines)
    text = path.read_text()
    assert text.splitlines()[0] == f"# mvmflow trailer of {LAYER.filename}"
    assert text.splitlines()[1:] == lines
    with pytest.raises(ValueError, match="_trl.txt"):
        products.write_trailer(tmp_path / "other_trl.txt", LAYER, lines)


def test_manifest_keeps_product_order(tmp_path):
    fine = LayerName.for_skycell(SKYCELL, "wfc3", "ir", "f160w")
    coarse = LayerName.for_skycell(SKYCELL, "wfc3", "ir", "f160w", scale="coarse")
    uvis = LAYER
    entries = products.manifest_entries([uvis, coarse, fine])
    assert entries == [uvis.filename, uvis.trailer, coarse.filename, coarse.trailer,
                       fine.filename, fine.trailer]
    path = tmp_path / manifest_filename(SKYCELL)
    products.write_manifest(path, entries + [f"/some/dir/{uvis.filename}"])
    lines = path.read_text().splitlines()
    assert lines == entries  # order kept (not sorted), duplicate dropped, base names
    assert lines != sorted(lines)
    products.write_manifest(path, [])
    assert path.read_text() == ""
    with pytest.raises(ValueError, match="manifest"):
        products.write_manifest(tmp_path / "manifest.txt", entries)


def test_layer_with_more_than_32_inputs_writes_a_3d_context(tmp_path):
    n = 35
    parts = [make_partial(k, k, 0, 3, 4, 1.0, 10.0) for k in range(n)]
    recs = [make_record(k, 10.0, nchip=1) for k in range(n)]
    path, arrays = write(tmp_path, parts, recs)
    with fits.open(path) as hdul:
        ctx = hdul["CTX"]
        assert ctx.data.shape == (2, *FRAME.shape) and ctx.header["NAXIS"] == 3
        np.testing.assert_array_equal(ctx.data, arrays.ctx)
        assert ctx.header["CTXNEXP"] == n and ctx.header["CTXNPLN"] == 2
        w = WCS(ctx.header, naxis=2)  # the celestial axes of the context cube
        np.testing.assert_array_equal(w.wcs.crpix, FRAME.wcs.wcs.crpix)
        assert hdul[0].header["IN035NAM"] == "ib2v0034q_flc.fits"
        assert len(hdul["HDRTAB"].data) == n


def test_records_without_chip_list_give_one_row_per_exposure(tmp_path):
    parts, recs = standard_layer()
    for r in recs:
        r.chips = []
    path, _ = write(tmp_path, parts, recs)
    tab = fits.getdata(path, "HDRTAB")
    assert list(tab["EXTVER"]) == [1, 1, 1]
    assert fits.getheader(path)["NDRIZIM"] == 3


def test_resample_partials_are_placed_by_their_frame_and_box():
    """The real MAP output type: placed via frame + box, also on fractional coarse frames."""
    resample = pytest.importorskip("mvmflow.resample")
    layer = grid.SkyCell(81, 14, 14, "coarse").frame.window(100, 200, 40, 30)
    # drizzled onto the whole coarse sky cell (fractional plane origin), box inside `layer`
    cell = grid.SkyCell(81, 14, 14, "coarse").frame
    rng = np.random.default_rng(9)
    parts = []
    for k, (bx, by) in enumerate([(105, 203), (118, 210), (130, 199)]):
        w = np.full((12, 15), 10.0 * (k + 1), np.float32)
        flux = (w * rng.normal(3, 1, w.shape)).astype(np.float32)
        parts.append(resample.Partial(flux, w, np.ones(w.shape, np.uint8), cell, bx, by,
                                      f"{ipp(k)}q_flt.fits", ipp(k), 10.0 * (k + 1)))
    arrays = combine_partials(parts, layer)
    assert arrays.files == tuple(p.filename for p in parts)
    assert np.isfinite(arrays.sci[3:15, 5:20]).all() and np.isnan(arrays.sci[0, 0])
    assert arrays.context_bit(2)[0, 30] and not arrays.context_bit(2)[0, 29]  # y 199 -> clipped
    # the same sums as placing each box by hand at (box - layer origin) on the cell, in float64
    flux, wht = np.zeros(layer.shape), np.zeros(layer.shape)
    for p in parts:
        x0, y0 = p.box_x0 - 100, p.box_y0 - 200
        ny, nx = p.shape
        ya, yb = max(y0, 0), min(y0 + ny, layer.ny)
        xa, xb = max(x0, 0), min(x0 + nx, layer.nx)
        src = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
        flux[ya:yb, xa:xb] += p.flux[src]
        wht[ya:yb, xa:xb] += p.weight[src]
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_array_equal(arrays.sci, np.where(wht > 0, flux / wht, np.nan)
                                      .astype(np.float32))
    np.testing.assert_array_equal(arrays.wht, wht.astype(np.float32))
    offsets = {parts[1].filename: 0.5}
    sky = combine_partials(parts, layer, offsets)
    assert sky.sci[12, 25] == pytest.approx(arrays.sci[12, 25] - 0.5, abs=1e-5)


# ------------------------------------------------------------------------- header keywords

TEMPLATE = ROOT / "mvmflow" / "data" / "hst" / "templates" / "wfc3_uvis.fits"


def template_headers(record):
    """A real WFC3/UVIS header set (the simulator's template) with ``record``'s identity
    and times."""
    from mvmflow.headers import iso_time

    hdrs = read_input_headers(TEMPLATE)
    iso = iso_time(record.expstart)
    hdrs.primary.update({"ROOTNAME": record.rootname, "FILENAME": record.filename,
                         "EXPSTART": record.expstart, "EXPEND": record.expend,
                         "EXPTIME": record.exptime, "DATE-OBS": iso[:10],
                         "TIME-OBS": iso[11:19], "PROPOSID": int(record.proposid)})
    return hdrs


def dated_layer():
    """Two exposures whose first (in layer order) is the later: 2019 and 2006."""
    parts = [make_partial(0, 0, 0, 30, 40, 2.0, 100.0),
             make_partial(1, 20, 5, 30, 40, 4.0, 300.0)]
    recs = [make_record(0, 100.0), make_record(1, 300.0)]
    for rec, start in zip(recs, (58505.75, 53810.123456789), strict=True):  # 2019, 2006
        rec.expstart, rec.expend = start, start + rec.exptime / 86400.0
        rec.date_obs = Time(start, format="mjd").isot[:10]
    return parts, recs


# Keywords each HDU of a layer product must have. Obtained by running drizzlepac 3.11.0's
# run_mvm_processing on the simulator's `tiny` preset (as tests/test_reference_accepts.py
# does) and our workflow on the same files, dumping the keyword names of PRIMARY, SCI,
# WHT, CTX and the HDRTAB column names of both products of the layers acs_wfc_f814w and
# wfc3_ir_f110w: these are the keywords either reference layer has that ours (built here
# from WFC3/UVIS inputs with the simulator's real header template) have too; TELESCOP,
# TARGNAME, INHERIT, CUNIT1... were missing before. The reference keywords we leave out on
# purpose are listed in tests/test_reference_accepts.py (OMITTED_PRIMARY, OMITTED_SCI).
REQUIRED = {
    "PRIMARY": """
        SIMPLE BITPIX NAXIS EXTEND NEXTEND FILENAME ROOTNAME PROD_VER ASN_MTYP HAPLEVEL
        SCELLID FILETYPE TELESCOP INSTRUME DETECTOR FILTER IMAGETYP PRIMESI TARGNAME
        RA_TARG DEC_TARG PROPOSID PR_INV_L PR_INV_F PR_INV_M FGSLOCK REFFRAME MTFLAG
        DATE-OBS TIME-OBS EXPSTART EXPEND EXPTIME TEXPTIME PA_V3 OPUS_VER CAL_VER
        OBSTYPE OBSMODE SCLAMP NRPTEXP SUBARRAY APERTURE PROPAPER DIRIMAGE CTEIMAGE
        CTEDIR CCDAMP CCDGAIN PINAME EQUINOX NUMEXP NDRIZIM DATE-BEG DATE-END NPIXFRAC
        MEANEXPT MEDEXPT MEANNEXP MEDNEXP MEANWHT MEDWHT DRIZPARS D001VER D001GEOM
        D001DATA D001DEXP D001OUDA D001OUWE D001OUCO D001MASK D001WTSC D001KERN D001PIXF
        D001COEF D001OUUN D001FVAL D001WKEY D001SCAL D001ISCL
    """,
    "SCI": """
        XTENSION BITPIX NAXIS NAXIS1 NAXIS2 PCOUNT GCOUNT INHERIT BUNIT WCSAXES CTYPE1
        CTYPE2 CRVAL1 CRVAL2 CRPIX1 CRPIX2 CD1_1 CD1_2 CD2_1 CD2_2 CUNIT1 CUNIT2 RADESYS
        ORIENTAT VAFACTOR WCSNAME PA_APER PHOTMODE PHOTFLAM PHOTFNU PHOTZPT PHOTPLAM
        PHOTBW CCDCHIP NCOMBINE S_REGION EXTNAME EXTVER
    """,
    "WHT": """
        XTENSION BITPIX NAXIS NAXIS1 NAXIS2 PCOUNT GCOUNT INHERIT BUNIT WCSAXES CTYPE1
        CTYPE2 CRVAL1 CRVAL2 CRPIX1 CRPIX2 CD1_1 CD1_2 CD2_1 CD2_2 CUNIT1 CUNIT2 RADESYS
        ORIENTAT VAFACTOR WCSNAME PA_APER CCDCHIP EXTNAME EXTVER
    """,
    "CTX": """
        XTENSION BITPIX NAXIS PCOUNT GCOUNT INHERIT BUNIT WCSAXES CTYPE1 CTYPE2 CRVAL1
        CRVAL2 CRPIX1 CRPIX2 CD1_1 CD1_2 CD2_1 CD2_2 CUNIT1 CUNIT2 RADESYS ORIENTAT
        VAFACTOR WCSNAME PA_APER EXTNAME EXTVER
    """,
    "HDRTAB": """
        SVMROOTNAME GENDATE ROOTNAME EXTNAME EXTVER FILENAME A_0_2 A_0_3 A_0_4 A_1_1
        A_1_2 A_1_3 A_2_0 A_2_1 A_2_2 A_3_0 A_3_1 A_4_0 A_ORDER APERTURE ASN_ID ASN_MTYP
        ASN_TAB ATODCORR ATODGNA ATODGNB ATODGNC ATODGND ATODTAB B_0_2 B_0_3 B_0_4 B_1_1
        B_1_2 B_1_3 B_2_0 B_2_1 B_2_2 B_3_0 B_3_1 B_4_0 BADINPDQ BIASCORR BIASFILE
        BIASLEVA BIASLEVB BIASLEVC BIASLEVD BINAXIS1 BINAXIS2 BLEVCORR B_ORDER BPIXTAB
        BUNIT CAL_VER CCDAMP CCDCHIP CCDGAIN CCDOFSTA CCDOFSTB CCDOFSTC CCDOFSTD CCDTAB
        CD1_1 CD1_2 CD2_1 CD2_2 CENTERA1 CENTERA2 COMPTAB CRCORR CRMASK CRPIX1 CRPIX2
        CRRADIUS CRREJTAB CRSIGMAS CRSPLIT CRTHRESH CRVAL1 CRVAL2 CTE_NAME CTE_VER
        CTEDIR CTEIMAGE CTYPE1 CTYPE2 D2IMFILE DARKCORR DARKFILE DATE-OBS DEC_APER
        DEC_TARG DETECTOR DFLTFILE DGEOFILE DIRIMAGE DQICORR DRIZCORR DRKCFILE ERRCNT
        EXPEND EXPFLAG EXPNAME EXPSCORR EXPSTART EXPTIME FGSLOCK FILETYPE FILLCNT
        FLASHCUR FLASHDUR FLASHSTA FLATCORR FLSHCORR FLSHFILE GOODMAX GOODMEAN GOODMIN
        GRAPHTAB GYROMODE IDCSCALE IDCTAB IDCTHETA IDCV2REF IDCV3REF IMAGETYP IMPHTTAB
        INHERIT INITGUES INSTRUME LFLTFILE LINENUM LTM1_1 LTM2_2 LTV1 LTV2 MDRIZTAB
        MEANBLEV MEANDARK MEANEXP MEANFLSH MOONANGL MTFLAG NCOMBINE NGOODPIX NPOLFILE
        NRPTEXP OBSMODE OBSTYPE OCX10 OCX11 OCY10 OCY11 OPUS_VER ORIENTAT OSCNTAB
        P1_ANGLE P1_CENTR P1_FRAME P1_LSPAC P1_NPTS P1_ORINT P1_PSPAC P1_PURPS P1_SHAPE
        PA_APER PATTERN1 PATTSTEP PA_V3 PCTECORR PCTEFRAC PCTENSMD PCTETAB PFLTFILE
        PHOTBW PHOTCORR PHOTFLAM PHOTMODE PHOTPLAM PHOTZPT PODPSFF POSTARG1 POSTARG2
        PRIMESI PR_INV_F PR_INV_L PR_INV_M PROPAPER PROPOSID QUALCOM1 QUALCOM2 QUALCOM3
        QUALITY RA_APER RA_TARG READNSEA READNSEB READNSEC READNSED REFFRAME REJ_RATE
        SCALENSE SCLAMP SDQFLAGS SHADCORR SHADFILE SHUTRPOS SIZAXIS1 SIZAXIS2 SKYSUB
        SKYSUM SNRMAX SNRMEAN SNRMIN SOFTERRS STDCFFF STDCFFP SUBARRAY SUN_ALT SUNANGLE
        TARGNAME TELESCOP TIME-OBS T_SGSTAR VAFACTOR WCSAXES WRTERR CHINJECT FILTER
        NLINFILE PHOTFNU MDRIZSKY WCSNAME WCSTYPE HAPEXPNAME
    """,
}


def test_required_keywords_telescope_and_observation_start(tmp_path):
    """TELESCOP, DATE-OBS/TIME-OBS = start of the earliest input (not the first one), and
    every HDU's required keywords, with the inputs' real-like headers."""
    parts, recs = dated_layer()
    headers = {p.file: template_headers(r) for p, r in zip(parts, recs, strict=True)}
    path, _ = write(tmp_path, parts, recs, input_headers=headers)
    with fits.open(path) as hdul:
        h = hdul[0].header
        assert h["TELESCOP"] == "HST"
        start = Time(53810.123456789, format="mjd").isot  # the second input's
        assert h["DATE-BEG"] == start == "2006-03-16T02:57:46.667"
        assert h["DATE-OBS"] == "2006-03-16" == h["DATE-BEG"][:10]
        assert h["TIME-OBS"] == "02:57:46" == h["DATE-BEG"][11:19]
        assert h["EXPSTART"] == 53810.123456789 and h["EXPEND"] == recs[0].expend
        assert h["DATE-END"] == Time(recs[0].expend, format="mjd").isot
        assert h["EXPTIME"] == h["TEXPTIME"] == 400.0
        assert h["EXPSTART"] < h["EXPEND"] and h["DATE-BEG"] < h["DATE-END"]
        assert h["TARGNAME"] == "ANY" and h["PINAME"] == h["PR_INV_L"] == "Brown"
        assert h["D001SCAL"] == FRAME.scale and h["D001ISCL"] == pytest.approx(0.03962)
        for ext, names in REQUIRED.items():
            have = (set(hdul[ext].columns.names) if ext == "HDRTAB"
                    else set(hdul[ext].header.keys()))
            assert not set(names.split()) - have, (ext, sorted(set(names.split()) - have))
        tab = hdul["HDRTAB"].data
        assert list(tab["TIME-OBS"]) == [Time(r.expstart, format="mjd").isot[11:19]
                                         for r in recs for _ in (1, 2)]
        assert set(tab["TELESCOP"]) == {"HST"}


def test_telescope_and_observation_start_from_records_alone(tmp_path):
    """Without input headers (files not at hand) the record still gives TELESCOP and the
    observation start."""
    parts, recs = dated_layer()
    path, _ = write(tmp_path, parts, recs)
    h = fits.getheader(path)
    assert h["TELESCOP"] == "HST"
    assert (h["DATE-OBS"], h["TIME-OBS"]) == ("2006-03-16", "02:57:46")
    assert h["DATE-BEG"] == "2006-03-16T02:57:46.667"
    assert "TELESCOP" in fits.getdata(path, "HDRTAB").columns.names


def test_input_headers_come_from_the_screen_jobs_files_only(tmp_path):
    """The workflow's way: the headers files the screen job wrote (one per exposure) are
    passed in; the writer itself never opens an exposure, even one that is there."""
    parts, recs = dated_layer()
    header_files = []
    for p, r in zip(parts, recs, strict=True):
        hdrs = template_headers(r)
        hdus = [fits.PrimaryHDU(header=hdrs.primary)]
        hdus += [fits.ImageHDU(header=hdrs.chips[e], name="SCI", ver=e) for e in (1, 2)]
        r.file = p.file = str(tmp_path / r.filename)
        fits.HDUList(hdus).writeto(r.file)
        header_files.append(tmp_path / "headers" / f"{r.filename[:-5]}.json")
        write_exposure_headers(r.file, header_files[-1])
    path, _ = write(tmp_path / "out", parts, recs,
                    input_headers=member_headers(recs, header_files))
    h = fits.getheader(path)
    assert h["TARGNAME"] == "ANY" and h["PR_INV_L"] == "Brown" and h["CAL_VER"]
    assert fits.getheader(path, "SCI")["PHOTMODE"].startswith("WFC3 UVIS2 F555W")
    # the same product as from headers read directly
    direct = {p.file: read_input_headers(p.file) for p in parts}
    same, _ = write(tmp_path / "direct", parts, recs, input_headers=direct)
    assert Path(same).read_bytes() == Path(path).read_bytes()
    # without headers: the records alone, although the exposures are at hand
    bare, _ = write(tmp_path / "bare", parts, recs)
    assert "TARGNAME" not in fits.getheader(bare) and fits.getheader(bare)["TELESCOP"] == "HST"


def test_hdrtab_leaves_out_the_header_wcs_of_an_aligned_input(tmp_path):
    parts, recs = dated_layer()
    headers = {p.file: template_headers(r) for p, r in zip(parts, recs, strict=True)}
    recs[1].alignment = {"WCSNAME": "IDC_2731450pi-FIT_MVM_GAIADR3", "RMS_RA": 3.0,
                         "RMS_DEC": 4.0, "NMATCHES": 20, "FITGEOM": "rshift",
                         "ALIGNST": "absolute", "REFCAT": "GAIADR3"}
    path, _ = write(tmp_path, parts, recs, input_headers=headers)
    tab = fits.getdata(path, "HDRTAB")
    assert list(tab["WCSNAME"][2:]) == ["IDC_2731450pi-FIT_MVM_GAIADR3"] * 2
    for key in ("CRVAL1", "CD1_1", "ORIENTAT"):
        assert np.isfinite(tab[key][:2]).all() and np.isnan(tab[key][2:]).all(), key
    assert np.isfinite(tab["CRPIX1"]).all()  # alignment leaves CRPIX and SIP alone


def test_cards_cut_their_comment_without_a_warning():
    """Long product names (exposure-level, custom prefixes) leave little room for a comment:
    it is cut to fit, never by astropy with a VerifyWarning on the job's terminal."""
    import warnings

    from mvmflow.products import _card

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for value in ["x" * n for n in range(80)] + [1, 0.6737427753470534, True]:
            for key in ("D001OUDA", "A"):
                card = _card(key, value, "Drizzle, output data image name, and more words")
                assert len(card.image) % 80 == 0
                if isinstance(value, str) and len(value) <= 60:
                    assert card.comment  # room left: some of the comment is kept
