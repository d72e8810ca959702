"""Cosmic-ray rejection parameters: the ``cr`` entry of a layer's parameter set, completed.

``config/detectors.yaml`` gives every detector set a ``cr`` mapping with ``combine_type``,
``snr`` and ``scale`` (the reference's MVM table, spec processing.md 2.1). Every other
parameter of AstroDrizzle's median, blot and driz_cr steps takes the value of the reference's
MVM parameter files (drizzlepac 3.11.0 ``pars/hap_pars/mvm_parameters/*/*astrodrizzle*.json``,
identical in every MVM set): ``combine_nlow 0``, ``combine_nhigh 1``, ``combine_maskpt 0.3``,
``combine_nsigma "4 3"``, ``combine_grow 1``, ``blot_interp poly5``, ``driz_cr_grow 1``,
``driz_cr_ctegrow 0``; ``crbit`` is the layer's (4096). Any of them may be set in the ``cr``
mapping, under the short name or AstroDrizzle's (``nhigh`` or ``combine_nhigh``).

Two parameters are mvmflow's own: ``method`` (``sampling``, the default, or ``reference``)
and ``core_tolerance`` (0.75); see :mod:`mvmflow.crreject`.

Pairs (``snr``, ``scale``, ``nsigma``) may be a list of two numbers, one number (used for
both passes) or AstroDrizzle's string form (``"3.5 3.0"``, ``"4,3"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["COMBINE_TYPES", "INTERPOLANTS", "METHODS", "CRParams", "cr_parameters"]

COMBINE_TYPES = ("minmed", "median", "mean")
"""Median-step combinations (AstroDrizzle's ``iminmed``/``imedian``/``imean`` are accepted as
aliases: here a pixel no input covers is always NaN)."""

INTERPOLANTS = ("nearest", "linear", "poly3", "poly5", "lanczos3", "lanczos5")
"""Blot interpolants (``drizzle.resample.blot_image``)."""

_ALIASES = {
    "nlow": ("nlow", "combine_nlow"),
    "nhigh": ("nhigh", "combine_nhigh"),
    "maskpt": ("maskpt", "combine_maskpt"),
    "nsigma": ("nsigma", "combine_nsigma"),
    "combine_grow": ("combine_grow",),
    "snr": ("snr", "driz_cr_snr"),
    "scale": ("scale", "driz_cr_scale"),
    "grow": ("grow", "driz_cr_grow"),
    "ctegrow": ("ctegrow", "driz_cr_ctegrow"),
    "interp": ("interp", "blot_interp"),
    "combine_type": ("combine_type",),
    "method": ("method",),
    "core_tolerance": ("core_tolerance",),
}

METHODS = ("sampling", "reference")
"""driz_cr variants: AstroDrizzle's test alone, or with the sampling-aware changes
(:mod:`mvmflow.crreject`)."""


@dataclass(frozen=True)
class CRParams:
    """Resolved parameters of the median, blot and driz_cr steps.

    Attributes
    ----------
    combine_type : str
        ``minmed``, ``median`` or ``mean``.
    nlow, nhigh : int
        Lowest / highest valid values rejected per pixel by ``median`` and ``mean``
        (``minmed`` uses its own rule: nhigh = 1 with three or more valid inputs).
    maskpt : float
        An input pixel enters the median only if its weight is at least ``maskpt`` times the
        mean weight of that exposure's covered pixels.
    nsigma : tuple of float
        ``minmed``: significance for taking the minimum instead of the median, alone and
        next to a pixel where the minimum was taken.
    combine_grow : int
        ``minmed``: radius (pixels) of that neighbourhood (0: no second pass).
    snr, scale : tuple of float
        driz_cr: signal-to-noise thresholds and derivative multipliers of the two passes.
    grow : int
        driz_cr: side of the square each cosmic-ray pixel is grown to (AstroDrizzle's
        ``driz_cr_grow``: 1 = no growth, 3 = one pixel around).
    ctegrow : int
        AstroDrizzle's CTE tail growth; only 0 is implemented.
    interp : str
        Blot interpolant.
    crbit : int
        DQ flag of cosmic rays (4096).
    method : str
        ``sampling`` (default) or ``reference`` (AstroDrizzle's driz_cr test alone); see
        :mod:`mvmflow.crreject`.
    core_tolerance : float
        ``sampling``: where the model is steep, an exposure's own resampled image may exceed
        the other exposures' envelope by this fraction of it before a pixel counts as a
        cosmic ray (undersampled star cores differ that much between dithers).
    """

    combine_type: str = "minmed"
    nlow: int = 0
    nhigh: int = 1
    maskpt: float = 0.3
    nsigma: tuple[float, float] = (4.0, 3.0)
    combine_grow: int = 1
    snr: tuple[float, float] = (3.5, 3.0)
    scale: tuple[float, float] = (1.2, 0.7)
    grow: int = 1
    ctegrow: int = 0
    interp: str = "poly5"
    crbit: int = 4096
    method: str = "sampling"
    core_tolerance: float = 0.75

    def as_dict(self) -> dict:
        """Plain values (for headers and provenance)."""
        return {"combine_type": self.combine_type, "nlow": self.nlow, "nhigh": self.nhigh,
                "maskpt": self.maskpt, "nsigma": list(self.nsigma),
                "combine_grow": self.combine_grow, "snr": list(self.snr),
                "scale": list(self.scale), "grow": self.grow, "ctegrow": self.ctegrow,
                "interp": self.interp, "crbit": self.crbit, "method": self.method,
                "core_tolerance": self.core_tolerance}


def _pair(value, name: str) -> tuple[float, float]:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,;\s]+", value.strip()) if p]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"cosmic-ray parameter {name}: expected one or two numbers, "
                         f"got {value!r}") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2:
        raise ValueError(f"cosmic-ray parameter {name}: expected one or two numbers, "
                         f"got {value!r}")
    return numbers[0], numbers[1]


def _lookup(cr: Mapping, key: str):
    found = [(name, cr[name]) for name in _ALIASES[key] if name in cr]
    if len(found) > 1 and len({str(v) for _, v in found}) > 1:
        raise ValueError(f"cosmic-ray parameter {key} given twice: {dict(found)}")
    return found[0][1] if found else None


def _nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"cosmic-ray parameter {name} must be an integer >= 0, got {value!r}")
    return int(value)


def cr_parameters(params: Mapping | None) -> CRParams:
    """The cosmic-ray parameters of a layer.

    Parameters
    ----------
    params : mapping or None
        The layer's parameters (:func:`mvmflow.params.layer_parameters`): its ``cr`` mapping
        and ``crbit`` are read; missing values take the reference's MVM defaults (module
        notes).

    Returns
    -------
    CRParams

    Raises
    ------
    ValueError
        For an unknown key or combination, a malformed pair, or a value out of range.
    """
    params = dict(params or {})
    cr = dict(params.get("cr") or {})
    known = {name for names in _ALIASES.values() for name in names}
    unknown = sorted(set(cr) - known)
    if unknown:
        raise ValueError(f"unknown cosmic-ray parameters {unknown}; known: {sorted(known)}")
    base = CRParams()
    values = {}
    combine = _lookup(cr, "combine_type")
    if combine is not None:
        text = str(combine).lower()
        if text.startswith("i") and text[1:] in COMBINE_TYPES:
            text = text[1:]
        if text == "average":
            text = "mean"
        if text not in COMBINE_TYPES:
            raise ValueError(f"combine_type {combine!r} is not one of {COMBINE_TYPES}")
        values["combine_type"] = text
    for key in ("nlow", "nhigh", "combine_grow", "grow", "ctegrow"):
        value = _lookup(cr, key)
        if value is not None:
            values[key] = _nonnegative_int(value, key)
    if values.get("grow", 1) < 1:
        raise ValueError("cosmic-ray parameter grow must be >= 1 (1 = no growth)")
    if values.get("ctegrow", 0):
        raise ValueError("driz_cr_ctegrow > 0 (CTE tail growth) is not implemented")
    maskpt = _lookup(cr, "maskpt")
    if maskpt is not None:
        maskpt = float(maskpt)
        if not 0.0 <= maskpt <= 1.0:
            raise ValueError(f"combine_maskpt must be in [0, 1], got {maskpt}")
        values["maskpt"] = maskpt
    for key in ("nsigma", "snr", "scale"):
        value = _lookup(cr, key)
        if value is not None:
            pair = _pair(value, key)
            if min(pair) < 0:
                raise ValueError(f"cosmic-ray parameter {key} must be >= 0, got {value!r}")
            values[key] = pair
    interp = _lookup(cr, "interp")
    if interp is not None:
        text = str(interp).lower()
        text = {"lan3": "lanczos3", "lan5": "lanczos5"}.get(text, text)
        if text not in INTERPOLANTS:
            raise ValueError(f"blot interpolant {interp!r} is not one of {INTERPOLANTS}")
        values["interp"] = text
    method = _lookup(cr, "method")
    if method is not None:
        if str(method).lower() not in METHODS:
            raise ValueError(f"cosmic-ray method {method!r} is not one of {METHODS}")
        values["method"] = str(method).lower()
    tolerance = _lookup(cr, "core_tolerance")
    if tolerance is not None:
        tolerance = float(tolerance)
        if not tolerance >= 0:
            raise ValueError(f"core_tolerance must be >= 0, got {tolerance}")
        values["core_tolerance"] = tolerance
    crbit = params.get("crbit", base.crbit)
    values["crbit"] = _nonnegative_int(crbit, "crbit")
    return CRParams(**{**base.__dict__, **values})
