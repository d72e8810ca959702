"""Access to the MAST archive: region queries, verified downloads, HAP products, PSF databases.

Modules (docs/archive.md):

- :mod:`mvmflow.archive.service`: the archive's base URL (``--mast-url``, ``MVMFLOW_MAST_URL``,
  config ``archive.mast_url``) and the URLs built from it;
- :mod:`mvmflow.archive.download`: downloads that never leave a bad file under its final name
  (temporary name, size and checksum checks, resume, retries, bounded parallel transfers,
  safe tar extraction);
- :mod:`mvmflow.archive.query`: exposures of a sky region (astroquery's ``Observations``
  pointed at the configured server) and the product table, the run's record of what was
  asked and what arrived;
- :mod:`mvmflow.archive.hap`: the archive's own MVM layer products of a box and cutouts of
  them from MAST's HAP cutout service (the reference's ``hapcut_utils``);
- :mod:`mvmflow.archive.psf`: the WFC3 and WFPC2 PSF databases.

No module here imports the pipeline's resampling or product code: fetching data is
independent of processing it.
"""
