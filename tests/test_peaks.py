"""mvmflow.peaks against photutils' own peak search (the same pixels, the same order)."""

import warnings

import numpy as np
import pytest
from photutils.detection import DAOStarFinder, find_peaks

from mvmflow.peaks import circular_footprint, daofind_peaks, local_peaks


def _photutils(data, threshold, mask=None, border=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = find_peaks(data, threshold, mask=mask, border_width=border, **kw)
    if table is None:
        return np.zeros(0, int), np.zeros(0, int)
    return np.asarray(table["y_peak"]), np.asarray(table["x_peak"])


def _images():
    rng = np.random.default_rng(7)
    smooth = rng.normal(0.0, 1.0, (90, 120)).astype(np.float32)
    # plateaus and ties: small integers, so equal neighbours are common
    ties = rng.integers(-3, 4, (64, 70)).astype(np.float32)
    # negative everywhere but for a few peaks: the edge counts as 0, so a peak near the edge
    # must also be above 0
    negative = -np.abs(rng.normal(5.0, 1.0, (50, 60))).astype(np.float32)
    negative[[0, 2, 25, 49], [3, 59, 30, 0]] = [-0.5, 1.0, 2.0, 0.5]
    return {"smooth": smooth, "ties": ties, "negative": negative}


@pytest.mark.parametrize("name", ["smooth", "ties", "negative"])
@pytest.mark.parametrize("radius", [5.25, 5.0, 3.0, 2.5])
def test_the_peaks_of_a_circular_footprint_are_photutils(name, radius):
    """photutils' definition: the maximum filter with the footprint. Its fast path
    (``min_separation``) gives the same peaks for an odd footprint (integer radius); for
    an even one it misses a few (module notes), and finds none that are not peaks."""
    data = _images()[name]
    threshold = np.float32(-10.0) if name == "negative" else np.float32(0.5)
    ours = local_peaks(data, threshold, circular_footprint(radius))
    exact = _photutils(data, threshold, footprint=circular_footprint(radius))
    assert ours[0].size > 3
    np.testing.assert_array_equal(ours[0], exact[0])
    np.testing.assert_array_equal(ours[1], exact[1])
    fast = _photutils(data, threshold, min_separation=radius)
    if circular_footprint(radius).shape[0] % 2:
        np.testing.assert_array_equal(ours[0], fast[0])
        np.testing.assert_array_equal(ours[1], fast[1])
    else:
        assert set(zip(*fast, strict=True)) <= set(zip(*ours, strict=True))


def test_photutils_fast_search_misses_peaks_of_an_even_footprint():
    """The peaks it misses (why :func:`local_peaks` follows the definition, not the fast
    path): a pixel above everything in its circle but below a corner of the 7 x 7 box."""
    data = _images()["smooth"]
    ours = set(zip(*local_peaks(data, np.float32(0.5), circular_footprint(5.25)), strict=True))
    fast = set(zip(*_photutils(data, np.float32(0.5), min_separation=5.25), strict=True))
    assert fast < ours


@pytest.mark.parametrize("name", ["smooth", "ties", "negative"])
def test_a_mask_a_border_and_a_threshold_image(name):
    data = _images()[name]
    rng = np.random.default_rng(3)
    mask = rng.random(data.shape) < 0.1
    threshold = (data.mean() + 0.3 * rng.standard_normal(data.shape)).astype(np.float32)
    footprint = np.ones((5, 5), bool)
    footprint[0, 0] = footprint[-1, -1] = False
    for border in ((0, 0), (2, 3), (4, 1)):
        ours = local_peaks(data, threshold, footprint, mask, border)
        theirs = _photutils(data, threshold, mask, border, footprint=footprint)
        assert ours[0].size > 0
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])


def test_no_peaks_in_a_constant_image_and_a_footprint_that_misses_its_box():
    y, x = local_peaks(np.ones((20, 20), np.float32), 0.0, circular_footprint(3.0))
    assert y.size == 0 and x.size == 0
    cross = np.zeros((3, 3), bool)
    cross[1, :] = cross[:, 1] = True
    with pytest.raises(ValueError, match="3 x 3"):
        local_peaks(np.zeros((5, 5)), 0.0, cross)


def _star_field(seed=11, shape=(300, 340), n=120):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    image = rng.normal(0.0, 2.0, shape)
    for x0, y0, f in zip(rng.uniform(3, shape[1] - 3, n), rng.uniform(3, shape[0] - 3, n),
                         rng.uniform(50, 3000, n), strict=True):
        image += f / (2 * np.pi * 0.9**2) * np.exp(-((xx - x0)**2 + (yy - y0)**2) / (2 * 0.9**2))
    image[rng.random(shape) < 0.002] += 400.0  # single-pixel hits
    return image.astype(np.float32)


@pytest.mark.parametrize("min_separation", [0.0, 3.0, 5.0])
def test_daofind_with_these_peaks_finds_its_own_catalogue(min_separation):
    image = _star_field()
    mask = np.zeros(image.shape, bool)
    mask[100:110, :] = True
    threshold = np.full(image.shape, 10.0, np.float32)
    options = dict(threshold=threshold, fwhm=2.1, exclude_border=True,
                   sharpness_range=(0.2, 1.0), roundness_range=(-1.0, 1.0),
                   min_separation=min_separation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = DAOStarFinder(**options).find_stars(image, mask=mask)
        peaks = daofind_peaks(DAOStarFinder(**options), image, mask)
        ours = DAOStarFinder(**options, xycoords=peaks).find_stars(image, mask=mask)
    assert len(theirs) > 50
    assert ours.colnames == theirs.colnames
    for name in theirs.colnames:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_no_peak_above_the_threshold_is_none():
    image = _star_field(n=5)
    finder = DAOStarFinder(threshold=1e6, fwhm=2.1)
    assert daofind_peaks(finder, image) is None
