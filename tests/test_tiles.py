"""Tests of mvmflow.tiles: tiled reduce and the tile-by-tile product writer."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits
from test_products import LAYER, PARAMS, make_record

from mvmflow import grid, products
from mvmflow.combine import combine_partials
from mvmflow.partials import Partial, PartialFile, write_partial
from mvmflow.plan import tile_boxes
from mvmflow.tiles import (
    TileFile,
    reduce_layer,
    reduce_tile,
    write_tile,
    write_tiled_layer,
)

FRAME = grid.SkyCell(81, 14, 14).frame.window(1000, 2000, 230, 170)
N_INPUTS = 35  # two context planes


def _partials(tmp_path):
    """Random partial files of 35 exposures on boxes of the plane around FRAME."""
    rng = np.random.default_rng(5)
    plane = grid.SkyCell(81, 14, 14).frame
    members, paths = [], {}
    for k in range(N_INPUTS):
        nx, ny = rng.integers(20, 120, size=2)
        bx, by = rng.integers(-30, 220, size=2)
        box_frame = plane.window(1000 + int(bx) - 7, 2000 + int(by) - 3, int(nx) + 20,
                                 int(ny) + 9)
        w = (rng.random((ny, nx)) * 300 + 50).astype(np.float32)
        w[rng.random((ny, nx)) < 0.1] = 0
        flux = (w * rng.normal(2.0, 1.0, (ny, nx))).astype(np.float32)
        chips = rng.integers(0, 3, (ny, nx)).astype(np.uint8)
        name = f"ib2v{k:04d}q_flc.fits"
        p = Partial(flux, w, chips, box_frame, 7, 3, name, f"ib2v{k:04d}", 100.0 + k)
        path = tmp_path / "partials" / f"{k}.fits"
        path.parent.mkdir(exist_ok=True)
        write_partial(p, path)
        members.append((name, 100.0 + k))
        paths[name] = path
    return members, paths


def _tiled(tmp_path, members, paths, size, tag):
    tiles = []
    for box in tile_boxes(FRAME.nx, FRAME.ny, size):
        arrays = reduce_tile(FRAME.window(*box), members, paths, {members[3][0]: 0.25})
        tiles.append((box, write_tile(tmp_path / f"{tag}-{box[0]}-{box[1]}.fits", arrays, box)))
    out = tmp_path / tag / LAYER.filename
    out.parent.mkdir()
    files = [m[0] for m in members]
    sky = [0.25 if i == 3 else 0.0 for i in range(len(files))]
    recs = [make_record(k, 100.0 + k) for k in range(N_INPUTS)]
    write_tiled_layer(out, FRAME, tiles, LAYER, recs, PARAMS, [m[1] for m in members], sky,
                      files)
    return out


def test_partial_window_reads_the_same_pixels(tmp_path):
    members, paths = _partials(tmp_path)
    whole = PartialFile.open(paths[members[0][0]]).read()
    tile = FRAME.window(40, 30, 50, 40)
    part = PartialFile.open(paths[members[0][0]]).window(tile)
    ref = combine_partials([whole], tile)
    got = combine_partials([part], tile)
    np.testing.assert_array_equal(ref.wht, got.wht)
    np.testing.assert_array_equal(ref.sci, got.sci)


def test_tiled_equals_untiled_bit_for_bit_and_equals_the_in_memory_layer(tmp_path):
    members, paths = _partials(tmp_path)
    one = _tiled(tmp_path, members, paths, 4096, "one")
    many = _tiled(tmp_path, members, paths, 64, "many")
    assert one.read_bytes() == many.read_bytes()

    # the same arrays and headers as the in-memory writer (statistics to rounding)
    arrays = combine_partials([PartialFile.open(paths[m[0]]).read() for m in members], FRAME,
                              {members[3][0]: 0.25})
    ref = tmp_path / "ref" / LAYER.filename
    ref.parent.mkdir()
    products.write_layer(ref, arrays, FRAME, LAYER,
                         [make_record(k, 100.0 + k) for k in range(N_INPUTS)], PARAMS)
    with fits.open(one) as a, fits.open(ref) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for ext in ("SCI", "WHT", "CTX"):
            np.testing.assert_array_equal(a[ext].data, b[ext].data)
            assert a[ext].header == b[ext].header
        assert a[0].data is None and a["CTX"].data.shape == (2, FRAME.ny, FRAME.nx)
        for key in b[0].header:
            if key.startswith(("MEAN", "MED")):
                assert a[0].header[key] == pytest.approx(b[0].header[key], rel=1e-12), key
            else:
                assert a[0].header[key] == b[0].header[key], key
        assert a["HDRTAB"].data.tobytes() == b["HDRTAB"].data.tobytes()


def test_tiles_must_cover_the_frame(tmp_path):
    members, paths = _partials(tmp_path)
    box = [0, 0, 64, 64]
    tile = write_tile(tmp_path / "t.fits", reduce_tile(FRAME.window(*box), members, paths), box)
    with pytest.raises(ValueError, match="cover"):
        write_tiled_layer(tmp_path / LAYER.filename, FRAME, [(box, tile)], LAYER, [], PARAMS,
                          [], [], [m[0] for m in members])


@pytest.mark.parametrize("band_bytes", [32 << 20, 1000])
def test_reduce_layer_in_one_process_equals_tile_jobs_for_any_tile_size(tmp_path, monkeypatch,
                                                                        band_bytes):
    """The sky-cell path (all tiles in one job, spilled to a temporary directory that is
    removed) writes the very bytes of the tile-job path, for tile sizes that cut the frame
    into 1, 6 and 12 tiles, with tiles reduced in 1, 2 or 3 worker processes, rows of tiles
    written in bands of any height, and leaves nothing but the product."""
    from mvmflow import tiles

    monkeypatch.setattr(tiles, "_BAND_BYTES", band_bytes)  # 1000: a band of 1-2 rows
    members, paths = _partials(tmp_path)
    jobs = _tiled(tmp_path, members, paths, 4096, "jobs")
    recs = [make_record(k, 100.0 + k) for k in range(N_INPUTS)]
    for size, threads in ((4096, 1), (100, 1), (64, 1), (100, 2), (64, 3)):
        out = tmp_path / f"one-{size}-{threads}" / LAYER.filename
        out.parent.mkdir()
        reduce_layer(out, FRAME, tile_boxes(FRAME.nx, FRAME.ny, size), members, paths, LAYER,
                     recs, PARAMS, {members[3][0]: 0.25}, threads=threads)
        assert out.read_bytes() == jobs.read_bytes(), (size, threads)
        assert list(out.parent.iterdir()) == [out]


def test_exact_sums_are_exact(monkeypatch):
    """The mean weight's sum: every value's mantissa and exponent, whatever the range of
    exponents and however many values (a sum of floats would round)."""
    from fractions import Fraction

    from mvmflow import tiles

    rng = np.random.default_rng(4)
    values = (rng.random(5000) * 10.0 ** rng.integers(-30, 30, 5000)).astype(np.float32)
    values[:7] = [1.0, 2.0**-126, 3e38, 0.5, 1e-45, 7.0, 7.0]  # extremes, a subnormal, ties
    exact = sum((Fraction(float(v)) for v in values), Fraction(0))
    assert tiles._ExactSum.of(values).value() == exact
    monkeypatch.setattr(tiles, "_EXACT_CHUNK", 999)  # several bincounts
    assert tiles._ExactSum.of(values).value() == exact
    parts = tiles._ExactSum.of(values[:1234])
    parts.add(tiles._ExactSum.of(values[1234:]))
    assert parts.value() == exact
    monkeypatch.setattr(np, "bincount", lambda *a, **k: pytest.fail("no values"))
    assert tiles._ExactSum.of(values[:0]).value() == 0


def test_tile_file_keeps_the_statistics_not_the_arrays(tmp_path):
    """A tile stores SCI, WHT, CTX and histograms (12 bytes per pixel for one context
    plane), and its histograms are those of the reduced arrays."""
    members, paths = _partials(tmp_path)
    box = [0, 0, FRAME.nx, FRAME.ny]
    arrays = reduce_tile(FRAME, members[:20], paths)
    tile = TileFile(write_tile(tmp_path / "t.fits", arrays, box))
    ncov, nexp, expt = tile.histograms()
    covered = arrays.nchips > 0
    assert ncov == covered.sum() > 0
    assert sum(nexp.values()) == ncov and sum(k * v for k, v in nexp.items()) == \
        arrays.nchips[covered].sum()
    assert sum(t * v for t, v in expt.items()) == pytest.approx(
        arrays.exptime[covered].astype(np.float64).sum())
    with fits.open(tile.path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SCI", "WHT", "CTX", "INPUTS",
                                          "NEXPHIST", "EXPTHIST"]
        image_bytes = sum(hdul[n].data.nbytes for n in ("SCI", "WHT", "CTX"))
    assert image_bytes == 12 * FRAME.nx * FRAME.ny
    with pytest.raises(ValueError, match="not an mvmflow tile"):
        TileFile(paths[members[0][0]])


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")
def test_the_reduce_workers_end_with_their_job(tmp_path):
    """A job killed mid-reduce (SIGKILL: the workflow's timeout, an out-of-memory kill)
    leaves none of its worker processes running."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import os, sys, time\n"
        "from mvmflow.tiles import _workers\n"
        "pool = _workers(2)\n"
        "futures = [pool.submit(time.sleep, 60) for _ in range(2)]\n"
        "time.sleep(0.5)\n"
        "print(' '.join(str(p) for p in pool._processes), flush=True)\n"
        "time.sleep(60)\n"
    )
    job = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in job.stdout.readline().split()]
    assert len(workers) == 2

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    assert all(alive(p) for p in workers)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in workers)
