"""The five simulated HST detectors: geometry, noise, defects and file layout.

Geometry (chip shapes, which ``SCI`` extension holds which ``CCDCHIP``) follows the real
files. Noise and defect parameters are typical published values (ACS and WFC3 Instrument
Handbooks); they set the realism of the pixels, not any keyword the pipeline depends on.

Amplifier layout in FLT coordinates (0-based ``x``; readout amplifiers for read noise):
ACS/WFC and WFC3/UVIS chip 1 (``SCI,2``) are read by amps A (``x < 2048``) and B, chip 2
(``SCI,1``) by C and D; ACS/HRC by amp C; WFC3/IR has four quadrants (one effective up-the-ramp
read noise); ACS/SBC is a photon-counting MAMA without read noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

__all__ = ["DETECTORS", "Detector", "detector"]


@dataclass(frozen=True)
class Detector:
    """One instrument/detector combination.

    Attributes
    ----------
    key : str
        ``<instrument>_<detector>`` in lower case; also the template name.
    letter : str
        First letter of the rootname (``j`` ACS, ``i`` WFC3).
    shape : tuple of int
        Full-chip ``(nx, ny)`` of one ``SCI`` array.
    chips : tuple of int
        ``CCDCHIP`` of ``SCI,1``, ``SCI,2``, ... in a full-frame file.
    bunit : str
        ``BUNIT`` of ``SCI``/``ERR``.
    ccd : bool
        CCD (read noise, bleeding, cosmic rays in the data) or not.
    readnoise_keys : dict
        ``CCDCHIP`` -> (amplifier letter of the left half, of the right half).
    dark : float
        Mean dark current, e-/s/pixel.
    full_well : float
        Charge (e-) at which a pixel saturates and bleeds (CCDs) or is flagged (IR).
    adc_max : float
        Largest value the A/D converter records, in e- (saturation flag above).
    cr_rate : float
        Cosmic-ray events per pixel per second.
    hot_fraction, warm_fraction : float
        Fractions of pixels with elevated dark current (DQ 16 and DQ 64).
    hot_dark, warm_dark : tuple of float
        Dark-current ranges (e-/s) of hot and warm pixels (log-uniform).
    effective_readnoise : float or None
        Read noise (e-) used instead of the header values (WFC3/IR up-the-ramp fit).
    ref_pixel : tuple
        ``(CCDCHIP, x, y)`` of the full-frame aperture reference pixel (0-based), from the
        SIAF reference point of the full-frame aperture.
    pa_v3_offset : float
        ``PA_V3 - ORIENTAT(SCI,1)`` of the real template exposure (degrees).
    """

    instrument: str
    name: str
    letter: str
    shape: tuple[int, int]
    chips: tuple[int, ...]
    bunit: str
    ccd: bool
    readnoise_keys: dict
    dark: float
    full_well: float
    adc_max: float
    cr_rate: float
    hot_fraction: float
    warm_fraction: float
    hot_dark: tuple[float, float]
    warm_dark: tuple[float, float]
    effective_readnoise: float | None
    ref_pixel: tuple[int, float, float]
    pa_v3_offset: float
    bad_columns: int = 0
    ir_blobs: int = 0

    @property
    def key(self) -> str:
        return f"{self.instrument}_{self.name}".lower()

    @property
    def rate_units(self) -> bool:
        """Whether ``SCI`` is a count rate (e-/s) rather than counts (e-)."""
        return self.bunit.endswith("/S")

    def extver_of(self, ccdchip: int) -> int:
        """The ``SCI`` extension version holding ``ccdchip`` in a full-frame file."""
        return self.chips.index(ccdchip) + 1


# Cosmic rays: about 1.2 events/cm^2/s outside the SAA (ACS/WFC3 handbooks), times the pixel
# area (15 um CCD pixels: 2.25e-6 cm^2; HRC 21 um: 4.4e-6 cm^2; IR 18 um: 3.2e-6 cm^2).
DETECTORS: dict[str, Detector] = {
    "acs_wfc": Detector(
        instrument="ACS", name="WFC", letter="j", shape=(4096, 2048), chips=(2, 1),
        bunit="ELECTRONS", ccd=True, readnoise_keys={1: ("A", "B"), 2: ("C", "D")},
        dark=0.01, full_well=84700.0, adc_max=65535.0, cr_rate=2.7e-6, hot_fraction=0.004,
        warm_fraction=0.01, hot_dark=(0.08, 1.0), warm_dark=(0.02, 0.08),
        effective_readnoise=None, ref_pixel=(1, 2099.0, 199.0), pa_v3_offset=182.3361,
        bad_columns=3),
    "wfc3_uvis": Detector(
        instrument="WFC3", name="UVIS", letter="i", shape=(4096, 2051), chips=(2, 1),
        bunit="ELECTRONS", ccd=True, readnoise_keys={1: ("A", "B"), 2: ("C", "D")},
        dark=0.002, full_well=63000.0, adc_max=98000.0, cr_rate=2.7e-6, hot_fraction=0.004,
        warm_fraction=0.01, hot_dark=(0.015, 0.5), warm_dark=(0.005, 0.015),
        effective_readnoise=None, ref_pixel=(1, 2047.0, 249.0), pa_v3_offset=-44.7280,
        bad_columns=3),
    "wfc3_ir": Detector(
        instrument="WFC3", name="IR", letter="i", shape=(1014, 1014), chips=(1,),
        bunit="ELECTRONS/S", ccd=False, readnoise_keys={1: ("A", "A")}, dark=0.048,
        full_well=78000.0, adc_max=1e9, cr_rate=3.8e-6, hot_fraction=0.002,
        warm_fraction=0.005, hot_dark=(0.5, 5.0), warm_dark=(0.15, 0.5),
        effective_readnoise=12.0, ref_pixel=(1, 506.0, 506.0), pa_v3_offset=-44.6466,
        ir_blobs=8),
    "acs_hrc": Detector(
        instrument="ACS", name="HRC", letter="j", shape=(1024, 1024), chips=(1,),
        bunit="ELECTRONS", ccd=True, readnoise_keys={1: ("C", "C")}, dark=0.0058,
        full_well=155000.0, adc_max=131070.0, cr_rate=5.3e-6, hot_fraction=0.002,
        warm_fraction=0.006, hot_dark=(0.08, 1.0), warm_dark=(0.02, 0.08),
        effective_readnoise=None, ref_pixel=(1, 511.0, 511.0), pa_v3_offset=0.2793,
        bad_columns=1),
    "acs_sbc": Detector(
        instrument="ACS", name="SBC", letter="j", shape=(1024, 1024), chips=(1,),
        bunit="ELECTRONS/S", ccd=False, readnoise_keys={1: ("", "")}, dark=1.2e-5,
        full_well=1e12, adc_max=1e12, cr_rate=0.0, hot_fraction=0.0002,
        warm_fraction=0.0, hot_dark=(0.001, 0.01), warm_dark=(0.0, 0.0),
        effective_readnoise=0.0, ref_pixel=(1, 511.0, 511.0), pa_v3_offset=0.2793),
}


@cache
def detector(instrument: str, name: str | None = None) -> Detector:
    """Look a detector up by ``("ACS", "WFC")`` or by key ``"acs_wfc"``."""
    key = instrument.lower() if name is None else f"{instrument}_{name}".lower()
    try:
        return DETECTORS[key]
    except KeyError:
        raise ValueError(f"unknown detector {key!r}; known: {', '.join(DETECTORS)}") from None
