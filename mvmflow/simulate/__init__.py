"""Realistic simulated HST exposures (ACS/WFC, ACS/HRC, ACS/SBC, WFC3/UVIS, WFC3/IR) with truth.

No archive data can be downloaded, so every downstream step (drizzling, alignment, cosmic-ray
rejection, flux and astrometry checks) is tested on these exposures. drizzlepac 3.11.0 accepts
them as MVM input (``tests/test_reference_accepts.py``).

Usage::

    from mvmflow.simulate import simulate, PRESETS, true_wcs
    result = simulate("tiny", "/tmp/tiny", seed=1)
    result.exposures          # [Path('/tmp/tiny/j9n501abq_flc.fits'), ...]
    result.truth["sources"]   # Path('/tmp/tiny/truth/sources.ecsv')
    wcs = true_wcs(result.exposures[0], extver=1)   # the WCS the pixels were drawn with

Presets (:data:`PRESETS`): ``tiny`` (tests; seconds), ``tiny_noerr`` (tiny without pointing
errors), ``demo`` (the main job's data set), ``all_detectors`` (every detector, full frame),
``align`` and ``align_pair`` (alignment tests: visits with pointing errors and one with too
few stars), ``cr`` (cosmic-ray rejection), ``fullframe_cr`` (4 full-frame ACS/WFC exposures
with unflagged cosmic rays on one sky cell: the speed benchmark's workload), ``fullcell`` (64
full-frame exposures over one whole sky cell, sparse scene) and ``fullcell_2x2`` (the same over
about 2 x 2 sky cells).
:func:`~mvmflow.simulate.presets.header_set_preset` makes N exposures over projection cell 81
for header-only data sets (``simulate(preset, out, headers_only=True)``: every image extension
an HST constant-value extension, so the files carry headers and WCS but no pixels; screening
and planning accept them). ``simulate(..., workers=N)`` renders in N processes (the same
files).

What is real and what is simulated
----------------------------------
Headers come from real HST files; the distortion (TAN-SIP plus the real NPOL and D2IM lookup
tables) is real; photometric keywords come from the real IMPHTTABs or headers where available
(otherwise rounded published values, marked in ``mvmflow/data/hst/filters.csv``); stars are
drawn with the real drizzlepac model PSFs. ``mvmflow/data/hst/README.md`` documents the origin
of every value.

Geometry
--------
Pixels are rendered through the *true* WCS of each chip: source pixel positions are
``true_wcs.all_world2pix`` of the source's position at the exposure epoch (proper motions
applied; parallax is not simulated), including SIP and the lookup tables. Multi-chip
detectors keep the relative chip geometry of the real template exposure. The header carries
the true WCS moved by the visit's pointing error (``exposures.ecsv``: ``offset_dx``,
``offset_dy`` arcsec east/north and ``rotation`` deg about ``error_ra``/``error_dec``), as an
a-priori ``IDC_<idctab>`` WCS would be.

Flux convention
---------------
FLT/FLC pixel values are flat-fielded: collected charge divided by the relative pixel area
``PAM = true pixel area / IDCSCALE**2`` (from the distortion model), so the sky is flat in the
FLT and the value of a pixel is a surface brightness in e- per ``IDCSCALE**2``. A drizzle
(which treats input pixels as surface brightness and scales by ``IDCSCALE``, as drizzlepac
does) therefore recovers the true total flux of a star, and ``sum(SCI * PAM)`` over a star
(sky subtracted) is ``rate * EXPTIME`` up to noise and the aperture's encircled energy.
``sources.ecsv`` holds each source's true count rate ``rate_<inst>_<det>_<filter>`` (e-/s)
and ST magnitude; ``rate = f_lambda(PHOTPLAM) / PHOTFLAM`` with the header ``PHOTFLAM``.
WFC3/IR and ACS/SBC values are count rates (``BUNIT = ELECTRONS/S``), the others counts
(``ELECTRONS``).

Positions
---------
A star's position is its PSF's Gaussian-windowed centroid (``psf.windowed_centroid``,
``sigma = 2`` px); see :mod:`mvmflow.simulate.psf`. The model PSFs are re-sampled once on
loading so that this position falls on a pixel centre; then a star drawn at any pixel phase
is not lopsided, and a core fit (a 2-D Gaussian) finds it within 1.6 mas on average.
"""

from mvmflow.simulate.core import SimulationResult, plan_exposures, simulate
from mvmflow.simulate.presets import (
    DEMO_CENTER,
    PRESETS,
    ExposureSpec,
    Preset,
    VisitSpec,
    get_preset,
)
from mvmflow.simulate.scene import SceneSpec
from mvmflow.simulate.truth import read_truth, true_wcs

__all__ = [
    "DEMO_CENTER",
    "PRESETS",
    "ExposureSpec",
    "Preset",
    "SceneSpec",
    "SimulationResult",
    "VisitSpec",
    "get_preset",
    "plan_exposures",
    "read_truth",
    "simulate",
    "true_wcs",
]
