"""Overlap-connected groups of exposures."""

import re

import numpy as np
import pytest

from mvmflow.groups import convex_hull, group_name, hulls_overlap, overlap_groups


def square(ra, dec, size=0.02):
    """A chip outline of ``size`` degrees on a side centred at (ra, dec)."""
    h = size / 2
    c = np.cos(np.radians(dec))
    return np.array([[ra - h / c, dec - h], [ra + h / c, dec - h],
                     [ra + h / c, dec + h], [ra - h / c, dec + h]])


def test_convex_hull_drops_interior_points():
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [0.5, 0.0]])
    hull = convex_hull(pts)
    assert len(hull) == 4
    assert {tuple(p) for p in hull} == {(0, 0), (1, 0), (1, 1), (0, 1)}


def test_overlap_needs_shared_area():
    a = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    assert hulls_overlap(a, a + 0.5)
    assert not hulls_overlap(a, a + [1.0, 0.0])  # a shared edge only
    assert not hulls_overlap(a, a + [1.5, 1.5])
    # diamonds whose bounding boxes overlap but which do not
    d = np.array([[1, 0], [2, 1], [1, 2], [0, 1]], float)
    assert not hulls_overlap(d, d + [1.6, 1.6])


def test_groups_are_connected_components():
    # A overlaps B, B overlaps C (not A), D is far away; E overlaps D through its 2nd chip
    fps = [
        [square(84.90, -69.15)],
        [square(84.93, -69.15)],
        [square(84.98, -69.15)],
        [square(86.0, -69.0)],
        [square(85.5, -69.0), square(86.01, -69.0)],
    ]
    assert overlap_groups(fps) == [[0, 1, 2], [3, 4]]
    assert overlap_groups(fps[::-1]) == [[0, 1], [2, 3, 4]]
    assert overlap_groups([]) == []


def test_groups_across_ra_wrap():
    fps = [[square(359.995, 0.0)], [square(0.005, 0.0)], [square(0.5, 0.0)]]
    assert overlap_groups(fps) == [[0, 1], [2]]


@pytest.mark.parametrize("members, name", [
    (["jcxx02aaq_flc.fits", "ib2v01abq_flt.fits"], "align-ib2v01abq"),
    (["jcxx02aaq_flc.fits"], "align-jcxx02aaq"),
    (["/data/b/jcxx02aaq_flc.fits", "/data/a/ib2v01abq_flt.fits"], "align-ib2v01abq"),
    (["hst_12345_01_wfc3_uvis_f555w_ib2v01ab_flc.fits"], "align-ib2v01ab"),
    (["My-Field_flc.fits", "zz_flc.fits"], "align-myfield"),
])
def test_group_name_is_order_free(members, name):
    assert group_name(members) == name
    assert group_name(members[::-1]) == name
    assert re.fullmatch(r"align-[a-z0-9]+", name)  # the Snakefile's agroup wildcard


def test_group_name_needs_a_member():
    with pytest.raises(ValueError):
        group_name([])
    with pytest.raises(ValueError):
        group_name(["___.fits"])
