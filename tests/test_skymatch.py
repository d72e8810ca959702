"""Sky matching on partials: relative offsets from overlaps (mvmflow.skymatch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from mvmflow import grid
from mvmflow.combine import combine_partials
from mvmflow.skymatch import clipped_stat, match_sky, sky_match

FRAME = grid.SkyCell(81, 14, 14).frame.window(3000, 4000, 160, 60)


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


def scene(seed=1):
    """A sky scene on FRAME: smooth structure and a few bright stars, zero median-ish."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:FRAME.ny, 0:FRAME.nx]
    img = 0.05 * np.sin(xx / 13.0) * np.cos(yy / 7.0)
    for _ in range(25):
        x, y = rng.uniform(0, FRAME.nx), rng.uniform(0, FRAME.ny)
        img += 50.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0)
    return img


def partial(k, ix, iy, nx, ny, pedestal, truth, *, exptime=100.0, noise=0.002, seed=0,
            hole=False):
    rng = np.random.default_rng(seed + 100 * k)
    data = truth[iy:iy + ny, ix:ix + nx] + pedestal + rng.normal(0, noise, (ny, nx))
    weight = np.full((ny, nx), exptime, dtype=np.float32)
    if hole:  # a masked patch: zero weight and NaN-filled flux
        weight[5:15, 5:15] = 0
    flux = (weight * data).astype(np.float32)
    flux[weight == 0] = np.nan
    return FakePartial(
        file=f"ib2v{k:04d}q_flc.fits", ipppssoo=f"ib2v{k:04d}", exptime=exptime,
        frame=FRAME, box_x0=ix, box_y0=iy, flux=flux, weight=weight,
        nchips=(weight > 0).astype(np.uint8),
    )


def check_relative(offsets, files, pedestals, tol=1e-3):
    for a in range(len(files)):
        for b in range(len(files)):
            got = offsets[files[a]] - offsets[files[b]]
            want = pedestals[a] - pedestals[b]
            assert abs(got - want) < tol, (files[a], files[b], got, want)


def test_chain_recovers_injected_pedestals():
    truth = scene()
    peds = [0.40, 1.25, 0.10, 0.75]
    parts = [partial(k, 33 * k, 5, 60, 50, p, truth, hole=(k == 1))
             for k, p in enumerate(peds)]
    res = sky_match(parts, FRAME)
    files = [p.file for p in parts]
    check_relative(res.offsets, files, peds)
    # the lowest offset of the (single) group is exactly 0, the rest positive
    assert res.groups == [[0, 1, 2, 3]]
    assert min(res.offsets.values()) == 0.0
    assert res.offsets[files[2]] == 0.0
    assert len(res.pairs) == 3  # 0-1, 1-2, 2-3 overlap; 0-2 does not
    assert list(res.offsets) == files


def test_recovery_is_robust_to_stars_in_overlaps_and_noise():
    truth = scene(seed=7)
    peds = [2.0, -1.5, 0.3]
    parts = [partial(k, 20 * k, 0, 120, 60, p, truth, noise=0.05, seed=3)
             for k, p in enumerate(peds)]
    offsets = match_sky(parts, FRAME)
    check_relative(offsets, [p.file for p in parts], peds, tol=5e-3)


def test_disconnected_groups_are_fixed_separately():
    truth = scene(seed=2)
    peds = [0.5, 0.9, 3.0, 2.2]
    # group 1: x 0..50 and 30..80; group 2: x 100..130 and 120..160 (no contact)
    boxes = [(0, 50), (30, 50), (100, 30), (120, 40)]
    parts = [partial(k, ix, 0, nx, 60, p, truth) for k, ((ix, nx), p) in enumerate(zip(boxes, peds, strict=True))]
    res = sky_match(parts, FRAME)
    f = [p.file for p in parts]
    assert res.groups == [[0, 1], [2, 3]]
    check_relative(res.offsets, f[:2], peds[:2])
    check_relative(res.offsets, f[2:], peds[2:])
    assert res.offsets[f[0]] == 0.0 and res.offsets[f[3]] == 0.0
    assert res.offsets[f[1]] == pytest.approx(0.4, abs=1e-3)
    assert res.offsets[f[2]] == pytest.approx(0.8, abs=1e-3)


def test_single_and_isolated_exposures_get_zero():
    truth = scene()
    one = partial(0, 0, 0, 40, 40, 5.0, truth)
    assert match_sky([one], FRAME) == {one.file: 0.0}
    lone = partial(1, 120, 0, 40, 40, 9.0, truth)
    res = sky_match([one, lone], FRAME)
    assert res.offsets == {one.file: 0.0, lone.file: 0.0}
    assert res.groups == [[0], [1]] and res.pairs == []


def test_zero_weight_overlap_does_not_count():
    truth = scene()
    a = partial(0, 0, 0, 60, 60, 1.0, truth)
    b = partial(1, 40, 0, 60, 60, 2.0, truth)
    b.weight[:, :20] = 0  # b's only overlap with a has no weight
    b.flux[:, :20] = np.nan
    res = sky_match([a, b], FRAME)
    assert res.pairs == [] and res.offsets == {a.file: 0.0, b.file: 0.0}


def test_min_overlap_threshold():
    truth = scene()
    a = partial(0, 0, 0, 60, 60, 1.0, truth)
    b = partial(1, 58, 0, 60, 60, 2.0, truth)  # 2 x 60 = 120 common pixels
    assert len(sky_match([a, b], FRAME).pairs) == 1
    assert sky_match([a, b], FRAME, min_overlap=121).pairs == []


def test_order_of_partials_does_not_change_offsets():
    truth = scene()
    peds = [0.4, 1.2, 0.1]
    parts = [partial(k, 40 * k, 0, 70, 60, p, truth) for k, p in enumerate(peds)]
    fwd = match_sky(parts, FRAME)
    rev = match_sky(parts[::-1], FRAME)
    for f in fwd:
        assert fwd[f] == pytest.approx(rev[f], abs=1e-9)
    assert list(rev) == [p.file for p in parts[::-1]]


def test_offsets_level_the_combined_layer():
    truth = scene()
    peds = [0.0, 1.0]
    parts = [partial(k, 50 * k, 0, 90, 60, p, truth, noise=0.0) for k, p in enumerate(peds)]
    offsets = match_sky(parts, FRAME)
    arrays = combine_partials(parts, FRAME, offsets)
    np.testing.assert_allclose(arrays.sci[:, :140], truth[:, :140], atol=1e-4)
    raw = combine_partials(parts, FRAME)
    assert np.nanmax(np.abs(raw.sci[:, :140] - truth[:, :140])) > 0.9


def test_mean_and_mode_statistics_also_recover():
    rng = np.random.default_rng(5)
    truth = np.zeros(FRAME.shape)
    peds = [1.0, 1.7]
    parts = []
    for k, p in enumerate(peds):
        data = truth[:, 60 * k:60 * k + 100] + p + rng.normal(0, 0.01, (60, 100))
        w = np.ones_like(data)
        parts.append(FakePartial(f"ib2v{k:04d}q_flc.fits", f"ib2v{k:04d}", 1.0,
                                 FRAME, 60 * k, 0, w * data, w))
    for stat in ("mean", "mode"):
        off = match_sky(parts, FRAME, stat)
        assert off[parts[1].file] - off[parts[0].file] == pytest.approx(0.7, abs=3e-3), stat


def test_clipped_stat_follows_imagestats_rules():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(10.0, 1.0, 10000), np.full(50, 1e4), [-500.0]])
    med, n = clipped_stat(v, "median")
    assert med == pytest.approx(10.0, abs=0.05)
    assert 9990 <= n <= 10000  # the 1e4 outliers and the value below `lower` are gone
    mean, _ = clipped_stat(v, "mean")
    assert mean == pytest.approx(10.0, abs=0.05)
    # no clipping and no lower limit: the plain median of everything
    assert clipped_stat(v, "median", nclip=0, lower=None) == (float(np.median(v)), v.size)
    assert clipped_stat(np.array([-200.0]), "median") == (pytest.approx(np.nan, nan_ok=True), 0)
    with pytest.raises(ValueError, match="sky statistic"):
        clipped_stat(v, "midpt")


def test_report_lines_name_every_exposure():
    truth = scene()
    parts = [partial(k, 40 * k, 0, 70, 60, 0.1 * k, truth) for k in range(3)]
    lines = sky_match(parts, FRAME).lines()
    text = "\n".join(lines)
    for p in parts:
        assert p.file in text
    assert "lowest offset of each group is 0" in lines[0]


def test_large_overlaps_are_sampled_deterministically():
    truth = scene(seed=4)
    peds = [0.3, 0.9]
    parts = [partial(k, 50 * k, 0, 110, 60, p, truth, noise=0.002) for k, p in enumerate(peds)]
    full = sky_match(parts, FRAME, max_pixels=None)
    sampled = sky_match(parts, FRAME, max_pixels=500)  # 60 x 60 overlap -> every 3rd pixel
    assert full.pairs[0].npix == 3600 and sampled.pairs[0].npix == 3600
    assert sampled.pairs[0].n_i % 9 == 0  # kept counts scaled back by step**2
    check_relative(full.offsets, [p.file for p in parts], peds)
    check_relative(sampled.offsets, [p.file for p in parts], peds, tol=3e-3)  # 400 px only
    assert sampled.offsets != full.offsets  # a different (sub-)set of pixels was used
    assert sky_match(parts, FRAME, max_pixels=500).offsets == sampled.offsets
