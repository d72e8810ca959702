"""mvmflow.partials: the partial file (row spans, byte planes) and its one reader.

Real partials are drizzled (mvmflow.resample) from synthetic chips with a TAN WCS rotated on
the sky, so their boxes have zero corners; synthetic partials add empty rows, a chip gap,
NaN and -0.0 values, weight without flux and the empty cases. Reads are compared bit for bit
with slices of the in-memory arrays; "reads only the rows it needs" is measured by the bytes
a :class:`PartialFile` reads.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tracemalloc

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from mvmflow import partials
from mvmflow.combine import combine_partials, placement
from mvmflow.grid import Frame, ProjectionCell, SkyCell
from mvmflow.partials import Partial, PartialFile, write_partial
from mvmflow.resample import Chip, _settings, drizzle_exposure

PC = ProjectionCell(81)
CELL = SkyCell(PC, 14, 14).frame
NEIGHBOUR = SkyCell(PC, 15, 14).frame  # starts 21442 px further along x
PARAMS = {"kernel": "square", "pixfrac": 1.0, "final_bits": 65535, "stepsize": 10,
          "wht_type": "EXP", "static_mask": False}
ARRAYS = ("flux", "weight", "nchips")


# --------------------------------------------------------------------------------------
# helpers


def rotated_chip(plane_xy, angle_deg=30.0, shape=(240, 320), extver=1, shift=(0.0, 0.0),
                 seed=0, filename="jabc01xyq_flc.fits") -> Chip:
    """A chip with a 0.05"/px TAN WCS rotated by ``angle_deg``, centred on fine plane pixel
    ``plane_xy`` of projection cell 81 (``shift``: chip pixels the centre moves by)."""
    ra, dec = PC.wcs.pixel_to_world_values(*plane_xy)
    ny, nx = shape
    s, t = 0.05 / 3600.0, math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [float(ra), float(dec)]
    wcs.wcs.crpix = [nx / 2 + 0.5 - shift[0], ny / 2 + 0.5 - shift[1]]
    wcs.wcs.cd = rot @ np.diag([-s, s])
    wcs.pixel_shape = (nx, ny)
    rng = np.random.default_rng(seed)
    data = rng.normal(3.0, 0.3, shape).astype(np.float32)
    y, x = np.mgrid[:ny, :nx]
    data += (400.0 * np.exp(-((x - 100.3) ** 2 + (y - 80.6) ** 2) / 4.0)).astype(np.float32)
    dq = np.zeros(shape, np.int16)
    dq[rng.random(shape) < 0.01] = 4  # some bad pixels: holes in the weight
    return Chip(data, wcs, 100.0, "ELECTRONS/S", dq, extver, 0.05, filename)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_partial(got: Partial, want: Partial) -> None:
    for name in ARRAYS:
        assert same_bits(getattr(got, name), getattr(want, name)), name
    assert got.frame == want.frame
    assert (got.box_x0, got.box_y0) == (want.box_x0, want.box_y0)
    assert (got.filename, got.ipppssoo, got.exptime) == (want.filename, want.ipppssoo,
                                                         want.exptime)


def box_bytes(p: Partial) -> int:
    """Pixel bytes of the box layout (layout 1: three box-sized images, 9 bytes a pixel)."""
    return 9 * p.flux.size


def synthetic(seed=1, shape=(150, 230), frame=CELL, box=(5000, 7000)) -> Partial:
    """A partial with zero corners (a rotated footprint), empty rows (top, bottom and a band
    inside), a chip gap, NaN and -0.0 flux, weight without flux and nchips without weight."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    u = (x - nx / 2) * math.cos(0.5) + (y - ny / 2) * math.sin(0.5)
    v = -(x - nx / 2) * math.sin(0.5) + (y - ny / 2) * math.cos(0.5)
    inside = (np.abs(u) < 0.4 * nx) & (np.abs(v) < 0.3 * ny) & (np.abs(v - 5) > 2)  # + gap
    inside[:7] = inside[-4:] = inside[60:63] = False
    weight = np.where(inside, rng.uniform(80, 120, shape), 0).astype(np.float32)
    flux = np.where(inside, weight * rng.normal(3, 1, shape), 0).astype(np.float32)
    nchips = inside.astype(np.uint8)
    flux[80, 100] = np.nan
    flux[81, 100] = -0.0
    weight[81, 100] = 0.0
    assert not inside[40, 0]
    flux[40, 0] = -0.0  # alone in a zero corner: extends its row's span to column 0
    nchips[82, 30] = 2  # nchips without weight: kept
    weight[60, 50] = 7.0  # weight in an otherwise empty row
    return Partial(flux, weight, nchips, frame, box[0], box[1], "jabc02xyq_flc.fits",
                   "jabc02xy", 350.0, dict(PARAMS), [{"extver": 1, "drizzled": True,
                                                      "in_units": "cps", "sky": 0.0,
                                                      "iscale": 0.64, "ngood": 1000,
                                                      "nstatic": 0}])


@pytest.fixture(scope="module")
def real():
    """A two-chip exposure rotated by 30 degrees on sky cell 14,14 (a chip gap inside)."""
    centre = (13 * 21442 + 5000.0, 13 * 21442 + 8000.0)
    chips = [rotated_chip(centre, extver=1, shift=(0.0, -125.0), seed=1),
             rotated_chip(centre, extver=2, shift=(0.0, 125.0), seed=2)]
    return drizzle_exposure(chips, CELL, PARAMS)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 1200 x 2000 partial file (smooth weights, noisy flux) and its arrays."""
    rng = np.random.default_rng(11)
    ny, nx = 1200, 2000
    y, x = np.mgrid[:ny, :nx]
    inside = np.abs((x - nx / 2) + 0.5 * (y - ny / 2)) < 0.45 * nx
    weight = np.where(inside, 300.0 + 0.01 * x - 0.02 * y, 0).astype(np.float32)
    flux = (weight * rng.normal(3, 0.5, (ny, nx))).astype(np.float32)
    p = Partial(flux, weight, inside.astype(np.uint8), CELL, 3000, 4000, "jabc03xyq_flc.fits",
                "jabc03xy", 400.0, dict(PARAMS), [])
    path = write_partial(p, tmp_path_factory.mktemp("big") / "big_partial.fits")
    return p, path


# --------------------------------------------------------------------------------------
# frames


def test_frame_serialisation_round_trips():
    for frame in (CELL, SkyCell(PC, 14, 14, "coarse").frame, CELL.window(-7, 12, 30, 40)):
        assert frame.to_dict() == dataclasses.asdict(frame)
        assert Frame.from_dict(frame.to_dict()) == frame
        header = fits.Header(frame.header_cards())
        assert list(header) == ["PCELL", "PSCALE", "FRCRPIX1", "FRCRPIX2", "FRNAXIS1",
                                "FRNAXIS2"]
        assert Frame.from_header(header) == frame  # the coarse CRPIX's 17 digits survive
        # through a file too
        assert Frame.from_header(fits.Header.fromstring(header.tostring())) == frame
    with pytest.raises(ValueError, match="fields"):
        Frame.from_dict({**CELL.to_dict(), "extra": 1})


# --------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("chunk", [partials.CHUNK_VALUES, 777])
def test_real_partial_round_trip_is_exact(real, tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(partials, "CHUNK_VALUES", chunk)  # 777: many chunk boundaries
    assert not real.empty and (real.weight == 0).mean() > 0.3  # zero corners and a gap
    path = write_partial(real, tmp_path / "real_partial.fits")
    pf = PartialFile.open(path)
    assert pf.chunk_values == chunk and pf.nvalues < real.flux.size
    back = pf.read()
    assert_same_partial(back, real)
    assert back.params == real.params and back.chips == real.chips
    assert (pf.filename, pf.ipppssoo, pf.exptime, pf.frame) == (real.filename, real.ipppssoo,
                                                                 real.exptime, real.frame)
    assert pf.box == partials.Box(real.box_x0, real.box_y0, real.shape[1], real.shape[0])
    assert not pf.empty and pf.shape == real.shape
    # the header's drizzle settings are the ones resample applied
    s = _settings(real.params)
    h = pf.header
    assert (h["KERNEL"], h["PIXFRAC"], h["RESETBIT"], h["STATMASK"], h["STATSIG"],
            h["PIXSTEP"], h["FINLBITS"]) == (s.kernel, s.pixfrac, s.resetbits, s.static,
                                             s.static_sig, s.step, str(s.final_bits))
    assert (h["PLANEX0"], h["PLANEY0"]) == (real.x0, real.y0)


@pytest.mark.parametrize("chunk", [partials.CHUNK_VALUES, 500])
def test_synthetic_partials_round_trip_bit_for_bit(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(partials, "CHUNK_VALUES", chunk)
    p = synthetic()
    pf = PartialFile.open(write_partial(p, tmp_path / "syn.fits"))
    assert_same_partial(pf.read(), p)
    # nothing non-zero is lost: every covered pixel lies in a span, and empty rows have none
    with fits.open(tmp_path / "syn.fits") as hdul:
        spans = hdul["SPANS"].data
    assert spans[:7, 1].sum() == 0 and spans[-4:, 1].sum() == 0
    assert spans[60, 1] == 1 and spans[61, 1] == 0  # the one weight in the empty band
    assert spans[40, 0] == 0 and spans[41, 0] > 0  # the -0.0 in the corner counts
    assert pf.nvalues == spans[:, 1].sum() < 0.75 * p.flux.size
    # without compression (spans only) it also round-trips
    monkeypatch.setattr(partials, "ZLIB_PLANES", {"flux": (), "weight": (), "nchips": ()})
    assert_same_partial(PartialFile.open(write_partial(p, tmp_path / "raw.fits")).read(), p)


def test_empty_and_uncovered_partials(tmp_path):
    empty = drizzle_exposure([rotated_chip((1000.0, 1000.0))], CELL, PARAMS)  # off the cell
    assert empty.empty
    pf = PartialFile.open(write_partial(empty, tmp_path / "empty.fits"))
    assert pf.empty and pf.nvalues == 0 and pf.shape == (0, 0)
    back = pf.read()
    assert back.empty and back.frame == CELL and back.filename == empty.filename
    assert back.chips == empty.chips == []  # no chip record without a box
    assert pf.window(CELL.window(0, 0, 10, 10)).empty
    assert pf.read_arrays(ARRAYS)["flux"].shape == (0, 0)
    # a box whose pixels are all zero stores no value and reads back as zeros
    zeros = synthetic()
    for name in ARRAYS:
        getattr(zeros, name)[...] = 0
    pf = PartialFile.open(write_partial(zeros, tmp_path / "zeros.fits"))
    assert pf.nvalues == 0 and not pf.empty
    assert_same_partial(pf.read(), zeros)
    assert pf.window(CELL).shape == zeros.shape


def test_two_writes_give_the_same_bytes(real, tmp_path):
    a = write_partial(real, tmp_path / "a.fits")
    b = write_partial(dataclasses.replace(real), tmp_path / "sub" / "b.fits")
    assert a.read_bytes() == b.read_bytes()
    assert b"DATE" not in a.read_bytes()[:2880 * 4]
    assert not [f for f in tmp_path.rglob("*") if f.name.endswith(".part")]  # atomic


def _written_by_astropy(p: Partial, path):
    """The partial file as astropy's HDUList.writeto writes the same HDUs, sealed (the
    writer before the HDUs were streamed: the oracle of write_partial's bytes)."""
    from mvmflow.integrity import seal, seal_cards

    arrays = partials._checked_arrays(p)
    spans = partials._spans(arrays)
    primary = partials._primary_header(p, int(spans[:, 1].sum()))
    primary.extend(seal_cards())
    hdus = [fits.PrimaryHDU(header=primary),
            fits.ImageHDU(spans if spans.size else None, name="SPANS")]
    rows, data_hdus = [], []
    for aid, (name, a) in enumerate(zip(ARRAYS, arrays, strict=True)):
        planes = partials._stream(a, spans)
        pieces, r = partials._encode(aid, name, planes)
        data = np.concatenate([np.frombuffer(x, np.uint8) if isinstance(x, bytes)
                               else planes[:, x] for x in pieces] or [np.zeros(0, np.uint8)])
        rows += r
        hdu = fits.ImageHDU(data if data.size else None, name=partials._EXTNAMES[name])
        hdu.header["DTYPE"] = (partials._DTYPES[name].name, "value type (stored big-endian)")
        hdu.header["VALUNIT"] = (partials._UNITS[name], "unit of the values")
        hdu.header["ZPLANES"] = (",".join(map(str, partials.ZLIB_PLANES[name])),
                                 "byte planes compressed (zlib chunks)")
        data_hdus.append(hdu)
    table = np.array(rows, dtype=np.int64).reshape(-1, 6)
    hdus.append(fits.ImageHDU(table if table.size else None, name="CHUNKS"))
    fits.HDUList(hdus + data_hdus).writeto(path, output_verify="exception")
    seal(path)
    return path


def test_streamed_writes_are_astropys_bytes(real, tmp_path, monkeypatch):
    """write_partial writes its HDUs one by one, filling in the CHUNKS table last: the
    same bytes as astropy's writeto of the whole HDU list, for a real partial (several
    chunks), small chunks, an empty partial and an all-zero box."""
    empty = drizzle_exposure([rotated_chip((1000.0, 1000.0))], CELL, PARAMS)
    zeros = synthetic()
    for name in ARRAYS:
        getattr(zeros, name)[...] = 0
    cases = [("real", real, None), ("small chunks", synthetic(), 1000), ("empty", empty, None),
             ("zeros", zeros, None)]
    for label, p, chunk in cases:
        if chunk:
            monkeypatch.setattr(partials, "CHUNK_VALUES", chunk)
        ours = write_partial(p, tmp_path / "ours.fits").read_bytes()
        theirs = _written_by_astropy(p, tmp_path / f"{len(ours)}.fits").read_bytes()
        assert ours == theirs, label
        monkeypatch.setattr(partials, "CHUNK_VALUES", 1 << 17)


def test_compact_file_is_smaller_than_the_box_by_the_zero_corners(real, tmp_path,
                                                                  monkeypatch):
    zero = float(((real.weight == 0) & (real.flux == 0) & (real.nchips == 0)).mean())
    assert zero > 0.3  # a rotated chip's box
    overhead = 12 * 2880  # headers and index of a small file
    compact = os.path.getsize(write_partial(real, tmp_path / "compact.fits"))
    monkeypatch.setattr(partials, "ZLIB_PLANES", {"flux": (), "weight": (), "nchips": ()})
    spans = os.path.getsize(write_partial(real, tmp_path / "spans.fits"))
    assert spans <= (1 - zero) * box_bytes(real) * 1.05 + overhead  # spans: only a chip gap
    assert compact < 0.75 * (spans - overhead) + overhead  # the high byte planes compress
    assert partials.bytes_per_input_pixel(tmp_path / "compact.fits", 2 * 240 * 320) == \
        compact / (2 * 240 * 320)


# --------------------------------------------------------------------------------------
# windows


def window_reference(p: Partial, frame: Frame) -> Partial | None:
    """What tiles.read_partial_window returned: the part of the box on ``frame``."""
    ox, oy = placement(p, frame)
    ny, nx = p.shape
    x_lo, x_hi = max(ox, 0), min(ox + nx, frame.nx)
    y_lo, y_hi = max(oy, 0), min(oy + ny, frame.ny)
    if x_lo >= x_hi or y_lo >= y_hi:
        return None
    px, py = x_lo - ox, y_lo - oy
    cut = (slice(py, py + y_hi - y_lo), slice(px, px + x_hi - x_lo))
    return Partial(p.flux[cut], p.weight[cut], p.nchips[cut], p.frame, p.box_x0 + px,
                   p.box_y0 + py, p.filename, p.ipppssoo, p.exptime)


def test_windows_equal_slices_of_the_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(partials, "CHUNK_VALUES", 1000)
    p = synthetic(seed=4)
    pf = PartialFile.open(write_partial(p, tmp_path / "w.fits"))
    ny, nx = p.shape
    rng = np.random.default_rng(2)
    for _ in range(60):
        x0, y0 = (int(v) for v in rng.integers(-60, 260, 2))
        w, h = (int(v) for v in rng.integers(1, 200, 2))
        frame = CELL.window(p.box_x0 + x0, p.box_y0 + y0, w, h)
        got, want = pf.window(frame), window_reference(p, frame)
        if want is None:
            assert got.empty and got.frame == frame and got.filename == p.filename
            continue
        assert_same_partial(got, want)
        # and it is placed where the whole partial puts those pixels
        sums = combine_partials([got], frame)
        ref = combine_partials([p], frame)
        np.testing.assert_array_equal(sums.sci, ref.sci)
        np.testing.assert_array_equal(sums.wht, ref.wht)
    # rows and strided regions (the median's strips, the sky step's sub-grids)
    for y0, y1 in ((0, ny), (0, 1), (59, 64), (ny - 3, ny)):
        got = pf.rows(y0, y1)
        for name in ARRAYS:
            assert same_bits(got[name], getattr(p, name)[y0:y1])
    for _ in range(30):
        a, b = sorted(int(v) for v in rng.integers(0, ny + 1, 2))
        c, d = sorted(int(v) for v in rng.integers(0, nx + 1, 2))
        key = (slice(a, b, int(rng.integers(1, 9))), slice(c, d, int(rng.integers(1, 9))))
        got = pf.read_arrays(("weight", "flux"), *key)
        assert same_bits(got["weight"], p.weight[key]) and same_bits(got["flux"], p.flux[key])
    with pytest.raises(ValueError, match="unknown"):
        pf.read_arrays(("sci",))


def test_window_on_a_neighbouring_sky_cell(tmp_path):
    # an exposure across the left edge of sky cell 15,14 (inside the cells' overlap)
    chip = rotated_chip((14 * 21442 + 50.0, 13 * 21442 + 9000.0), angle_deg=-20.0)
    p = drizzle_exposure([chip], CELL, PARAMS)
    pf = PartialFile.open(write_partial(p, tmp_path / "n.fits"))
    assert pf.placement(NEIGHBOUR) == (p.box_x0 - 21442, p.box_y0) == placement(p, NEIGHBOUR)
    assert pf.placement(CELL) == (p.box_x0, p.box_y0)
    part = pf.window(NEIGHBOUR)
    assert part.frame == CELL and (part.box_x0, part.box_y0) == (21442, p.box_y0)
    assert 0 < part.shape[1] < p.shape[1] and part.shape[0] == p.shape[0]
    assert_same_partial(part, window_reference(p, NEIGHBOUR))
    # the same pixels as drizzling onto the neighbour directly (to drizzle's rounding)
    direct = drizzle_exposure([chip], NEIGHBOUR, PARAMS)
    ox, oy = placement(part, NEIGHBOUR)
    dx, dy = direct.box_x0 - ox, direct.box_y0 - oy
    overlap = part.weight[dy:dy + direct.shape[0], dx:dx + direct.shape[1]]
    np.testing.assert_allclose(overlap, direct.weight[:overlap.shape[0], :overlap.shape[1]],
                               rtol=1e-5, atol=1e-3)
    # frames off the pixel grid or on another plane are refused
    with pytest.raises(ValueError, match="pixel-aligned"):
        pf.placement(dataclasses.replace(CELL, crpix1=CELL.crpix1 + 0.5))
    with pytest.raises(ValueError, match="different planes"):
        pf.window(SkyCell(PC, 14, 14, "coarse").frame)


def test_a_window_reads_only_its_rows(big):
    p, path = big
    size = os.path.getsize(path)
    pf = PartialFile.open(path)
    assert pf.bytes_read == 0  # opening reads headers only
    ny, nx = p.shape
    strip = CELL.window(p.box_x0 - 10, p.box_y0 + 600, nx + 20, 50)
    tracemalloc.start()
    try:
        part = pf.window(strip)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_same_partial(part, window_reference(p, strip))
    assert pf.bytes_read < 0.06 * size  # 50 of 1200 rows, plus the touched chunks
    assert peak < 5 * 9 * 50 * nx  # memory: a few times the window, not the partial
    pf = PartialFile.open(path)
    narrow = CELL.window(p.box_x0 + 700, p.box_y0, 16, ny)
    assert_same_partial(pf.window(narrow), window_reference(p, narrow))
    assert pf.bytes_read < 0.2 * size  # 16 of 2000 columns: the raw planes row by row
    pf = PartialFile.open(path)
    pf.read()
    assert 0.9 * size < pf.bytes_read <= size


@pytest.mark.parametrize("whole", [False, True])
def test_a_window_reads_the_same_row_by_row_or_by_blocks(big, monkeypatch, whole):
    """Both ways of reading a window (a whole block of rows, or each row's part) give the
    same arrays, for windows from a few columns to the whole box and with steps."""
    from mvmflow import partials as partials_module

    p, path = big
    monkeypatch.setattr(partials_module, "_read_whole", lambda *args: whole)
    ny, nx = p.shape
    for x, w in ((700, 16), (300, nx // 3), (-10, nx // 2), (-10, nx + 20)):
        win = CELL.window(p.box_x0 + x, p.box_y0 + 5, w, ny - 30)
        assert_same_partial(PartialFile.open(path).window(win), window_reference(p, win))
    got = PartialFile.open(path).read_arrays(rows=slice(3, ny, 7), cols=slice(11, nx, 5))
    for name in ("flux", "weight", "nchips"):
        np.testing.assert_array_equal(got[name], getattr(p, name)[3::7, 11::5])


# --------------------------------------------------------------------------------------
# bad files


def test_bad_files_are_named_in_the_error(tmp_path, real):
    good = write_partial(real, tmp_path / "good_partial.fits")
    data = good.read_bytes()

    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(image)
    with pytest.raises(ValueError, match=r"image\.fits is not an mvmflow partial"):
        PartialFile.open(image)

    text = tmp_path / "notes.fits"
    text.write_text("not a FITS file\n" * 300)
    with pytest.raises(ValueError, match=r"notes\.fits"):
        PartialFile.open(text)

    old = tmp_path / "old_partial.fits"
    with fits.open(good) as hdul:
        hdul[0].header["PARTVER"] = 1
        hdul.writeto(old)
    with pytest.raises(ValueError, match=r"old_partial\.fits: partial layout version 1"):
        PartialFile.open(old)

    for cut in (len(data) // 2, len(data) - 100, 2880 * 3, 100):
        short = tmp_path / f"short{cut}_partial.fits"
        short.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"short{cut}_partial\.fits"):
            PartialFile.open(short).read()

    # a damaged compressed chunk, and a damaged span index
    pf = PartialFile.open(good)
    info = pf._arrays["weight"]
    offset, nbytes, codec = info.chunks[0][0]
    assert codec == 1
    broken = bytearray(data)
    at = info.data_at + offset + nbytes // 2
    broken[at:at + 8] = b"\xff" * 8
    (tmp_path / "zbad_partial.fits").write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"zbad_partial\.fits: corrupt"):
        PartialFile.open(tmp_path / "zbad_partial.fits").read()
    broken = bytearray(data)
    broken[pf._spans_at + 8:pf._spans_at + 16] = (10**6).to_bytes(8, "big")  # NX of row 0
    (tmp_path / "sbad_partial.fits").write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"sbad_partial\.fits: corrupt"):
        PartialFile.open(tmp_path / "sbad_partial.fits").window(CELL)

    # a file replaced after it was opened is not read with the old index
    pf = PartialFile.open(good)
    write_partial(synthetic(), good)
    with pytest.raises(ValueError, match="changed since"):
        pf.read()


# --------------------------------------------------------------------------------------
# patches


def patched(p: Partial, rows, cols, seed=5):
    """``p`` with new values at some pixels (NaN and -0.0 flux, zero weight and nchips
    among them), and those values."""
    rng = np.random.default_rng(seed)
    flux = rng.normal(0, 100, rows.size).astype(np.float32)
    weight = rng.uniform(0, 50, rows.size).astype(np.float32)
    nchips = rng.integers(0, 3, rows.size).astype(np.uint8)
    flux[:3] = [np.nan, -0.0, 0.0]
    weight[2] = nchips[2] = 0
    want = Partial(p.flux.copy(), p.weight.copy(), p.nchips.copy(), p.frame, p.box_x0,
                   p.box_y0, p.filename, p.ipppssoo, p.exptime, p.params, p.chips)
    want.flux[rows, cols], want.weight[rows, cols], want.nchips[rows, cols] = flux, weight, nchips
    return want, flux, weight, nchips


def stored_pixels(p: Partial, n: int, seed=3):
    """``n`` distinct pixels inside the row spans of ``p`` (box coordinates), unsorted."""
    pf_spans = partials._spans([p.flux, p.weight, p.nchips])
    rows = np.repeat(np.arange(p.shape[0]), pf_spans[:, 1])
    cols = np.concatenate([np.arange(x0, x0 + k) for x0, k, _ in pf_spans])
    pick = np.random.default_rng(seed).choice(rows.size, n, replace=False)
    return rows[pick], cols[pick]


def test_a_patch_reads_as_the_partial_it_stands_for(tmp_path, monkeypatch):
    """Every read of a patch (whole, windows, rows, strided regions, points) gives the base's
    pixels with the patch applied, bit for bit; the patch holds those pixels alone."""
    monkeypatch.setattr(partials, "CHUNK_VALUES", 1000)
    monkeypatch.setattr(partials, "_BLOCK_VALUES", 3000)  # several read blocks
    p = synthetic(seed=4)
    base = PartialFile.open(write_partial(p, tmp_path / "partials" / "base.fits"))
    rows, cols = stored_pixels(p, 400)
    want, flux, weight, nchips = patched(p, rows, cols)
    chips = [dict(p.chips[0], ngood=990)]
    path = tmp_path / "partials_cr" / "final.fits"
    write_partial(partials.PartialPatch(base, rows, cols, flux, weight, nchips, chips,
                                        {**PARAMS, "final": True}), path)
    assert path.stat().st_size < 0.25 * base.path.stat().st_size
    pf = PartialFile.open(path)
    assert pf.base is not None and pf.base.path == base.path
    assert pf.chips == chips and pf.params["final"] is True
    assert_same_partial(pf.read(), want)
    rng = np.random.default_rng(8)
    for _ in range(30):
        x0, y0 = (int(v) for v in rng.integers(-60, 260, 2))
        w, h = (int(v) for v in rng.integers(1, 200, 2))
        frame = CELL.window(p.box_x0 + x0, p.box_y0 + y0, w, h)
        ref = window_reference(want, frame)
        got = pf.window(frame)
        if ref is None:
            assert got.empty
        else:
            assert_same_partial(got, ref)
    for _ in range(20):
        key = tuple(slice(*sorted(int(v) for v in rng.integers(0, n + 1, 2)),
                          int(rng.integers(1, 7))) for n in p.shape)
        got = pf.read_arrays(ARRAYS, *key)
        for name in ARRAYS:
            assert same_bits(got[name], getattr(want, name)[key]), name
    # points, stored or not, outside the box too
    ys = np.r_[rows[:50], 0, 40, 81, -1, p.shape[0]]
    xs = np.r_[cols[:50], 0, 0, 100, 5, 5]
    got = pf.read_points(ys, xs)
    inside = (ys >= 0) & (ys < p.shape[0])
    for name in ARRAYS:
        ref = np.zeros(ys.size, dtype=getattr(want, name).dtype)
        ref[inside] = getattr(want, name)[ys[inside], xs[inside]]
        assert same_bits(got[name], ref), name
    # the same patch written twice is the same bytes; an empty patch is the base
    again = tmp_path / "partials_cr" / "again.fits"
    write_partial(partials.PartialPatch(base, rows, cols, flux, weight, nchips, chips,
                                        {**PARAMS, "final": True}), again)
    assert again.read_bytes() == path.read_bytes()
    none = np.zeros(0, np.int64)
    empty = write_partial(partials.PartialPatch(
        base, none, none, none.astype(np.float32), none.astype(np.float32),
        none.astype(np.uint8), p.chips, PARAMS), tmp_path / "empty_patch.fits")
    assert_same_partial(PartialFile.open(empty).read(), p)


def test_a_patch_refuses_what_it_cannot_stand_for(tmp_path):
    """Pixels not stored, twice or mismatched are refused at writing; a missing, changed,
    damaged or patched base, and a damaged patch, at opening, naming the file."""
    p = synthetic(seed=6)
    base_path = write_partial(p, tmp_path / "base.fits")
    base = PartialFile.open(base_path)
    rows, cols = stored_pixels(p, 50)
    _, flux, weight, nchips = patched(p, rows, cols)

    def patch(r=rows, c=cols, f=flux, b=base):
        return partials.PartialPatch(b, r, c, f, weight, nchips, p.chips, PARAMS)

    assert not (p.flux[0].any() or p.weight[0].any() or p.nchips[0].any())  # nothing stored
    with pytest.raises(ValueError, match="outside the stored spans"):
        write_partial(patch(r=np.r_[rows[:-1], 0], c=np.r_[cols[:-1], 50]),
                      tmp_path / "x.fits")
    with pytest.raises(ValueError, match="given twice"):
        write_partial(patch(r=np.r_[rows[:-1], rows[0]], c=np.r_[cols[:-1], cols[0]]),
                      tmp_path / "x.fits")
    with pytest.raises(ValueError, match="one flux, weight and nchips"):
        write_partial(patch(f=flux[:-1]), tmp_path / "x.fits")
    assert not (tmp_path / "x.fits").exists()

    good = write_partial(patch(), tmp_path / "good_patch.fits")
    data = good.read_bytes()
    # a patch of a patch
    with pytest.raises(ValueError, match="is a patch itself"):
        PartialFile.open(write_partial(patch(b=PartialFile.open(good)),
                                       tmp_path / "twice_patch.fits"))
    # a damaged patch: refused and removed
    broken = bytearray(data)
    broken[-3000] ^= 0xFF
    bad = tmp_path / "bad_patch.fits"
    bad.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"bad_patch\.fits: corrupt"):
        PartialFile.open(bad)
    assert not bad.exists()
    # the base damaged (same size): refused through the patch and removed
    damaged = tmp_path / "damaged_patch.fits"
    damaged.write_bytes(data)
    saved = base_path.read_bytes()
    broken = bytearray(saved)
    broken[base._arrays["weight"].data_at + 10] ^= 0xFF
    base_path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"damaged_patch\.fits: its base partial: base\.fits: "
                                         r"corrupt partial file: .*damaged after it was written"):
        PartialFile.open(damaged)
    assert not base_path.exists()
    base_path.write_bytes(saved)
    assert PartialFile.open(damaged).base is not None
    # the base made again with other pixels: the patch is stale, refused and removed
    stale = tmp_path / "stale_patch.fits"
    stale.write_bytes(data)
    write_partial(synthetic(seed=7), base_path)
    with pytest.raises(ValueError, match=r"stale_patch\.fits: made against another "
                                         r"version of base\.fits.*removed"):
        PartialFile.open(stale)
    assert not stale.exists()
    # the base missing
    lost = tmp_path / "lost_patch.fits"
    lost.write_bytes(data)
    base_path.unlink()
    with pytest.raises(ValueError, match=r"lost_patch\.fits: its base partial base\.fits "
                                         r"is missing"):
        PartialFile.open(lost)
