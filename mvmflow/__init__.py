"""mvmflow: Hubble multi-visit mosaics (MVM) on the HAP sky-cell grid.

The importable library behind the mvmflow Snakemake workflow. Its modules:

- :mod:`mvmflow.grid`: the HAP all-sky grid (projection cells, sky cells, frames).
- :mod:`mvmflow.names`: every file name the workflow reads or writes.
- :mod:`mvmflow.simulate`: realistic simulated ACS and WFC3 exposures with truth.
"""

__version__ = "0.1.0"
