"""Regenerate tests/data/grid_reference.json.gz from the reference implementation.

Run with drizzlepac 3.11.0 installed (test-only dependency)::

    .venv/bin/python tests/make_grid_fixture.py

It records, as computed by drizzlepac.haputils.cell_utils: the WCS of all 2644 projection
cells, and the WCS of every sky cell (fine and coarse) of a set of projection cells that
covers both poles, the RA wrap, the equator and the demo region. The grid tests compare
mvmflow.grid against this file, so they run without drizzlepac.
"""

import gzip
import json
from pathlib import Path

from drizzlepac.haputils import cell_utils

SKYCELL_PCELLS = [0, 1, 9, 81, 1232, 1321, 1322, 1974, 2642, 2643]


def wcs_record(w):
    return {
        "naxis": [int(v) for v in w.pixel_shape],
        "crpix": [float(v) for v in w.wcs.crpix],
        "crval": [float(v) for v in w.wcs.crval],
        "cd": [[float(v) for v in row] for row in w.wcs.cd],
    }


def main():
    out = {"drizzlepac": __import__("drizzlepac").__version__, "projection_cells": {},
           "sky_cells": {}}
    for i in range(2644):
        out["projection_cells"][str(i)] = wcs_record(cell_utils.ProjectionCell(index=i).wcs)
    for p in SKYCELL_PCELLS:
        pc = cell_utils.ProjectionCell(index=p)
        for x in range(1, 22):
            for y in range(1, 22):
                for scale in ("fine", "coarse"):
                    sc = cell_utils.SkyCell(projection_cell=pc, x=x, y=y, scale=scale)
                    out["sky_cells"][f"{sc.sky_cell_id}/{scale}"] = wcs_record(sc.wcs)
    path = Path(__file__).parent / "data" / "grid_reference.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(out, f)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
