"""Named simulation presets: which visits, exposures and sky a data set contains.

A preset is plain data (:class:`Preset` of :class:`VisitSpec` of :class:`ExposureSpec`); use
:func:`dataclasses.replace` to derive variants. The small presets are centred on a point of the
LMC at the corner where sky cells ``skycell-p0081x14y14``, ``x15y14``, ``x14y15`` and ``x15y15``
meet (projection cell 81 pixel ``(300443.5, 300443.5)``, 0-based: the middle of the 512-px
overlap of the four cells), so every exposure straddles those four sky cells.

The scale presets are different:

- ``fullcell``: 64 full-frame exposures (ACS/WFC F606W + F814W, WFC3/UVIS F555W + F275W) in 32
  visits on two 4 x 4 grids of pointings over the whole of ``skycell-p0081x14y14``
  (:data:`FULLCELL_SKYCELL`), so that the sky cell's trimmed frame is about 18,000 px a side;
  a sparse scene, cheap to render (:func:`fullcell_preset`).
- ``fullcell_2x2``: the same 64 exposures with the grids stretched 2.5 times about the corner
  of the four demo sky cells: about 2 x 2 sky cells of sky, with gaps between the pointings.
- ``fullframe_cr``: 4 full-frame ACS/WFC F814W exposures (400 s, a 4-point dither of about 3"
  in one visit) at the centre of ``skycell-p0081x14y14``, all on that one sky cell, with
  cosmic rays left unflagged (so cosmic-ray rejection has work to do) and no pointing errors:
  the full-frame workload of ``benchmarks/vs_reference.py``. :func:`fullframe_cr_preset`
  makes the same kind of layer with any number of exposures of ACS/WFC or WFC3/UVIS
  (``benchmarks/cr.py``).
- :func:`header_set_preset` (no name: made per size): N exposures in many visits spread over
  projection cell 81, for header-only data sets (``simulate(..., headers_only=True)``) that
  time the workflow's planning at scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mvmflow.simulate.scene import SceneSpec

__all__ = [
    "DEMO_CENTER",
    "FULLCELL_CENTER",
    "FULLCELL_SKYCELL",
    "FULLFRAME_SKYCELL",
    "PRESETS",
    "ExposureSpec",
    "Preset",
    "VisitSpec",
    "fullcell_preset",
    "fullframe_cr_preset",
    "get_preset",
    "header_set_preset",
]


def _corner_of_p0081() -> tuple[float, float]:
    """RA, Dec of projection cell 81's pixel (300443.5, 300443.5) (0-based), computed from its
    TAN WCS: CRVAL (87.27272727272727, -70.0), CRPIX (225144, 225144) (1-based),
    CD = diag(-0.04/3600, 0.04/3600)."""
    from mvmflow.simulate.pointing import tan_deproject

    crval = (87.27272727272727, -70.0)
    crpix0 = 225144.0 - 1.0
    dx = (300443.5 - crpix0) * -0.04 / 3600.0
    dy = (300443.5 - crpix0) * 0.04 / 3600.0
    ra, dec = tan_deproject(crval[0], crval[1], dx, dy)
    return float(ra), float(dec)


DEMO_CENTER = _corner_of_p0081()
"""RA, Dec (deg) of the corner where the four demo sky cells meet (about 84.92, -69.15)."""

P0081_CENTER = (87.27272727272727, -70.0)
"""RA, Dec (deg) of projection cell 81's centre (its CRVAL)."""


def _p0081_point(x: float, y: float) -> tuple[float, float]:
    """RA, Dec of projection cell 81's fine pixel ``(x, y)`` (0-based), as
    :func:`_corner_of_p0081` computes the corner."""
    from mvmflow.simulate.pointing import tan_deproject

    crpix0 = 225144.0 - 1.0
    ra, dec = tan_deproject(*P0081_CENTER, (x - crpix0) * -0.04 / 3600.0,
                            (y - crpix0) * 0.04 / 3600.0)
    return float(ra), float(dec)


FULLCELL_SKYCELL = "skycell-p0081x14y14"
"""The sky cell the ``fullcell`` preset covers."""
FULLCELL_CENTER = _p0081_point(278746 + 10976.5, 278746 + 10976.5)
"""RA, Dec (deg) of the centre of :data:`FULLCELL_SKYCELL`: its fine pixel (10976.5, 10976.5)
(0-based), i.e. projection-cell pixel 278746 + 10976.5 on both axes (about 85.245, -69.271)."""


@dataclass(frozen=True)
class ExposureSpec:
    """One exposure of a visit.

    Attributes
    ----------
    detector : str
        ``WFC``, ``HRC``, ``SBC`` (ACS) or ``UVIS``, ``IR`` (WFC3).
    filter : str
        Filter name (for ACS the non-clear one).
    exptime : float
        Seconds.
    aperture : str
        ``APERTURE``: a full-frame or subarray aperture of the detector (see
        ``mvmflow/data/hst/apertures.csv``).
    dither : tuple of float
        ``POSTARG1, POSTARG2`` (arcsec along the aperture's x and y axes).
    """

    detector: str
    filter: str
    exptime: float
    aperture: str
    dither: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class VisitSpec:
    """One HST visit: a pointing, an orientation, a date and its exposures.

    ``program`` is the 3-character program code and ``visit`` the 2-character visit id that
    make up the rootnames (``<i><program><visit><exposure>q``). ``offset`` (arcsec east,
    north) moves the visit's pointing from the preset centre; ``pa`` is the position angle of
    the detector's ``SCI,1`` y axis. ``pointing_error`` is ``(dx, dy, rotation)`` (arcsec east,
    arcsec north, degrees); ``None`` draws it from the preset's limits.
    """

    instrument: str
    proposid: int
    program: str
    visit: str
    start: str
    pa: float
    exposures: tuple[ExposureSpec, ...]
    offset: tuple[float, float] = (0.0, 0.0)
    pointing_error: tuple[float, float, float] | None = None
    targname: str = "LMC-FIELD"


@dataclass(frozen=True)
class Preset:
    """A complete simulated data set.

    Attributes
    ----------
    name, description : str
    ra, dec : float
        Centre of the field (deg).
    visits : tuple of VisitSpec
    seed : int
        Default random seed.
    scene : SceneSpec
    max_shift_arcsec, max_rotation_deg : float
        Limits of the random per-visit pointing errors (0 = none).
    flag_crs : bool
        Flag cosmic rays in the CCD DQ arrays (4096), as after SVM processing.
    write_flt : bool
        Also write an ``_flt.fits`` beside each ``_flc.fits`` (same pixels).
    cosmic_rays : bool
        Inject cosmic rays (default). False writes the very same exposures (same seed, same
        noise, same defects) without them: the truth for cosmic-ray rejection tests.
    sky_rates : dict
        Sky background per filter key (``acs_wfc_f814w``), e-/s per ``IDCSCALE**2`` pixel;
        missing filters use :data:`SKY_RATES`.
    render : {'fft', 'sparse'}
        How sources are convolved with the PSF: ``fft`` convolves each chip's deposit image
        with the PSF (the other presets' files depend on it); ``sparse`` adds one PSF stamp
        per source instead (the same image up to rounding, much cheaper when a chip holds
        few sources); see :mod:`mvmflow.simulate.render`.
    """

    name: str
    description: str
    ra: float
    dec: float
    visits: tuple[VisitSpec, ...]
    seed: int = 1
    scene: SceneSpec = field(default_factory=SceneSpec)
    max_shift_arcsec: float = 1.0
    max_rotation_deg: float = 0.05
    flag_crs: bool = True
    write_flt: bool = False
    sky_rates: dict = field(default_factory=dict)
    cosmic_rays: bool = True
    render: str = "fft"

    @property
    def n_exposures(self) -> int:
        return sum(len(v.exposures) for v in self.visits)


# Typical sky (zodiacal light and earthshine at moderate levels, IR incl. thermal) in e-/s per
# IDCSCALE**2 pixel, from the ACS and WFC3 instrument handbooks' background tables.
SKY_RATES = {
    "acs_wfc_f606w": 0.12, "acs_wfc_f625w": 0.09, "acs_wfc_f658n": 0.006,
    "acs_wfc_f814w": 0.085, "acs_hrc_f606w": 0.012, "acs_sbc_f150lp": 2e-4,
    "acs_sbc_f122m": 5e-4, "wfc3_uvis_f275w": 6e-4, "wfc3_uvis_f555w": 0.05,
    "wfc3_ir_f110w": 0.8,
}


def _line(n: int, step: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    return tuple((round(k * step[0], 3), round(k * step[1], 3)) for k in range(n))


_TINY = Preset(
    name="tiny",
    description=("Two visits (ACS/WFC F814W WFC1-512 in 2006, WFC3/IR F110W IRSUB256 in 2014), "
                 "two dithered exposures each, about 300 stars; seconds to make."),
    ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], seed=1,
    visits=(
        VisitSpec(instrument="ACS", proposid=10583, program="9n5", visit="01",
                  start="2006-03-14T05:21:17", pa=32.0,
                  exposures=tuple(ExposureSpec("WFC", "F814W", 300.0, "WFC1-512", d)
                                  for d in ((0.0, 0.0), (0.87, 0.62)))),
        VisitSpec(instrument="WFC3", proposid=13420, program="c7j", visit="02",
                  start="2014-11-02T17:44:51", pa=118.0, offset=(1.5, -1.0),
                  exposures=tuple(ExposureSpec("IR", "F110W", 249.23, "IRSUB256", d)
                                  for d in ((0.0, 0.0), (1.13, 0.75)))),
    ),
    scene=SceneSpec(star_density=900.0, mag_range=(17.5, 25.0), lf_slope=0.25, bright_stars=2,
                    galaxy_density=6.0),
)

_TINY_NOERR = Preset(
    name="tiny_noerr",
    description="The tiny preset without pointing errors (header WCS = true WCS).",
    ra=_TINY.ra, dec=_TINY.dec, seed=1, visits=_TINY.visits, scene=_TINY.scene,
    max_shift_arcsec=0.0, max_rotation_deg=0.0,
)

_DEMO = Preset(
    name="demo",
    description=("The main job's data set: 17 exposures in four visits over 15 years "
                 "(ACS/WFC F658N + F814W in 2006 and 2019, WFC3/UVIS F275W + IR F110W in 2012 "
                 "and 2021), CCD subarrays and IR full frame, straddling the corner of sky "
                 "cells p0081x14y14/x15y14/x14y15/x15y15."),
    ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], seed=42,
    visits=(
        VisitSpec(instrument="ACS", proposid=10583, program="9n5", visit="03",
                  start="2006-03-16T02:10:41", pa=35.0, offset=(-2.0, 1.5),
                  exposures=(
                      *(ExposureSpec("WFC", "F814W", 400.0, "WFC1-1K", d)
                        for d in _line(3, (1.21, 0.63))),
                      *(ExposureSpec("WFC", "F658N", 680.0, "WFC1-1K", d)
                        for d in ((0.0, 0.0), (1.55, -0.95))),
                  )),
        VisitSpec(instrument="WFC3", proposid=12810, program="bw3", visit="11",
                  start="2012-07-08T11:32:09", pa=201.0, offset=(1.0, -2.5),
                  exposures=(
                      *(ExposureSpec("UVIS", "F275W", 650.0, "UVIS2-C1K1C-SUB", d)
                        for d in ((0.0, 0.0), (1.35, 0.88))),
                      *(ExposureSpec("IR", "F110W", 302.93, "IR", d)
                        for d in ((0.0, 0.0), (1.73, 1.12))),
                  )),
        VisitSpec(instrument="ACS", proposid=15691, program="dqk", visit="07",
                  start="2019-01-22T20:05:33", pa=118.5, offset=(0.5, 2.0),
                  exposures=(
                      *(ExposureSpec("WFC", "F814W", 350.0, "WFC1A-1K", d)
                        for d in ((0.0, 0.0), (1.44, 1.02))),
                      *(ExposureSpec("WFC", "F658N", 700.0, "WFC1A-1K", d)
                        for d in ((0.0, 0.0), (-1.12, 1.37))),
                  )),
        VisitSpec(instrument="WFC3", proposid=16196, program="e4h", visit="05",
                  start="2021-05-30T08:47:12", pa=292.0, offset=(-1.5, -1.0),
                  exposures=(
                      *(ExposureSpec("UVIS", "F275W", 700.0, "UVIS2-C1K1C-SUB", d)
                        for d in ((0.0, 0.0), (-1.25, 1.05))),
                      *(ExposureSpec("IR", "F110W", 302.93, "IR", d)
                        for d in ((0.0, 0.0), (1.61, -1.27))),
                  )),
    ),
    scene=SceneSpec(star_density=600.0, mag_range=(17.0, 25.5), lf_slope=0.27, bright_stars=6,
                    galaxy_density=4.0, young_fraction=0.15),
)

_ALL_DETECTORS = Preset(
    name="all_detectors",
    description=("One visit per instrument with every detector at full frame (ACS/WFC F606W, "
                 "ACS/HRC F606W, ACS/SBC F150LP, WFC3/UVIS F555W, WFC3/IR F110W) plus the "
                 "HRC-512 and IRSUB512 subarrays; large (full-frame WFC and UVIS)."),
    ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], seed=7,
    visits=(
        VisitSpec(instrument="ACS", proposid=10583, program="9n5", visit="21",
                  start="2006-04-02T13:01:44", pa=63.0,
                  exposures=(
                      ExposureSpec("WFC", "F606W", 360.0, "WFC"),
                      ExposureSpec("HRC", "F606W", 420.0, "HRC"),
                      ExposureSpec("HRC", "F606W", 420.0, "HRC-512", (0.5, 0.5)),
                      ExposureSpec("SBC", "F150LP", 900.0, "SBC"),
                  )),
        VisitSpec(instrument="WFC3", proposid=12810, program="bw3", visit="22",
                  start="2013-02-11T04:25:06", pa=250.0,
                  exposures=(
                      ExposureSpec("UVIS", "F555W", 500.0, "UVIS"),
                      ExposureSpec("IR", "F110W", 302.93, "IR"),
                      ExposureSpec("IR", "F110W", 252.93, "IRSUB512", (0.8, 0.8)),
                  )),
    ),
    scene=SceneSpec(star_density=400.0, mag_range=(17.0, 25.5), bright_stars=8,
                    galaxy_density=4.0),
    write_flt=True,
)

_ALIGN = Preset(
    name="align",
    description=("Alignment tests: three overlapping visits over nine years (ACS/WFC F814W "
                 "WFC1-512 in 2012, WFC3/IR F110W IRSUB256 in 2016, WFC3/UVIS F555W "
                 "UVIS2-C512C-SUB in 2021; two dithered exposures each) with pointing errors "
                 "of up to 1 arcsec and 0.05 deg, plus a short WFC3/UVIS F275W visit with too "
                 "few stars to align (F275W, 6 s); seconds to make."),
    ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], seed=5,
    visits=(
        VisitSpec(instrument="ACS", proposid=12345, program="c1a", visit="01",
                  start="2012-04-11T03:12:40", pa=76.0, pointing_error=(0.62, -0.71, 0.045),
                  exposures=tuple(ExposureSpec("WFC", "F814W", 300.0, "WFC1-512", d)
                                  for d in ((0.0, 0.0), (0.93, 0.57)))),
        VisitSpec(instrument="WFC3", proposid=14321, program="d2b", visit="02",
                  start="2016-09-23T21:40:05", pa=151.0, offset=(1.0, 1.5),
                  pointing_error=(-0.95, 0.28, -0.05),
                  exposures=tuple(ExposureSpec("IR", "F110W", 252.93, "IRSUB256", d)
                                  for d in ((0.0, 0.0), (1.07, 0.81)))),
        VisitSpec(instrument="WFC3", proposid=16543, program="e3c", visit="03",
                  start="2021-02-17T10:05:52", pa=302.0, offset=(-1.2, 0.8),
                  pointing_error=(0.18, 0.97, 0.03),
                  exposures=tuple(ExposureSpec("UVIS", "F555W", 400.0, "UVIS2-C512C-SUB", d)
                                  for d in ((0.0, 0.0), (0.88, -0.66)))),
        VisitSpec(instrument="WFC3", proposid=16543, program="e3c", visit="04",
                  start="2021-02-18T01:30:11", pa=302.0, offset=(0.5, -0.5),
                  pointing_error=(-0.45, -0.52, -0.02),
                  exposures=(ExposureSpec("UVIS", "F275W", 6.0, "UVIS2-C512C-SUB"),)),
    ),
    scene=SceneSpec(star_density=1100.0, mag_range=(17.5, 25.0), lf_slope=0.25,
                    bright_stars=1, galaxy_density=4.0, young_fraction=0.05),
)

_ALIGN_PAIR = Preset(
    name="align_pair",
    description=("Drizzling after alignment: two WFC3/UVIS F555W visits (UVIS2-C512C-SUB, two "
                 "dithered exposures each) five years apart, at different orientations, with "
                 "pointing errors of 0.4-0.6 arcsec and 0.03-0.04 deg, plus a 6 s F275W exposure with "
                 "too few stars to align; seconds to make."),
    ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], seed=11,
    visits=(
        VisitSpec(instrument="WFC3", proposid=14321, program="d2c", visit="05",
                  start="2016-03-02T11:20:31", pa=122.0, pointing_error=(0.41, -0.33, 0.04),
                  exposures=tuple(ExposureSpec("UVIS", "F555W", 350.0, "UVIS2-C512C-SUB", d)
                                  for d in ((0.0, 0.0), (0.91, 0.62)))),
        VisitSpec(instrument="WFC3", proposid=16543, program="e3d", visit="06",
                  start="2021-03-09T04:47:13", pa=128.0, offset=(0.6, -0.4),
                  pointing_error=(-0.38, 0.47, -0.03),
                  exposures=tuple(ExposureSpec("UVIS", "F555W", 350.0, "UVIS2-C512C-SUB", d)
                                  for d in ((0.0, 0.0), (0.87, -0.58)))),
        VisitSpec(instrument="WFC3", proposid=16543, program="e3d", visit="07",
                  start="2021-03-09T06:02:44", pa=128.0, offset=(0.3, 0.2),
                  pointing_error=(0.52, 0.36, 0.02),
                  exposures=(ExposureSpec("UVIS", "F275W", 6.0, "UVIS2-C512C-SUB"),)),
    ),
    scene=SceneSpec(star_density=1100.0, mag_range=(17.5, 25.0), lf_slope=0.25,
                    bright_stars=1, galaxy_density=2.0, young_fraction=0.05),
)

_ALIGN_MEMBER = Preset(
    name="align_member",
    description=("Checking every exposure against its visit's solution: a WFC3/UVIS F555W visit "
                 "of two dithered exposures in 2016 and one of three in 2021 "
                 "(UVIS2-C512C-SUB), pointing errors of about 0.5 arcsec per visit; tests move "
                 "one exposure's header further (a member that disagrees with its visit); "
                 "seconds to make."),
    ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], seed=13,
    visits=(
        VisitSpec(instrument="WFC3", proposid=14321, program="d2e", visit="08",
                  start="2016-05-11T08:14:52", pa=97.0, pointing_error=(-0.36, 0.29, 0.03),
                  exposures=tuple(ExposureSpec("UVIS", "F555W", 350.0, "UVIS2-C512C-SUB", d)
                                  for d in ((0.0, 0.0), (0.91, 0.62)))),
        VisitSpec(instrument="WFC3", proposid=16543, program="e3g", visit="09",
                  start="2021-06-03T02:31:18", pa=104.0, offset=(0.5, -0.3),
                  pointing_error=(0.44, 0.31, -0.02),
                  exposures=tuple(ExposureSpec("UVIS", "F555W", 350.0, "UVIS2-C512C-SUB", d)
                                  for d in ((0.0, 0.0), (0.87, -0.58), (-0.64, 0.83)))),
    ),
    scene=SceneSpec(star_density=1100.0, mag_range=(17.5, 25.0), lf_slope=0.25,
                    bright_stars=1, galaxy_density=2.0, young_fraction=0.05),
)

_CR = Preset(
    name="cr",
    description=("Cosmic-ray rejection tests: one WFC3/UVIS visit, four dithered 400 s F555W "
                 "exposures of UVIS2-C512C-SUB (most pixels covered three or four times), "
                 "cosmic rays left unflagged, no pointing errors; seconds to make. Use "
                 "cosmic_rays=False (dataclasses.replace) for the same exposures without them."),
    ra=DEMO_CENTER[0], dec=DEMO_CENTER[1], seed=23,
    visits=(
        VisitSpec(instrument="WFC3", proposid=16543, program="e3f", visit="08",
                  start="2021-04-14T09:12:37", pa=212.0,
                  exposures=tuple(ExposureSpec("UVIS", "F555W", 400.0, "UVIS2-C512C-SUB", d)
                                  for d in ((0.0, 0.0), (0.523, 0.347), (1.061, -0.213),
                                            (0.279, 0.815)))),
    ),
    scene=SceneSpec(star_density=900.0, mag_range=(17.5, 25.0), lf_slope=0.25,
                    bright_stars=1, galaxy_density=2.0, young_fraction=0.05),
    max_shift_arcsec=0.0, max_rotation_deg=0.0, flag_crs=False,
)


# ---------------------------------------------------------------------------------------------
# scale presets: a whole sky cell of full frames, and header-only sets over a projection cell


def _grid_offsets(n: int, spacing: float) -> list[tuple[float, float]]:
    """``n x n`` offsets (arcsec east, north) ``spacing`` apart about (0, 0), row by row from
    the south-west (east increases to the left of a sky cell, so the first is the south-east
    corner as seen on the sky cell's pixel grid)."""
    half = (n - 1) / 2.0
    return [(round((i - half) * spacing, 3), round((j - half) * spacing, 3))
            for j in range(n) for i in range(n)]


def _fullcell_visits(stretch: float) -> tuple[VisitSpec, ...]:
    """The 32 visits of the fullcell presets (grid spacings times ``stretch``).

    ACS/WFC: 16 visits, 4 programs of 4 (one per grid row), 2004-2019, a 4 x 4 grid 172"
    apart (the WFC field is about 202" square, so neighbours overlap by about 30" at equal
    orientations), one F606W (360 s) and one F814W (400 s) exposure each. WFC3/UVIS: 16
    visits, 2010-2022, a 4 x 4 grid 150" apart (162" field), one F555W (350 s) and one F275W
    (700 s) exposure each. Every visit has its own date and orientation.
    """
    visits = []
    acs = _grid_offsets(4, 172.0 * stretch)
    for k, offset in enumerate(acs):
        row, col = divmod(k, 4)
        visits.append(VisitSpec(
            instrument="ACS", proposid=10471 + 7 * row, program=f"fc{row + 1}",
            visit=f"{col + 1:02d}",
            start=(f"{2004 + 4 * row + col}-{1 + (5 * k) % 12:02d}-{3 + (11 * k) % 25:02d}"
                   f"T{(3 + 5 * k) % 24:02d}:{(17 * k) % 60:02d}:{(29 * k + 7) % 60:02d}"),
            pa=round((23.0 + 47.3 * k) % 360.0, 1), offset=offset,
            exposures=(ExposureSpec("WFC", "F606W", 360.0, "WFC"),
                       ExposureSpec("WFC", "F814W", 400.0, "WFC", (0.247, 0.163))),
            targname="LMC-FULLCELL"))
    uvis = _grid_offsets(4, 150.0 * stretch)
    for k, offset in enumerate(uvis):
        row, col = divmod(k, 4)
        visits.append(VisitSpec(
            instrument="WFC3", proposid=12012 + 11 * row, program=f"gd{row + 1}",
            visit=f"{col + 1:02d}",
            start=(f"{2010 + 3 * row + col}-{1 + (7 * k + 2) % 12:02d}-{2 + (13 * k) % 26:02d}"
                   f"T{(11 + 7 * k) % 24:02d}:{(23 * k + 5) % 60:02d}:{(31 * k) % 60:02d}"),
            pa=round((61.0 + 53.7 * k) % 360.0, 1), offset=offset,
            exposures=(ExposureSpec("UVIS", "F555W", 350.0, "UVIS"),
                       ExposureSpec("UVIS", "F275W", 700.0, "UVIS", (0.198, -0.141))),
            targname="LMC-FULLCELL"))
    return tuple(visits)


_FULLCELL_SCENE = SceneSpec(star_density=5.0, mag_range=(18.0, 24.5), lf_slope=0.3,
                            bright_stars=4, galaxy_density=0.3, young_fraction=0.15)
"""A sparse scene: about 1,000 stars and 60 galaxies over a sky cell."""


def fullcell_preset(name: str = "fullcell", stretch: float = 1.0,
                    center: tuple[float, float] | None = None) -> Preset:
    """The 64 full-frame exposures of the ``fullcell`` presets.

    Parameters
    ----------
    name : str
    stretch : float
        Factor on the grid spacings: 1 covers :data:`FULLCELL_SKYCELL` (the trimmed frame is
        about 18,000 px a side), 2.5 about 2 x 2 sky cells with gaps between the pointings.
    center : (float, float), optional
        Centre of the grids (default :data:`FULLCELL_CENTER`).
    """
    ra, dec = FULLCELL_CENTER if center is None else center
    where = (f"over {FULLCELL_SKYCELL}" if stretch == 1.0 and center is None
             else f"with the grids {stretch:g} times as wide about ({ra:.3f}, {dec:.3f})")
    return Preset(
        name=name,
        description=(f"Scale: 64 full-frame exposures in 32 visits {where}: ACS/WFC F606W + "
                     "F814W (16 visits, 2004-2019) and WFC3/UVIS F555W + F275W (16 visits, "
                     "2010-2022) on 4 x 4 grids; sparse scene; about 10.8 GB."),
        ra=ra, dec=dec, seed=12, visits=_fullcell_visits(stretch), scene=_FULLCELL_SCENE,
        render="sparse")


_FULLCELL = fullcell_preset()
_FULLCELL_2X2 = fullcell_preset("fullcell_2x2", stretch=2.5, center=DEMO_CENTER)


# ---------------------------------------------------------------------------------------------
# one layer of dithered full frames with unflagged cosmic rays (benchmarks/cr.py, vs_reference.py)

FULLFRAME_SKYCELL = FULLCELL_SKYCELL
"""The sky cell the ``fullframe_cr`` layers lie on (at its centre, far from its edges)."""

FULLFRAME_SETUPS = {
    "acs_wfc": {"instrument": "ACS", "detector": "WFC", "filter": "F814W", "aperture": "WFC",
                "exptime": 400.0, "proposid": 12345, "program": "c9r",
                "start": "2012-03-02T04:10:00", "pa": 40.0},
    "wfc3_uvis": {"instrument": "WFC3", "detector": "UVIS", "filter": "F555W",
                  "aperture": "UVIS", "exptime": 400.0, "proposid": 12346, "program": "c9s",
                  "start": "2012-03-02T04:10:00", "pa": 40.0},
}
"""Per detector key: full-frame aperture, filter, exposure time and visit data of
:func:`fullframe_cr_preset`."""

FULLFRAME_DITHER = ((0.0, 0.0), (2.37, 1.31), (-1.12, 2.93), (1.58, -2.21))
"""The 4-point dither of every :func:`fullframe_cr_preset` visit (arcsec along the detector
axes)."""


def fullframe_cr_preset(n: int = 4, detector: str = "acs_wfc", *, star_density: float = 150.0,
                        seed: int = 31, name: str | None = None,
                        description: str | None = None, render: str = "fft") -> Preset:
    """``n`` dithered full-frame exposures of one detector and filter on
    :data:`FULLFRAME_SKYCELL`, cosmic rays injected and left unflagged, no pointing errors.

    Visits of :data:`FULLFRAME_DITHER` (4 exposures; the last visit has what is left), each a
    day after the one before, turned by 2 degrees and moved by (1.5, -1.0) arcsec, so a layer
    of many is a typical stack, not one pointing. Setups (:data:`FULLFRAME_SETUPS`):
    ``acs_wfc`` (ACS/WFC F814W, aperture WFC, 400 s) or ``wfc3_uvis`` (WFC3/UVIS F555W,
    aperture UVIS, 400 s).

    Parameters
    ----------
    n : int
        Number of exposures.
    detector : {'acs_wfc', 'wfc3_uvis'}
    star_density : float
        Stars per square arcminute (magnitudes 17.5-25; 2 bright stars, 2 galaxies per square
        arcminute).
    seed : int
        The preset's random seed.
    name, description : str, optional
        Default ``fullframe_cr_<detector>_<n>`` and a sentence saying what it is.
    render : {'fft', 'sparse'}
        See :class:`Preset`.
    """
    s = FULLFRAME_SETUPS[detector]
    visits = []
    for v, first in enumerate(range(0, n, len(FULLFRAME_DITHER))):
        count = min(len(FULLFRAME_DITHER), n - first)
        day = int(s["start"][8:10]) + v
        visits.append(VisitSpec(
            instrument=s["instrument"], proposid=s["proposid"], program=s["program"],
            visit=f"{v + 1:02d}", start=f"{s['start'][:8]}{day:02d}{s['start'][10:]}",
            pa=s["pa"] + 2.0 * v, offset=(1.5 * v, -1.0 * v),
            exposures=tuple(ExposureSpec(s["detector"], s["filter"], s["exptime"],
                                         s["aperture"], d) for d in FULLFRAME_DITHER[:count])))
    return Preset(
        name=name or f"fullframe_cr_{detector}_{n}",
        description=description or (
            f"{n} full-frame {s['instrument']}/{s['detector']} {s['filter']} exposures with "
            f"unflagged cosmic rays on {FULLFRAME_SKYCELL}"),
        ra=FULLCELL_CENTER[0], dec=FULLCELL_CENTER[1], visits=tuple(visits), seed=seed,
        scene=SceneSpec(star_density=star_density, mag_range=(17.5, 25.0), lf_slope=0.25,
                        bright_stars=2, galaxy_density=2.0, young_fraction=0.05),
        max_shift_arcsec=0.0, max_rotation_deg=0.0, flag_crs=False, cosmic_rays=True,
        render=render)


_FULLFRAME_CR = fullframe_cr_preset(
    4, "acs_wfc", name="fullframe_cr", render="sparse",
    description=("Speed benchmark: 4 full-frame ACS/WFC F814W exposures (400 s, one visit, a "
                 "4-point dither of about 3 arcsec) at the centre of skycell-p0081x14y14, "
                 "all on that one sky cell; cosmic rays left unflagged, no pointing errors; "
                 "about 0.67 GB."))

PRESETS: dict[str, Preset] = {p.name: p for p in (_TINY, _TINY_NOERR, _DEMO, _ALL_DETECTORS,
                                                  _ALIGN, _ALIGN_PAIR, _ALIGN_MEMBER, _CR, _FULLCELL,
                                                  _FULLCELL_2X2, _FULLFRAME_CR)}
"""The named presets."""

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"

# (detector, filter, exposure-time range in s) a header-set visit draws from
_HS_FILTERS = {
    "ACS": (("F606W", (300.0, 900.0)), ("F625W", (300.0, 900.0)), ("F658N", (600.0, 1400.0)),
            ("F814W", (300.0, 1000.0))),
    "WFC3": (("F555W", (200.0, 800.0)), ("F275W", (600.0, 1500.0))),
}
_HS_SUBARRAYS = {"ACS": "WFC1-1K", "WFC3": "UVIS2-C1K1C-SUB"}
SKYCELL_ARCSEC = 21442 * 0.04
"""Spacing of sky cells (arcsec): 21,442 fine pixels."""


HEADER_SET_MAX_SIDE = 7.5
"""Largest side (sky cells) of a header set's square: projection cell 81's sky cells alone
cover the sky within about 4 sky cells of its centre (further out, the sky cells of
projection cells 80, 82, 52, 53, 115 and 116 overlap it too)."""


def header_set_preset(n: int, seed: int = 1, per_skycell: float = 90.0) -> Preset:
    """``n`` ACS/WFC and WFC3/UVIS exposures in many visits over projection cell 81.

    Meant for header-only data sets (``simulate(preset, out, headers_only=True)``): the
    workflow can screen and plan them without pixels. Drawn from ``seed``:

    - visit pointings uniform over a square centred on the projection cell's centre whose
      area is ``n / per_skycell`` sky cells (so the density, about ``per_skycell`` exposures
      per sky cell as in the dense LMC fields, does not depend on ``n``), at most
      :data:`HEADER_SET_MAX_SIDE` sky cells a side (5,000 exposures at the default density
      fill it), so that every exposure lies on sky cells of projection cell 81 only;
    - half ACS/WFC, half WFC3/UVIS visits; each of two filters (ACS: two of F606W, F625W,
      F658N, F814W; UVIS: F555W and F275W) with one to three dithered exposures; one visit in
      ten uses a 1k subarray, the others full frames;
    - orientations uniform, dates 2002-2024 (WFC3 from mid-2009), exposure times per filter;
    - rootnames ``<j|i>h<PP><VV><ee>q``: 20 visits per program, so 5,000 exposures give
      about 70 programs.

    Parameters
    ----------
    n : int
        Number of exposures (the last visit is cut to make exactly ``n``).
    seed : int
        Random seed of the layout (and of the preset's pointing errors).
    per_skycell : float
        Exposures per sky cell on average (footprints counted once, at their pointing).
    """
    if n < 1:
        raise ValueError(f"a header set needs at least one exposure, not {n}")
    rng = np.random.default_rng([seed, 12012])
    cells = min(HEADER_SET_MAX_SIDE, max(1.0, float(np.sqrt(n / per_skycell))))
    half = cells * SKYCELL_ARCSEC / 2.0
    visits = []
    count = 0
    while count < n:
        v = len(visits)
        instrument = "ACS" if rng.random() < 0.5 else "WFC3"
        det = "WFC" if instrument == "ACS" else "UVIS"
        choices = _HS_FILTERS[instrument]
        picked = sorted(rng.choice(len(choices), 2, replace=False))
        aperture = _HS_SUBARRAYS[instrument] if rng.random() < 0.1 else det
        first = 2002.3 if instrument == "ACS" else 2009.5
        year = rng.uniform(first, 2024.9)
        day = (year - int(year)) * 365.0
        start = (f"{int(year)}-{1 + int(day // 30.5) % 12:02d}-{1 + int(day % 28):02d}T"
                 f"{int(rng.integers(24)):02d}:{int(rng.integers(60)):02d}:"
                 f"{int(rng.integers(60)):02d}")
        exposures = []
        for f in picked:
            filt, (lo, hi) = choices[f]
            exptime = float(round(rng.uniform(lo, hi), 1))
            for d in range(int(rng.integers(1, 4))):
                dither = (0.0, 0.0) if d == 0 else tuple(
                    float(round(x, 3)) for x in rng.uniform(-2.5, 2.5, 2))
                exposures.append(ExposureSpec(det, filt, exptime, aperture, dither))
        exposures = exposures[: n - count]
        count += len(exposures)
        prog = v // 20
        visits.append(VisitSpec(
            instrument=instrument, proposid=13000 + prog,
            program=f"h{_B36[prog // 36 % 36]}{_B36[prog % 36]}",
            visit=f"{_B36[v % 20 // 10 + 1]}{_B36[v % 10]}", start=start,
            pa=float(round(rng.uniform(0.0, 360.0), 2)),
            offset=tuple(float(round(x, 2)) for x in rng.uniform(-half, half, 2)),
            exposures=tuple(exposures), targname="LMC-SURVEY"))
    return Preset(
        name=f"headers_{n}",
        description=(f"{n} ACS/WFC and WFC3/UVIS exposures in {len(visits)} visits over "
                     f"{cells:.1f} x {cells:.1f} sky cells of projection cell 81 (header-only "
                     "data sets for planning at scale)"),
        ra=P0081_CENTER[0], dec=P0081_CENTER[1], seed=seed, visits=tuple(visits),
        scene=SceneSpec(star_density=0.0, bright_stars=0, galaxy_density=0.0))


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (or the preset itself)."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}") from None


def draw_pointing_errors(preset: Preset, rng: np.random.Generator
                         ) -> list[tuple[float, float, float]]:
    """The ``(dx, dy, rotation)`` of every visit (drawn where not given)."""
    out = []
    for visit in preset.visits:
        r = preset.max_shift_arcsec * np.sqrt(rng.random())
        phi = rng.uniform(0, 2 * np.pi)
        rot = rng.uniform(-1, 1) * preset.max_rotation_deg
        drawn = (float(r * np.cos(phi)), float(r * np.sin(phi)), float(rot))
        out.append(visit.pointing_error if visit.pointing_error is not None else drawn)
    return out
