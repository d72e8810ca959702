"""Overlap-connected groups of exposures, the unit of alignment.

Two exposures are *connected* when a chip footprint of one overlaps a chip footprint of the
other; a group is a connected component of that relation. Aligning per group (rather than
per sky cell) gives neighbouring sky cells one shared solution for the exposures they
share, so their layers agree in the overlap.

Footprints are compared as convex hulls on a common tangent plane (the separating-axis
test). Chip outlines of HST detectors are convex to far better than a pixel, so the hull is
exact enough for deciding overlap.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mvmflow.names import parse_exposure

__all__ = ["convex_hull", "hulls_overlap", "overlap_groups", "connected_components",
           "group_name"]


def _tangent(ra, dec, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic projection (degrees) of ``ra, dec`` about ``ra0, dec0``."""
    ra, dec = np.radians(ra), np.radians(dec)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.degrees(np.column_stack([xi, eta]))


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (monotone chain), counter-clockwise, of (N, 2) points."""
    pts = np.unique(np.asarray(points, dtype=float), axis=0)
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def hulls_overlap(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    """True when convex polygons ``a`` and ``b`` (N, 2) overlap.

    With ``margin = 0`` they must share interior area (touching along an edge or at a
    corner is not overlap); a positive ``margin`` (same units) also connects polygons
    whose gap is smaller than it.
    """
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.column_stack([-edges[:, 1], edges[:, 0]])
        lengths = np.hypot(normals[:, 0], normals[:, 1])
        normals = normals[lengths > 0] / lengths[lengths > 0, None]
        for n in normals:
            pa, pb = a @ n, b @ n
            if pa.max() + margin <= pb.min() or pb.max() + margin <= pa.min():
                return False
    return True


def overlap_groups(footprints: Sequence[Sequence[np.ndarray]],
                   margin_arcsec: float = 0.0) -> list[list[int]]:
    """Connected components of exposures whose chip footprints overlap.

    Parameters
    ----------
    footprints : sequence of sequence of ndarray
        For each exposure, its chips' outlines as (N, 2) arrays of (ra, dec) in degrees.
    margin_arcsec : float
        Exposures closer than this also connect (pointing errors of the header WCS can
        hide a true overlap).

    Returns
    -------
    list of list of int
        Indices of the exposures of each group, ascending; groups ordered by their first
        index.
    """
    n = len(footprints)
    if n == 0:
        return []
    allpts = np.concatenate([np.asarray(c, float) for chips in footprints for c in chips])
    ra0 = float(np.degrees(np.arctan2(np.sin(np.radians(allpts[:, 0])).mean(),
                                      np.cos(np.radians(allpts[:, 0])).mean())))
    dec0 = float(np.median(allpts[:, 1]))
    hulls = [[convex_hull(_tangent(np.asarray(c)[:, 0], np.asarray(c)[:, 1], ra0, dec0))
              for c in chips] for chips in footprints]
    edges = [(i, j) for i in range(n) for j in range(i + 1, n)
             if any(len(a) >= 3 and len(b) >= 3 and hulls_overlap(a, b, margin_arcsec / 3600)
                    for a in hulls[i] for b in hulls[j])]
    return connected_components(n, edges)


def connected_components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the graph of ``n`` nodes and ``edges`` (union-find).

    Returns
    -------
    list of list of int
        Nodes of each component, ascending; components ordered by their first node.
    """
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for k in range(n):
        groups.setdefault(find(k), []).append(k)
    return sorted(groups.values(), key=lambda g: g[0])


def group_name(members: Sequence[str | os.PathLike]) -> str:
    """The name of an alignment group: ``align-<rootname of its first member>``.

    This is the one function that names a group: ``groups.json``, the ``align/<group>/``
    directory, the solution files (``group``), ``report.ecsv``, every ``<skycell>_align.ecsv``
    and the logs carry its name.

    Parameters
    ----------
    members : sequence of str or os.PathLike
        The exposures' file names (paths are fine: only the base name is used). The first
        base name in sorted order names the group, so the name does not depend on input
        order. Its rootname is the exposure name's (``ib2v01abq`` of ``ib2v01abq_flc.fits``,
        ``ib2v01ab`` of an SVM name), or for a file not named like an exposure the part of
        its name before the first ``_`` or ``.``; lower-case, ``[a-z0-9]`` only (the
        workflow's ``agroup`` wildcard).

    Notes
    -----
    The name is readable and stays the same while the group's first member does; it does
    not encode the membership. A group whose members change is re-solved because the
    ``align`` job's inputs (the members' exposures, catalogues and records) change, not
    because its name does.

    Raises
    ------
    ValueError
        No members, or a first member whose rootname has no letter or digit.
    """
    names = [Path(m).name for m in members]
    if not names:
        raise ValueError("an alignment group needs at least one member")
    first = min(names)
    try:
        root = parse_exposure(first).rootname
    except ValueError:
        root = re.split(r"[_.]", first, maxsplit=1)[0]
    root = re.sub(r"[^a-z0-9]", "", root.lower())
    if not root:
        raise ValueError(f"cannot name an alignment group after {first!r}")
    return f"align-{root}"


def write_groups(groups: dict[str, list[str]], path: str | os.PathLike) -> None:
    """Write the alignment groups ``{group: [input keys]}`` (``groups.json``), atomically.

    This module is the file's one owner: :func:`read_groups` is its only reader.
    """
    import json

    from mvmflow.workflow import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"groups": groups}, indent=1, sort_keys=True) + "\n")


def read_groups(path: str | os.PathLike) -> dict[str, list[str]]:
    """The groups written by :func:`write_groups`."""
    import json

    return {str(k): [str(m) for m in v]
            for k, v in json.loads(Path(path).read_text())["groups"].items()}
