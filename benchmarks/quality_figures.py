#!/usr/bin/env python
"""The quality figures of a finished simulated run made with ``quality_testing`` on.

Prints two tables for every fine layer of ``<outdir>``:

1. its point-source catalogue (``<layer>_point-cat.ecsv``) against the simulator's truth
   (``<inputs>/truth``): clean stars above S/N 20 with no other true source within 0.5",
   matched within 0.1" at the layer's epoch; median and robust scatter of the position and
   ST-magnitude differences (``mvmflow.simulate.truth.truth_comparison``);
2. the visit-against-visit cross-match of its ``_mvm_overlap_crossmatch.json``
   (mvmflow.visitmatch): per pair of visits the baseline, stars matched, and the medians of
   the motion-corrected and raw differences.

Usage (the demo; ``make demo`` puts its inputs in ``resources/demo``)::

    .venv/bin/snakemake --cores 2 --config quality_testing=true
    .venv/bin/python benchmarks/quality_figures.py results resources/demo/truth
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mvmflow.layercat import read_layer_catalog
from mvmflow.simulate.truth import truth_comparison


def main(outdir: str, truth: str) -> None:
    out, truth_dir = Path(outdir), Path(truth)
    rows, pairs = [], []
    for cat_path in sorted(out.glob("skycells/*/hst_*_all_point-cat.ecsv")):
        layer = next(cat_path.parent.glob(cat_path.name.replace("_point-cat.ecsv", "_dr?.fits")))
        r = truth_comparison(read_layer_catalog(cat_path), layer, truth_dir)
        rows.append((layer.name, r))
        cross = cat_path.parent / cat_path.name.replace("_point-cat.ecsv",
                                                        "_mvm_overlap_crossmatch.json")
        summary = json.loads(cross.read_text())["data"]["summary"]["data"]
        for p in summary["visit pairs"]:
            pairs.append((layer.name, p))
    print("| layer | stars | dRA [mas] | dDec [mas] | dmag (ST) | dmag scatter |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['n']} | {r['dra_mas']:.2f} | {r['ddec_mas']:.2f} | "
              f"{r['dmag']:+.4f} | {r['dmag_scatter']:.4f} |")
    dm = np.array([r["dmag"] for _, r in rows if r["n"] >= 5])
    if dm.size:
        print(f"\nlayers with >= 5 stars: {dm.size}; median of their median dmag "
              f"{np.median(dm):+.4f}, range {dm.min():+.4f} .. {dm.max():+.4f}")
    print("\n| layer | visits | baseline [yr] | matched (ref. motion) | dRA, dDec corrected "
          "[mas] | scatter [mas] | dRA, dDec raw [mas] |")
    print("|---|---|---|---|---|---|---|")
    for name, p in pairs:
        print(f"| {name} | {' x '.join(p['visits'])} | {p['baseline [yr]']:.1f} | "
              f"{p['matched']} ({p['matched with reference motion']}) | "
              f"{p['median dRA cos(dec) [mas]']}, {p['median dDec [mas]']} | "
              f"{p['scatter dRA cos(dec) [mas]']}, {p['scatter dDec [mas]']} | "
              f"{p['raw median dRA cos(dec) [mas]']}, {p['raw median dDec [mas]']} |")
    med = np.array([[p["median dRA cos(dec) [mas]"], p["median dDec [mas]"]]
                    for _, p in pairs if p["median dRA cos(dec) [mas]"] is not None])
    if med.size:
        print(f"\nvisit pairs: {len(med)}; largest |median| corrected offset "
              f"{np.abs(med).max():.2f} mas, median |offset| {np.median(np.abs(med)):.2f} mas")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
