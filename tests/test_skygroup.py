"""Tests of mvmflow.skygroup: group sky offsets from partial files, read lazily."""

import numpy as np

from mvmflow import grid
from mvmflow.partials import Partial, PartialFile, write_partial
from mvmflow.skygroup import group_sky, group_sky_files, lazy_merge_on_plane, merge_on_plane


def _files(tmp_path):
    """Five exposures with their own sky pedestals, each cut into the partials of two
    neighbouring sky cells (overlapping, equal values in the overlap)."""
    rng = np.random.default_rng(3)
    cells = [grid.SkyCell(81, 14, 14).frame, grid.SkyCell(81, 15, 14).frame]
    paths, pedestals = [], {}
    for k in range(5):
        name = f"ib2v{k:04d}q_flc.fits"
        pedestals[name] = 0.3 * k
        # the exposure on the plane: x 21300.. of cell 14 (cell 15 starts 21442 further)
        x0, y0, nx, ny = 21300 + 37 * k, 5000 + 23 * k, 420, 300
        w = np.full((ny, nx), 100.0 + k, np.float32)
        w[rng.random((ny, nx)) < 0.05] = 0
        sci = rng.normal(1.0 + pedestals[name], 0.05, (ny, nx))
        for c, cell in enumerate(cells):
            ox = 0 if c == 0 else 21442
            lo, hi = max(x0 - ox, 0), min(x0 + nx - ox, cell.nx)
            if lo >= hi:
                continue
            cut = slice(lo + ox - x0, hi + ox - x0)
            ww = w[:, cut].copy()
            p = Partial((ww * sci[:, cut]).astype(np.float32), ww,
                        np.ones(ww.shape, np.uint8), cell, lo, y0, name, name[:8], 100.0)
            path = tmp_path / f"{c}_{k}.fits"
            write_partial(p, path)
            paths.append(path)
    return paths, pedestals


def test_lazy_merge_reads_the_same_pixels(tmp_path):
    paths, _ = _files(tmp_path)
    frame, eager = merge_on_plane([PartialFile.open(p).read() for p in paths])
    lazy_frame, lazy = lazy_merge_on_plane(paths)
    assert frame == lazy_frame and len(eager) == len(lazy) == 5
    for e, z in zip(eager, lazy, strict=True):
        assert (e.file, e.box_x0, e.box_y0, e.flux.shape) == (z.file, z.box_x0, z.box_y0,
                                                              z.shape)
        for key in [(slice(None), slice(None)), (slice(3, 250, 7), slice(10, 400, 3))]:
            f, w = z.read(key)
            np.testing.assert_array_equal(f, e.flux[key])
            np.testing.assert_array_equal(w, e.weight[key])


def test_lazy_group_sky_gives_the_same_offsets(tmp_path):
    paths, pedestals = _files(tmp_path)
    eager = group_sky([PartialFile.open(p).read() for p in paths])
    lazy = group_sky_files(paths)
    assert lazy.offsets == eager.offsets
    base = min(pedestals.values())
    for name, value in lazy.offsets.items():  # the pedestals, recovered
        assert abs(value - (pedestals[name] - base)) < 0.01
