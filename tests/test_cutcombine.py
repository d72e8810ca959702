"""Tests of mvmflow.cutcombine (hapcut's mvm_combine done right, spec processing.md §5.4, §8.9).

The synthetic layers are windows of neighbouring sky cells of projection cell 81 around a
point of the corner where x14y14, x15y14, x14y15 and x15y15 overlap. Every layer is made
from one scene of exposures on the projection-cell plane: exposure ``e`` has SCI
``scene + offset_e`` and weight ``W_e * (1 + 0.002 u)``, and a layer's pixel holds the
WHT-weighted mean of the exposures its sky cell has there, with the matching CTX bits and
an HDRTAB of two chips per exposure. So in a strip that two layers share with the same
exposures, their pixels are identical, as for real neighbouring sky cells.
"""

import logging

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_area

from mvmflow.cli import main
from mvmflow.cutcombine import combine_cutouts, combine_group, combine_headers, run_combine
from mvmflow.cutouts import cut_product
from mvmflow.grid import ProjectionCell, SkyCell
from mvmflow.headers import ChipRow, hdrtab
from mvmflow.names import CutoutName

RA, DEC = (float(v) for v in ProjectionCell(81).wcs.pixel_to_world_values(300444, 300444))
CELLS = ("skycell-p0081x14y14", "skycell-p0081x15y14", "skycell-p0081x14y15", "skycell-p0081x15y15")
S, B, C, D = "ib2v01aaq", "ib2v01bbq", "ib2v01ccq", "ib2v01ddq"
EXPOSURES = {S: (0.0, 100.0), B: (5.0, 50.0), C: (-3.0, 150.0), D: (2.0, 80.0)}  # offset, W


def fine_scene(u, v):
    return 10.0 + 0.01 * u + 0.02 * v


def blob_scene(u, v):
    """A Gaussian star (total 50 * 2 pi 2.5**2) on a flat sky, in coarse pixels."""
    return 2.0 + 50.0 * np.exp(-((u - 0.7) ** 2 + (v + 0.4) ** 2) / (2 * 2.5 ** 2))


# row bands (v, fine pixels from the position) of the two-cell layout
R1 = lambda u, v: v < -12  # noqa: E731 - both hold S
R2 = lambda u, v: (v >= -12) & (v < 0)  # noqa: E731 - A holds B, B holds C: disjoint
R3 = lambda u, v: (v >= 0) & (v < 12)  # noqa: E731 - A holds S, B holds S + D: superset
R4 = lambda u, v: v >= 12  # noqa: E731 - A holds S + B, B holds S + C: partial overlap
MEMBERS_A = {S: lambda u, v: R1(u, v) | R3(u, v) | R4(u, v), B: lambda u, v: R2(u, v) | R4(u, v)}
MEMBERS_B = {C: lambda u, v: R2(u, v) | R4(u, v), S: lambda u, v: R1(u, v) | R3(u, v) | R4(u, v),
             D: R3}  # another layer order: S is context bit 1 here, bit 0 in A


def write_layer(directory, skycell, members, *, scale="fine", ubox=(-100, 100), vbox=(-100, 100),
                scene=fine_scene, exposures=EXPOSURES, ctx="real", with_hdrtab=True,
                filt="f160w", wslope=0.002, pos=(RA, DEC), sky=None):
    """A layer product of ``skycell`` over (u, v) pixels around (RA, DEC).

    ``members`` maps rootname -> coverage function of integer (u, v), in CTX-bit order.
    ``ctx`` is 'real', 'empty' (all zero, as the archive) or 'none'. Weights grow by
    ``wslope`` per pixel along u. ``sky``, a function of (RA, Dec), replaces ``scene`` for
    layers of different projection cells, whose pixel axes are not parallel.
    """
    frame = SkyCell.from_name(skycell, scale=scale).frame
    cx, cy = (float(c) for c in frame.wcs.world_to_pixel_values(*pos))
    x0, y0 = round(cx) + ubox[0], round(cy) + vbox[0]
    win = frame.window(x0, y0, ubox[1] - ubox[0], vbox[1] - vbox[0])
    # (iu, iv): integer pixels from the grid pixel nearest (RA, DEC), the same on every
    # window of one plane; (u, v): the exact offsets from (RA, DEC), for the scene
    iu, iv = np.meshgrid(np.arange(win.nx) + x0 - round(cx), np.arange(win.ny) + y0 - round(cy))
    u, v = iu + round(cx) - cx, iv + round(cy) - cy
    flux, wsum = np.zeros(u.shape), np.zeros(u.shape)
    context = np.zeros(u.shape, dtype=np.int32)
    for k, (root, covers) in enumerate(members.items()):
        offset, weight = exposures[root]
        w = np.where(covers(iu, iv), weight * (1 + wslope * iu), 0.0)
        values = scene(u, v) if sky is None else sky(*win.wcs.pixel_to_world_values(
            iu + round(cx) - x0, iv + round(cy) - y0))
        flux += w * (values + offset)
        wsum += w
        context |= np.where(w > 0, np.int32(1 << k), np.int32(0))
    sci = np.where(wsum > 0, flux / np.where(wsum > 0, wsum, 1), np.nan).astype(np.float32)
    hdr = win.header()
    del hdr["NAXIS1"], hdr["NAXIS2"]
    sci_hdr = hdr.copy()
    sci_hdr.update(PCELLID=81, PCX0=win.x0, PCY0=win.y0, S_REGION="POLYGON ICRS 0 0 1 1 1 0")
    name = f"hst_{skycell}_wfc3_ir_{filt}_{'coarse-' if scale == 'coarse' else ''}all_drz.fits"
    primary = fits.PrimaryHDU()
    primary.header.update(TELESCOP="HST", INSTRUME="WFC3", DETECTOR="IR", FILTER=filt.upper(),
                          FILENAME=name, SCELLID=skycell[8:], NEXTEND=4)
    hdus = [primary, fits.ImageHDU(sci, header=sci_hdr, name="SCI"),
            fits.ImageHDU(wsum.astype(np.float32), header=hdr, name="WHT")]
    if ctx != "none":
        hdus.append(fits.ImageHDU(context if ctx == "real" else 0 * context, header=hdr,
                                  name="CTX"))
    if with_hdrtab:
        values = ({"ROOTNAME": r, "FILENAME": f"{r}_flt.fits", **({"CTXBIT": k} if ctx == "real" else {})}
                  for k, r in enumerate(members))
        hdus.append(hdrtab([ChipRow(f"{val['FILENAME']}", ext, val)
                            for val in values for ext in (1, 2)]))
    path = directory / name
    fits.HDUList(hdus).writeto(path)
    return path


def cut(products, out, size=2.0, pos=(RA, DEC)):
    return [cut_product(p, *pos, size, out) for p in products]


def arrays(path):
    with fits.open(path) as hdul:
        return hdul["SCI"].data.astype(np.float64), hdul["WHT"].data.astype(np.float64)


def box_uv(path):
    """(u, v) of each pixel of a fine cutout, in pixels from (RA, DEC) rounded to the grid."""
    with fits.open(path) as hdul:
        wcs = WCS(hdul["SCI"].header)
        ny, nx = hdul["SCI"].data.shape
    cx, cy = (float(c) for c in wcs.world_to_pixel_values(RA, DEC))
    u = np.arange(nx)[None, :] - round(cx) + np.zeros((ny, 1))
    v = np.arange(ny)[:, None] - round(cy) + np.zeros((1, nx))
    return u, v


@pytest.fixture
def two_cells(tmp_path):
    """Cutouts (2" = 50 fine px) of layers of x14y14 (A) and x15y14 (B); B starts at u = -10."""
    a = write_layer(tmp_path, CELLS[0], MEMBERS_A)
    b = write_layer(tmp_path, CELLS[1], MEMBERS_B, ubox=(-10, 100))
    return cut([a, b], tmp_path / "cuts")


def test_weighted_counts_shared_exposures_once(two_cells, tmp_path):
    (written, skipped) = combine_cutouts(reversed(two_cells), tmp_path / "out")
    assert skipped == []
    assert [p.name for p in written] == [CutoutName.parse(two_cells[0].name).combined().filename]
    sa, wa = arrays(two_cells[0])
    sb, wb = arrays(two_cells[1])
    sc, wc = arrays(written[0])
    u, v = box_uv(written[0])
    both = u >= -10
    assert (~np.isfinite(sb[~both])).all() and np.isfinite(sb[both]).all()

    # shared exposure S: the combined pixel is each input's pixel, weight not doubled
    r1 = both & R1(u, v)
    assert r1.sum() > 300
    np.testing.assert_array_equal(sa[r1], sb[r1])
    np.testing.assert_array_equal(sc[r1], sa[r1])
    np.testing.assert_array_equal(wc[r1], wa[r1])
    # disjoint exposures (B in A, C in B): weights add, SCI is their weighted mean
    r2 = both & R2(u, v)
    np.testing.assert_allclose(wc[r2], wa[r2] + wb[r2], rtol=1e-6)
    np.testing.assert_allclose(sc[r2], (wa[r2] * sa[r2] + wb[r2] * sb[r2]) / (wa[r2] + wb[r2]),
                               rtol=1e-6)
    assert np.all(np.abs(sc[r2] - sa[r2]) > 1)  # really a mix: A's pixels are 5 + scene, B's -3
    # B holds S + D where A holds S: B replaces A (S counted once, D added)
    r3 = both & R3(u, v)
    np.testing.assert_array_equal(sc[r3], sb[r3])
    np.testing.assert_array_equal(wc[r3], wb[r3])
    # S + B against S + C: partial overlap, the larger weight (B's layer) is kept and counted
    r4 = both & R4(u, v)
    assert (wb[r4] > wa[r4]).all()
    np.testing.assert_array_equal(sc[r4], sb[r4])
    np.testing.assert_array_equal(wc[r4], wb[r4])
    # where only A has data the combined pixel is A's
    np.testing.assert_array_equal(sc[~both], sa[~both])
    np.testing.assert_array_equal(wc[~both], wa[~both])
    with fits.open(written[0]) as hdul:
        p = hdul[0].header
        assert p["NPARTOVL"] == int(r4.sum())
        assert (p["NCOMBINE"], p["COMBMETH"]) == (2, "weighted")
        assert (p["EXPSET01"], p["EXPSET02"]) == ("ctx", "ctx")
        assert (p["PLACE01"], p["PLACE02"]) == ("slice +0 +0", "slice +0 +0")
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT"]
        assert hdul["SCI"].data.dtype == np.dtype(">f4") and hdul["WHT"].data.dtype == np.dtype(">f4")


def test_four_cells_same_exposures_are_not_quadrupled(tmp_path):
    members = {S: lambda u, v: np.ones_like(u, dtype=bool), B: lambda u, v: u > 5}
    cuts = cut([write_layer(tmp_path, cell, members) for cell in CELLS], tmp_path / "cuts")
    (out,), _ = combine_cutouts(cuts, tmp_path / "out")
    s0, w0 = arrays(cuts[0])
    sc, wc = arrays(out)
    for path in cuts[1:]:
        np.testing.assert_array_equal(arrays(path)[0], s0)
    np.testing.assert_array_equal(sc, s0)
    np.testing.assert_array_equal(wc, w0)  # a plain weighted sum would give 4 * w0
    with fits.open(out) as hdul:
        assert hdul[0].header["NCOMBINE"] == 4 and hdul[0].header["NPARTOVL"] == 0


def test_mean_reproduces_astrocut(two_cells, tmp_path):
    astrocut = pytest.importorskip("astrocut")
    hdul = combine_group(two_cells, method="mean")
    # the reference's cutouts had only SCI and WHT; on ours (with CTX and HDRTAB) astrocut's
    # default of combining every extension fails (astrocut 1.4.0), so SCI and WHT are selected
    files = [str(p) for p in two_cells]
    theirs = astrocut.CutoutsCombiner(files, exts=slice(1, 3)).combine(memory_only=True)
    np.testing.assert_array_equal(hdul["SCI"].data, theirs[1].data.astype(np.float32))
    np.testing.assert_array_equal(hdul["WHT"].data, theirs[2].data.astype(np.float32))
    assert hdul[0].header["COMBMETH"] == "mean"
    # and it is not the weighted combine: in the disjoint band WHT is averaged, not summed
    sa, wa = arrays(two_cells[0])
    sb, wb = arrays(two_cells[1])
    u, v = box_uv(two_cells[0])
    r2 = (u >= -10) & R2(u, v)
    np.testing.assert_allclose(hdul["WHT"].data[r2], (wa[r2] + wb[r2]) / 2, rtol=1e-6)
    np.testing.assert_allclose(hdul["SCI"].data[r2], (sa[r2] + sb[r2]) / 2, rtol=1e-6)


def test_headers_and_provenance(two_cells, tmp_path):
    (out,), _ = combine_cutouts(two_cells, tmp_path / "out")
    with fits.open(out) as hdul:
        p, sci_hdr = hdul[0].header, hdul["SCI"].header
    names = [c.name for c in two_cells]
    origs = [fits.getheader(c)["ORIG_FLE"] for c in two_cells]
    assert p["FILENAME"] == out.name == CutoutName.parse(names[0]).combined().filename
    varying = {p[f"F01_K{m:02}"]: m for m in range(1, 10) if f"F01_K{m:02}" in p}
    assert {"FILENAME", "ORIG_FLE", "SCELLID"} <= set(varying)
    for key, values in (("FILENAME", names), ("ORIG_FLE", origs)):
        m = varying[key]
        assert [p[f"F{i:02}_V{m:02}"] for i in (1, 2)] == values
        assert p[f"F02_K{m:02}"] == key and f"F03_K{m:02}" not in p
    assert "ORIG_FLE" not in p and "SCELLID" not in p  # removed from the common header
    assert (p["INSTRUME"], p["FILTER"], p["RA_OBJ"], p["DEC_OBJ"]) == ("WFC3", "F160W", RA, DEC)
    assert p["NEXTEND"] == 2
    assert sum("placed by slice" in str(h) for h in p["HISTORY"]) == 2
    # the output WCS is the first cutout's, stale keywords removed
    first = fits.getheader(two_cells[0], "SCI")
    for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CD1_1", "PCX0", "PCY0"):
        assert sci_hdr[key] == first[key]
    assert "S_REGION" not in sci_hdr and "NCOMBINE" not in sci_hdr


def test_combine_headers_matches_astrocut_format():
    cutout_processing = pytest.importorskip("astrocut.cutout_processing")
    headers = []
    for i in range(3):
        h = fits.Header([("INSTRUME", "WFC3", "instrument"), ("FILENAME", f"f{i}.fits", "name"),
                         ("CHECKSUM", f"x{i}"), ("EXPTIME", 10.0 * (i // 2), "time")])
        headers.append(h)
    assert repr(combine_headers(headers)) == repr(cutout_processing._combine_headers(headers))
    headers[2]["EXTRA"] = 1  # only some have it: varying (astrocut raises KeyError)
    out = combine_headers(headers)
    assert (out["F03_K03"], out["F03_V03"]) == ("EXTRA", 1) and "F01_K03" not in out


def test_group_of_one_is_skipped_and_reported(two_cells, tmp_path, caplog):
    lone = write_layer(tmp_path, CELLS[0], MEMBERS_A, filt="f110w")
    (lone_cut,) = cut([lone], tmp_path / "cuts")
    with caplog.at_level(logging.WARNING, logger="mvmflow.cutcombine"):
        written, skipped = combine_cutouts([*two_cells, lone_cut], tmp_path / "out")
    label = CutoutName.parse(lone_cut.name).combined().filename
    assert len(written) == 1 and "f160w" in written[0].name
    assert [s[0] for s in skipped] == [label] and lone_cut.name in skipped[0][1]
    assert label in caplog.text
    assert not (tmp_path / "out" / label).exists()


def test_fine_and_coarse_are_not_grouped(tmp_path):
    products = [write_layer(tmp_path, cell, MEMBERS_A) for cell in CELLS[:2]]
    products += [write_layer(tmp_path, cell, {S: lambda u, v: u > -100}, scale="coarse",
                             ubox=(-40, 40), vbox=(-40, 40)) for cell in CELLS[:2]]
    cuts = cut(products, tmp_path / "cuts")
    written, skipped = combine_cutouts(cuts, tmp_path / "out")
    assert skipped == []
    fine, coarse = (CutoutName.parse(cuts[i].name).combined().filename for i in (0, 2))
    assert coarse == fine.replace("_f160w.fits", "_f160w_coarse.fits")
    assert sorted(p.name for p in written) == [fine, coarse]
    shapes = {}
    for path in written:
        with fits.open(path) as hdul:
            assert hdul[0].header["NCOMBINE"] == 2
            shapes["coarse" if "_coarse" in path.name else "fine"] = hdul["SCI"].shape
    assert shapes == {"fine": (50, 50), "coarse": (17, 17)}


def test_corrupt_and_renamed_files(two_cells, tmp_path):
    corrupt = tmp_path / "cuts" / two_cells[0].name.replace("x14y14", "x14y15")
    corrupt.write_bytes(b"not a FITS file" * 100)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"junk")
    renamed = tmp_path / "renamed.fits"  # grouped by its FILENAME keyword
    renamed.write_bytes(two_cells[1].read_bytes())
    report = run_combine([corrupt, two_cells[0], junk, renamed], tmp_path / "out")
    assert [p.name for p in report.written] == [CutoutName.parse(two_cells[0].name).combined().filename]
    assert sorted(f for f, _ in report.failed) == sorted([str(corrupt), str(junk)])
    assert report.skipped == []
    sc, wc = arrays(report.written[0])
    ref, _ = combine_cutouts(two_cells, tmp_path / "ref")
    np.testing.assert_array_equal(sc, arrays(ref[0])[0])
    written, skipped = combine_cutouts([corrupt, *two_cells], tmp_path / "out2")
    assert len(written) == 1 and [s[0] for s in skipped] == [str(corrupt)]


def test_coarse_third_pixel_offsets_are_resampled_and_conserve_flux(tmp_path):
    kw = dict(scale="coarse", ubox=(-40, 40), vbox=(-40, 40), scene=blob_scene,
              exposures={S: (0.0, 100.0), C: (0.0, 150.0)}, wslope=0.0)
    a = write_layer(tmp_path, CELLS[0], {S: lambda u, v: u > -100}, **kw)
    b = write_layer(tmp_path, CELLS[1], {C: lambda u, v: u > -100}, **kw)
    cuts = cut([a, b], tmp_path / "cuts", size=3.0)  # 25 x 25 coarse pixels
    wa_, wb_ = WCS(fits.getheader(cuts[0], "SCI")), WCS(fits.getheader(cuts[1], "SCI"))
    frac = (wa_.wcs.crpix - wb_.wcs.crpix) % 1
    np.testing.assert_allclose(np.minimum(frac, 1 - frac), [1 / 3, 0], atol=1e-9)
    (out,), _ = combine_cutouts(cuts, tmp_path / "out")
    sc, wc = arrays(out)
    with fits.open(out) as hdul:
        placed = (hdul[0].header["PLACE01"], hdul[0].header["PLACE02"])
    inner = (slice(4, -4), slice(4, -4))
    # disjoint exposures: the weights add (each output pixel fully covered by B's pixels)
    np.testing.assert_allclose(wc[inner], 250.0, rtol=1e-5)
    area = proj_plane_pixel_area(wa_)
    flux = sc[inner].sum() * area
    for path in cuts:
        s, _ = arrays(path)
        assert abs(flux / (s[inner].sum() * area) - 1) < 0.002  # 1 % would do; 0.03 % seen
    # and the resampled star sits where it is: the combined pixels follow the scene
    cx, cy = (float(c) for c in wa_.world_to_pixel_values(RA, DEC))
    frame_u = np.arange(25)[None, :] - cx + np.zeros((25, 1))
    frame_v = np.arange(25)[:, None] - cy + np.zeros((1, 25))
    truth = blob_scene(frame_u, frame_v)
    assert np.max(np.abs(sc - truth)[inner]) < 0.03 * 50  # rounding to a slice gives 0.05
    assert placed == ("slice +0 +0", "drizzle")


def test_other_projection_cell_is_reprojected(tmp_path):
    ra0, dec0 = (float(c) for c in
                 SkyCell.from_name("skycell-p0081x01y11").frame.wcs.pixel_to_world_values(100, 10977))

    def star(ra, dec):  # sigma 0.15" = 3.75 fine pixels, on a flat sky
        dx, dy = (ra - ra0) * np.cos(np.radians(dec0)) * 3600, (dec - dec0) * 3600
        return 1.0 + 40.0 * np.exp(-(dx ** 2 + dy ** 2) / (2 * 0.15 ** 2))

    kw = dict(ubox=(-60, 60), vbox=(-60, 60), pos=(ra0, dec0), sky=star, wslope=0.0,
              exposures={S: (0.0, 100.0), C: (0.0, 150.0)})
    a = write_layer(tmp_path, "skycell-p0081x01y11", {S: lambda u, v: u > -100}, **kw)
    b = write_layer(tmp_path, "skycell-p0082x16y11", {C: lambda u, v: u > -100}, **kw)
    cuts = cut([a, b], tmp_path / "cuts", pos=(ra0, dec0))
    (out,), _ = combine_cutouts(cuts, tmp_path / "out")
    sc, wc = arrays(out)
    wcs = WCS(fits.getheader(out, "SCI"))
    assert wcs.wcs.crval[0] == ProjectionCell(81).crval[0]
    inner = (slice(8, -8), slice(8, -8))
    # drizzle's weight scales with the pixel-area ratio of the two planes (0.2 % here)
    np.testing.assert_allclose(wc[inner], 250.0, rtol=5e-3)
    for path in cuts:
        s, _ = arrays(path)
        area = proj_plane_pixel_area(WCS(fits.getheader(path, "SCI")))
        assert abs(sc[inner].sum() * proj_plane_pixel_area(wcs) / (s[inner].sum() * area) - 1) < 0.01
    y, x = np.mgrid[0:50, 0:50]
    truth = star(*wcs.pixel_to_world_values(x, y))
    assert np.max(np.abs(sc - truth)[inner]) < 0.03 * 40
    assert fits.getheader(out)["PLACE02"] == "drizzle"


def test_archive_like_products_fall_back_to_hdrtab(tmp_path, caplog):
    members = {S: lambda u, v: np.ones_like(u, dtype=bool)}
    (tmp_path / "arc").mkdir()
    (tmp_path / "bare").mkdir()
    archive = [write_layer(tmp_path / "arc", cell, members, ctx="empty") for cell in CELLS[:2]]
    (out,), _ = combine_cutouts(cut(archive, tmp_path / "arc_cuts"), tmp_path / "out")
    w0 = arrays(cut(archive[:1], tmp_path / "c0")[0])[1]
    np.testing.assert_array_equal(arrays(out)[1], w0)  # same HDRTAB exposure: counted once
    assert fits.getheader(out)["EXPSET01"] == "hdrtab"

    bare = [write_layer(tmp_path / "bare", cell, members, ctx="none", with_hdrtab=False)
            for cell in CELLS[:2]]
    with caplog.at_level(logging.WARNING, logger="mvmflow.cutcombine"):
        (out,), _ = combine_cutouts(cut(bare, tmp_path / "bare_cuts"), tmp_path / "out2")
    assert "double-counted" in caplog.text
    np.testing.assert_allclose(arrays(out)[1], 2 * w0, rtol=1e-6)  # nothing says they share
    assert fits.getheader(out)["EXPSET02"] == "own"


def test_cli(two_cells, tmp_path, capsys):
    lone = cut([write_layer(tmp_path, CELLS[0], MEMBERS_A, filt="f110w")], tmp_path / "cuts")[0]
    rc = main(["combine", *map(str, two_cells), str(lone), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert rc == 0
    expected = tmp_path / "out" / CutoutName.parse(two_cells[0].name).combined().filename
    assert captured.out.strip() == str(expected) and expected.exists()
    assert "skipped" in captured.err and "f110w" in captured.err
    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"junk")
    rc = main(["combine", *map(str, two_cells), str(bad), "-o", str(tmp_path / "m"),
               "--method", "mean"])
    captured = capsys.readouterr()
    assert rc == 1 and "bad.fits" in captured.err
    assert fits.getheader(tmp_path / "m" / expected.name)["COMBMETH"] == "mean"
