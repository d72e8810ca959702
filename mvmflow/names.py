"""Every file name the MVM workflow reads or writes: formatting and strict parsing.

This module is the single place where names are built and taken apart; see
``spec/grid_and_names.md`` sections 2.3, 4-9 and ``spec/processing.md`` sections 1.9, 1.10,
4.5 and 5. Every parser is strict (a full match of the grammar, lower case where the name is
lower case) and raises :class:`ValueError` naming the offending string. Every formatter
validates its inputs the same way, and ``parse(x.filename) == x`` holds for every valid value
of the dataclasses below.

Name forms
----------
Exposures (inputs):

- plain exposure ``<ipppssoot>_<flt|flc>.fits``: ``ib2v01abq_flt.fits``
  (:class:`ExposureName`);
- SVM exposure ``hst_<proposid>_<obset>_<instr>_<det>_<filter>_<ipppssoo>_<flt|flc>.fits``:
  ``hst_11360_01_wfc3_ir_f160w_ib2v01ab_flt.fits`` (:class:`SvmExposureName`);
- the rootname token of any file name is its second-to-last ``_`` field (``ib2v01abq``,
  ``ib2v01ab``); from it: instrument from the first letter (``i`` wfc3, ``j`` acs, ``o`` stis,
  ``u`` wfpc2, ``x`` foc, ``w`` wfpc), program id = characters 2-4 upper-cased (``B2V``),
  obset id = characters 5-6 upper-cased (``01``), visit = characters 1-6 (``ib2v01``),
  ipppssoo = characters 1-8 (``ib2v01ab``).

Sky cells and per-run files:

- sky cell ``skycell-pPPPPxXXyYY``: ``skycell-p0081x14y14``; ``SCELLID`` ``p0081x14y14``;
- poller ``<skycell>_input.out``: ``skycell-p0081x14y14_input.out``; its run log
  ``skycell-p0081x14y14_input.log``;
- manifest ``<skycell>_manifest.txt``: ``skycell-p0081x14y14_manifest.txt`` (no ``hst_``, as
  drizzlepac 3.11.0).

Layer products (:class:`LayerName`), ``<prefix>_<instr>_<det>_<filter>_<label>_<type>.fits``
with label ``(coarse-)?(all|short|med|long)(-YYYY)?(-<ipppssoo>)?``:

- fine layer: ``hst_skycell-p0081x14y14_wfc3_ir_f160w_all_drz.fits``;
- coarse layer: ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits``;
- exposure-level product: ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits``;
- exposure copy: ``hst_skycell-p0081x14y14_wfc3_uvis_f606w_all-ib2v01ac_flc.fits``;
- ``hard`` layer method: ``hst_skycell-p0081x14y14_wfc3_ir_f160w_short-2012_drz.fits``,
  ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-long-2013_drz.fits``;
- ``ROOTNAME`` header value (the file name less its last ``_`` token):
  ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all``; trailer ``<rootname>_trl.txt``:
  ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_trl.txt``; also ``<rootname>_trl.log``,
  ``<rootname>_hlet.fits``, ``<rootname>_ref_cat.ecsv`` and ``<rootname>_header_hap.rules``;
- custom mosaics replace ``hst_<skycell>`` by a prefix: the default
  ``hst_skycell-p1974-ra201d9512-decn26d0012_wfc3_uvis_f606w_all_drc.fits``
  (:func:`default_prefix`) or a user's ``mymosaic_wfc3_uvis_f606w_all_drc.fits``
  (:func:`custom_prefix`); the reference's own automatic prefix
  ``hst_skycell-p0081-ra87d27272727272727-decs70d0`` is :func:`reference_auto_prefix`.
  :meth:`LayerName.parse` reads the five fixed fields from the right, so any prefix (even one
  containing ``_``, ``acs`` or ``wfc3``) round-trips.

``hapcut`` names, sharing the coordinate token ``ra<int>d<frac4>-dec<n|s><int>d<frac4>``
(:func:`coord_token`):

- archive query table ``mvm_query-<coords>_<radius>_cutout.ecsv``:
  ``mvm_query-ra84d9207-decs69d8516_354_cutout.ecsv`` (:func:`query_filename`);
- cutout ``hst_cutout_skycell-<pPPPPxXXyYY>-<coords>_<instr>_<det>_<filter>[_<tag>][-<ipppssoo>].fits``:
  ``hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w_coarse-ib2v01ab.fits``
  (:class:`CutoutName`);
- combined cutouts ``hst_combined_skycells-<coords>_<instr>_<det>_<filter>[_<tag>][_<ipppssoo>].fits``:
  ``hst_combined_skycells-ra85d2566-decs69d1498_wfc3_ir_f160w_coarse.fits``
  (:class:`CombinedName`).

The ``<tag>`` is ``coarse`` for coarse products and absent for fine ones (as the reference);
for the non-``all`` layer methods it is ``[coarse][-<class>][-<year>]`` joined by ``-``, with
the class omitted when it is ``all``: ``short-2012``, ``coarse-2012``.

Filters: :func:`normalize_filter` (``F606W;POL60V`` -> ``f606w-pol60v``),
:func:`filter_from_header` and :func:`poller_filter` (``F606W-POL60V``).

Deviations from drizzlepac 3.11.0
---------------------------------
1. Sky-cell names are parsed strictly: a full match of ``skycell-p\\d{4}x\\d{2}y\\d{2}`` with
   ``0 <= p <= 2643`` and ``1 <= x, y <= 21``. The reference accepts trailing junk
   (``skycell-p0081x14y14junk``), X = 0 and out-of-range indices. Its failure-path manifest
   default ``skycell-p0000x00y00_manifest.txt`` is therefore not a valid name here.
2. Layer labels for the non-``all`` layer methods carry the exposure-time class and the year
   (``short-2012``, ``coarse-short-2012``); the reference omits them from fine names and the
   year from coarse names, so its ``hard`` names collide. ``all`` and ``coarse-all`` give
   exactly the reference names.
3. A user prefix ending in ``_`` loses exactly that ``_`` (``mymosaic_`` -> ``mymosaic``); the
   reference cuts two characters (``mymosai``).
4. The default custom-mosaic prefix follows the reference documentation, not its code (see
   below).
5. ``hapcut`` coordinates whose ``str()`` uses exponent notation (``1e-05``) are written in
   positional notation (``0d0000``) instead of crashing; RA is wrapped to [0, 360) as
   ``SkyCoord`` does and a declination outside [-90, 90] is rejected.
6. A scalar astropy Quantity cutout size is accepted (the reference raises IndexError).
7. Combined-cutout names carry the ``_coarse`` tag (and the class/year tag), so fine and coarse
   cutouts are never grouped together; the reference has no scale tag and mixes them.
8. A polarizer filter (``f606w-pol60v``) is never mistaken for an exposure: an ipppssoo is
   exactly ``[ijouxw][a-z0-9]{7}``, and no filter may have a ``-`` piece of that form. The
   reference turns ``f606w-pol60v`` cutouts into ``..._f606w_pol60v.fits``.
9. Cutout names of non-``all`` layers carry the class/year tag; the reference would append the
   class as if it were an ipppssoo. Cutouts of custom-prefix layers are refused (the
   reference crashes or mis-parses them).
10. :func:`normalize_filter` strips blanks around and drops empty ``;`` fields (the reference
    turns ``;F606W`` into ``-f606w``) and rejects an empty value or a result with characters
    outside ``[a-z0-9-]``.
11. ``SCELLID`` removes the ``skycell-`` prefix; the reference strips the *characters* of
    ``skycell-`` from both ends, which is the same for every valid name.

Where the reference code and its documentation disagree
--------------------------------------------------------
- Custom-mosaic prefix: the docstrings of ``rename_output_products``/``run_mvm_processing``
  promise ``ra<##>d<####>-dec<n|s><##>d<####>`` with four decimals of the mosaic position
  (``skycell-p1974-ra201d9512-decn26d0012`` for RA 201.9512, Dec +26.0012); the code writes
  every digit of the projection-cell centre. We follow the documentation (4 decimals,
  rounded and zero-padded, of the mosaic centre) but begin with ``hst_`` (underscore, as the
  code and every other product name) rather than the docstring's ``hst-``.
- ``make_the_cut`` documents the sky-cell part as ``p<pppp>``; its code and the archive use
  the full ``pPPPPxXXyYY``. We keep the full sky cell, because a cutout must name the file it
  came from (and the issue asks for it).
- ``mvm_id_filenames`` documents ``d<####>`` (four digits); the code truncates to *up to*
  four characters without padding (``84.92`` -> ``84d92``). We reproduce the code, because
  every verified archive name uses it (and the issue asks for it).
- ``mvm_id_filenames`` documents a scalar Quantity size as valid; the code crashes. We follow
  the documentation.
- The documented cutout size order is ``(ny, nx)``, the code uses element 0 for RA. The query
  radius is symmetric in the two, so names do not depend on it.
- ``mvm_combine`` documents grouping by detector and filter; its code also merges fine with
  coarse cutouts and mis-parses polarizers. We group by (instrument, detector, filter, scale,
  class, year, ipppssoo).
- The manifest: older drizzlepac versions and documents name it ``hst_skycell-..._manifest.txt``;
  we keep the 3.11.0 code's ``skycell-..._manifest.txt``, which is what the archive receives.
"""

from __future__ import annotations

import math
import operator
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "INSTRUMENT_LETTERS",
    "MVM_INSTRUMENTS",
    "N_PROJECTION_CELLS",
    "SC_NXY",
    "EXPTIME_CLASSES",
    "EXPOSURE_TYPES",
    "PRODUCT_TYPES",
    "SCALES",
    "CombinedName",
    "CutoutName",
    "ExposureName",
    "LayerName",
    "SvmExposureName",
    "combined_filename",
    "coord_token",
    "custom_prefix",
    "cutout_filename",
    "cutout_size_arcsec",
    "dec_token",
    "default_prefix",
    "filter_from_header",
    "format_skycell",
    "frac4",
    "instrument_from_rootname",
    "ipppssoo_of",
    "manifest_filename",
    "normalize_filter",
    "obset_id",
    "parse_default_prefix",
    "parse_exposure",
    "parse_manifest_filename",
    "parse_poller_filename",
    "parse_query_filename",
    "parse_skycell",
    "poller_filename",
    "poller_filter",
    "program_id",
    "query_filename",
    "query_radius",
    "ra_token",
    "reference_auto_prefix",
    "rootname_from_filename",
    "rootname_token",
    "run_log_filename",
    "scellid",
    "skycell_from_scellid",
    "trailer_filename",
    "visit_id",
]

INSTRUMENT_LETTERS = {
    "i": "wfc3",
    "j": "acs",
    "o": "stis",
    "u": "wfpc2",
    "x": "foc",
    "w": "wfpc",
}
"""Instrument (lower case) from the first letter of an ipppssoot."""
MVM_INSTRUMENTS = ("acs", "wfc3", "wfpc2")
"""Instruments that appear in MVM product names."""
N_PROJECTION_CELLS = 2644
"""Projection cells are numbered 0 .. 2643."""
SC_NXY = 21
"""Sky-cell indices X and Y run 1 .. 21."""
SCALES = ("fine", "coarse")
"""Named plate scales of layer products (0.04 and 0.12 arcsec/px)."""
EXPTIME_CLASSES = ("all", "short", "med", "long")
"""Exposure-time classes of the layer methods (``all``; ``hard`` adds short/med/long)."""
EXPOSURE_TYPES = ("flt", "flc")
PRODUCT_TYPES = ("drz", "drc")

_LETTERS = "".join(INSTRUMENT_LETTERS)
_IPPPSSOO = rf"[{_LETTERS}][a-z0-9]{{7}}"
_IPPPSSOO_RE = re.compile(_IPPPSSOO)
_ROOTNAME_RE = re.compile(rf"[{_LETTERS}][a-z0-9]{{7,8}}")
_SKYCELL_RE = re.compile(r"skycell-p(\d{4})x(\d{2})y(\d{2})")
_SCELLID_RE = re.compile(r"p(\d{4})x(\d{2})y(\d{2})")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_FILTER_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*(?:_[A-Za-z0-9.+-]+)*")
_LABEL_RE = re.compile(
    r"(?P<coarse>coarse-)?(?P<cls>all|short|med|long)(?:-(?P<year>\d{4}))?"
    rf"(?:-(?P<ipppssoo>{_IPPPSSOO}))?"
)
_COORDS_RE = re.compile(r"ra\d+d\d{1,4}-dec[ns]\d+d\d{1,4}")
_QUERY_RE = re.compile(rf"mvm_query-(?P<coords>{_COORDS_RE.pattern})_(?P<radius>\d+)_cutout\.ecsv")
_DEFAULT_PREFIX_RE = re.compile(
    r"hst_skycell-p(?P<p>\d{4})-ra(?P<ra>\d{1,3})d(?P<raf>\d{4})"
    r"-dec(?P<ns>[ns])(?P<dec>\d{1,2})d(?P<decf>\d{4})"
)


# ------------------------------------------------------------------------------------------
# small helpers


def _basename(filename: str | os.PathLike) -> str:
    """Return the last path component of ``filename`` as a string."""
    name = os.path.basename(os.fspath(filename))
    if not name:
        raise ValueError(f"empty file name in {os.fspath(filename)!r}")
    return name


def _index(value, what: str) -> int:
    """Return ``value`` as a Python int, refusing bools, floats and strings."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, not {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, not {value!r}") from None


def _check_choice(value, choices, what: str) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
    return value.lower()


def _check_token(value, what: str) -> str:
    """A lower-cased ``[a-z0-9]+`` name token (detector)."""
    if not isinstance(value, str) or not _TOKEN_RE.fullmatch(value.lower()):
        raise ValueError(f"invalid {what} {value!r}: expected letters and digits only")
    return value.lower()


def _check_filter(value) -> str:
    """A lower-cased filter name ``[a-z0-9]+(-[a-z0-9]+)*`` with no ipppssoo-like piece."""
    if not isinstance(value, str) or not _FILTER_RE.fullmatch(value.lower()):
        raise ValueError(
            f"invalid filter {value!r}: expected letters and digits joined by '-' "
            "(normalise it with normalize_filter)"
        )
    value = value.lower()
    for piece in value.split("-"):
        if _IPPPSSOO_RE.fullmatch(piece):
            raise ValueError(f"invalid filter {value!r}: {piece!r} looks like an ipppssoo")
    return value


def _check_ipppssoo(value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _IPPPSSOO_RE.fullmatch(value.lower()):
        raise ValueError(
            f"invalid ipppssoo {value!r}: expected 8 letters/digits starting with one of "
            f"{', '.join(INSTRUMENT_LETTERS)}"
        )
    return value.lower()


def _check_year(value) -> int | None:
    if value is None:
        return None
    year = _index(value, "year")
    if not 1000 <= year <= 9999:
        raise ValueError(f"year must have 4 digits, not {value!r}")
    return year


def _check_layer_fields(obj) -> None:
    """Validate and normalise the fields shared by layer, cutout and combined names."""
    set_ = object.__setattr__
    set_(obj, "instrument", _check_choice(obj.instrument, MVM_INSTRUMENTS, "instrument"))
    set_(obj, "detector", _check_token(obj.detector, "detector"))
    set_(obj, "filter", _check_filter(obj.filter))
    set_(obj, "scale", _check_choice(obj.scale, SCALES, "scale"))
    set_(obj, "exptime_class", _check_choice(obj.exptime_class, EXPTIME_CLASSES, "exposure-time class"))
    set_(obj, "year", _check_year(obj.year))
    set_(obj, "ipppssoo", _check_ipppssoo(obj.ipppssoo))


def _canonical(obj, name: str, kind: str):
    """Return ``obj`` if it formats back to ``name``, else raise (catches case and padding)."""
    if obj.filename != name:
        raise ValueError(f"{name!r} is not a canonical {kind} name (expected {obj.filename!r})")
    return obj


# ------------------------------------------------------------------------------------------
# exposures


def rootname_token(filename: str | os.PathLike) -> str:
    """Return the rootname token of an exposure file name, lower-cased.

    The token is the second-to-last ``_`` field, which works for plain names
    (``ib2v01abq_flt.fits`` -> ``ib2v01abq``) and SVM names
    (``hst_11360_01_wfc3_ir_f160w_ib2v01ab_flt.fits`` -> ``ib2v01ab``).

    Parameters
    ----------
    filename : str or os.PathLike
        Exposure file name, possibly with directories.

    Returns
    -------
    str
        The 9-character ipppssoot or 8-character ipppssoo.

    Raises
    ------
    ValueError
        If the name has no ``_`` or the token is not a rootname.
    """
    name = _basename(filename)
    fields = name.split("_")
    if len(fields) < 2:
        raise ValueError(f"no rootname token in {name!r}: expected '<rootname>_<type>.fits'")
    token = fields[-2].lower()
    if not _ROOTNAME_RE.fullmatch(token):
        raise ValueError(f"{fields[-2]!r} in {name!r} is not an ipppssoo(t) rootname")
    return token


def _rootname(value: str | os.PathLike) -> str:
    """A bare rootname (8 or 9 characters) or the rootname token of a file name."""
    name = _basename(value)
    if _ROOTNAME_RE.fullmatch(name.lower()):
        return name.lower()
    return rootname_token(name)


def instrument_from_rootname(value: str | os.PathLike) -> str:
    """Return the lower-case instrument of a rootname or exposure file name.

    ``i`` wfc3, ``j`` acs, ``o`` stis, ``u`` wfpc2, ``x`` foc, ``w`` wfpc.

    Parameters
    ----------
    value : str or os.PathLike
        A rootname (``ib2v01abq``, ``ib2v01ab``) or an exposure file name.

    Returns
    -------
    str
        Instrument name, e.g. ``'wfc3'``.
    """
    return INSTRUMENT_LETTERS[_rootname(value)[0]]


def ipppssoo_of(value: str | os.PathLike) -> str:
    """Return the 8-character ipppssoo (the rootname without its last letter)."""
    return _rootname(value)[:8]


def program_id(value: str | os.PathLike) -> str:
    """Return the program id, characters 2-4 of the rootname upper-cased (``B2V``)."""
    return _rootname(value)[1:4].upper()


def obset_id(value: str | os.PathLike) -> str:
    """Return the obset (visit) id, characters 5-6 of the rootname upper-cased (``01``).

    This is poller column 4 as written by the reference in practice.
    """
    return _rootname(value)[4:6].upper()


def visit_id(value: str | os.PathLike) -> str:
    """Return the visit key, the first 6 characters of the rootname (``ib2v01``)."""
    return _rootname(value)[:6]


class _RootnameMixin:
    """Properties derived from the rootname token."""

    @property
    def program_id(self) -> str:
        return program_id(self.rootname)

    @property
    def obset_id(self) -> str:
        return obset_id(self.rootname)

    @property
    def visit_id(self) -> str:
        return visit_id(self.rootname)


@dataclass(frozen=True)
class ExposureName(_RootnameMixin):
    """A plain calibrated exposure name ``<ipppssoot>_<flt|flc>.fits``.

    Parameters
    ----------
    rootname : str
        The 9-character ipppssoot, e.g. ``'ib2v01abq'``.
    file_type : str
        ``'flt'`` or ``'flc'``.

    Examples
    --------
    >>> ExposureName.parse("ib2v01abq_flt.fits").program_id
    'B2V'
    """

    rootname: str
    file_type: str = "flt"

    def __post_init__(self):
        root = self.rootname.lower() if isinstance(self.rootname, str) else self.rootname
        if not isinstance(root, str) or len(root) != 9 or not _ROOTNAME_RE.fullmatch(root):
            raise ValueError(f"invalid exposure rootname {self.rootname!r}: expected an ipppssoot")
        object.__setattr__(self, "rootname", root)
        object.__setattr__(self, "file_type", _check_choice(self.file_type, EXPOSURE_TYPES, "file type"))

    @property
    def ipppssoo(self) -> str:
        return self.rootname[:8]

    @property
    def instrument(self) -> str:
        return INSTRUMENT_LETTERS[self.rootname[0]]

    @property
    def filename(self) -> str:
        return f"{self.rootname}_{self.file_type}.fits"

    @classmethod
    def parse(cls, filename: str | os.PathLike) -> ExposureName:
        """Parse ``<ipppssoot>_<flt|flc>.fits`` (directories are ignored)."""
        name = _basename(filename)
        m = re.fullmatch(r"([a-z0-9]+)_([a-z]+)\.fits", name)
        if not m:
            raise ValueError(f"{name!r} is not an exposure name '<ipppssoot>_<flt|flc>.fits'")
        try:
            obj = cls(m.group(1), m.group(2))
        except ValueError as err:
            raise ValueError(f"{name!r} is not an exposure name: {err}") from None
        return _canonical(obj, name, "exposure")


@dataclass(frozen=True)
class SvmExposureName(_RootnameMixin):
    """An SVM exposure name ``hst_<prop>_<obset>_<instr>_<det>_<filter>_<ipppssoo>_<flt|flc>.fits``.

    Parameters
    ----------
    proposal_id : int
        Proposal number, written without zero padding (``11360``).
    obset : str
        Two-character obset id, lower case (``'01'``).
    instrument, detector, filter : str
        Lower-case instrument (must agree with the ipppssoo), detector and normalised filter.
    ipppssoo : str
        The 8-character exposure name.
    file_type : str
        ``'flt'`` or ``'flc'``.

    Examples
    --------
    >>> SvmExposureName.parse("hst_11360_01_wfc3_ir_f160w_ib2v01ab_flt.fits").program_id
    'B2V'
    """

    proposal_id: int
    obset: str
    instrument: str
    detector: str
    filter: str
    ipppssoo: str
    file_type: str = "flt"

    def __post_init__(self):
        set_ = object.__setattr__
        prop = _index(self.proposal_id, "proposal id")
        if prop <= 0:
            raise ValueError(f"proposal id must be positive, not {self.proposal_id!r}")
        set_(self, "proposal_id", prop)
        if not isinstance(self.obset, str) or not re.fullmatch(r"[a-z0-9]{2}", self.obset.lower()):
            raise ValueError(f"invalid obset {self.obset!r}: expected 2 letters/digits")
        set_(self, "obset", self.obset.lower())
        set_(self, "instrument", _check_choice(self.instrument, tuple(INSTRUMENT_LETTERS.values()), "instrument"))
        set_(self, "detector", _check_token(self.detector, "detector"))
        set_(self, "filter", _check_filter(self.filter))
        ipppssoo = _check_ipppssoo(self.ipppssoo)
        if ipppssoo is None:
            raise ValueError("an SVM exposure name needs an ipppssoo")
        set_(self, "ipppssoo", ipppssoo)
        if INSTRUMENT_LETTERS[ipppssoo[0]] != self.instrument:
            raise ValueError(
                f"instrument {self.instrument!r} does not match ipppssoo {ipppssoo!r} "
                f"({INSTRUMENT_LETTERS[ipppssoo[0]]})"
            )
        set_(self, "file_type", _check_choice(self.file_type, EXPOSURE_TYPES, "file type"))

    @property
    def rootname(self) -> str:
        return self.ipppssoo

    @property
    def filename(self) -> str:
        return (
            f"hst_{self.proposal_id}_{self.obset}_{self.instrument}_{self.detector}_"
            f"{self.filter}_{self.ipppssoo}_{self.file_type}.fits"
        )

    @classmethod
    def parse(cls, filename: str | os.PathLike) -> SvmExposureName:
        """Parse an SVM exposure name (directories are ignored)."""
        name = _basename(filename)
        fields = name[:-5].split("_") if name.endswith(".fits") else []
        if len(fields) != 8 or fields[0] != "hst" or not fields[1].isdigit():
            raise ValueError(
                f"{name!r} is not an SVM exposure name "
                "'hst_<prop>_<obset>_<instr>_<det>_<filter>_<ipppssoo>_<flt|flc>.fits'"
            )
        try:
            obj = cls(int(fields[1]), *fields[2:])
        except ValueError as err:
            raise ValueError(f"{name!r} is not an SVM exposure name: {err}") from None
        return _canonical(obj, name, "SVM exposure")


def parse_exposure(filename: str | os.PathLike) -> ExposureName | SvmExposureName:
    """Parse a plain (``ib2v01abq_flt.fits``) or SVM (``hst_...``) exposure file name."""
    name = _basename(filename)
    if name.startswith("hst_"):
        return SvmExposureName.parse(name)
    return ExposureName.parse(name)


# ------------------------------------------------------------------------------------------
# sky cells, pollers, manifests


def format_skycell(projection_cell: int, x: int, y: int) -> str:
    """Return the sky-cell name ``skycell-p%04dx%02dy%02d``.

    Parameters
    ----------
    projection_cell : int
        Projection-cell index, 0 .. 2643.
    x, y : int
        1-based sky-cell indices, 1 .. 21.

    Returns
    -------
    str
        e.g. ``'skycell-p0081x14y14'``.
    """
    p = _index(projection_cell, "projection-cell index")
    x = _index(x, "sky-cell x index")
    y = _index(y, "sky-cell y index")
    _check_skycell_ranges(p, x, y, f"p={p}, x={x}, y={y}")
    return f"skycell-p{p:04d}x{x:02d}y{y:02d}"


def _check_skycell_ranges(p: int, x: int, y: int, name: str) -> None:
    if not 0 <= p < N_PROJECTION_CELLS:
        raise ValueError(f"projection cell {p} out of range 0..{N_PROJECTION_CELLS - 1} in {name!r}")
    if not 1 <= x <= SC_NXY:
        raise ValueError(f"sky-cell x index {x} out of range 1..{SC_NXY} in {name!r}")
    if not 1 <= y <= SC_NXY:
        raise ValueError(f"sky-cell y index {y} out of range 1..{SC_NXY} in {name!r}")


def parse_skycell(name: str) -> tuple[int, int, int]:
    """Parse a sky-cell name strictly.

    Parameters
    ----------
    name : str
        e.g. ``'skycell-p0081x14y14'``. The whole string must match (no trailing text).

    Returns
    -------
    tuple of int
        ``(projection_cell, x, y)``.

    Raises
    ------
    ValueError
        If ``name`` is not exactly ``skycell-pPPPPxXXyYY`` or an index is out of range.
    """
    m = _SKYCELL_RE.fullmatch(name) if isinstance(name, str) else None
    if not m:
        raise ValueError(
            f"invalid sky-cell name {name!r}: expected exactly 'skycell-pPPPPxXXyYY' "
            "(4-digit projection cell, 2-digit x and y)"
        )
    p, x, y = (int(g) for g in m.groups())
    _check_skycell_ranges(p, x, y, name)
    return p, x, y


def scellid(skycell: str) -> str:
    """Return the ``SCELLID`` header value: ``skycell-p0081x14y14`` -> ``p0081x14y14``."""
    parse_skycell(skycell)
    return skycell[len("skycell-"):]


def skycell_from_scellid(value: str) -> str:
    """Return the sky-cell name of an ``SCELLID``: ``p0081x14y14`` -> ``skycell-p0081x14y14``."""
    if not isinstance(value, str) or not _SCELLID_RE.fullmatch(value):
        raise ValueError(f"invalid SCELLID {value!r}: expected exactly 'pPPPPxXXyYY'")
    name = "skycell-" + value
    parse_skycell(name)
    return name


def _suffixed(skycell: str, suffix: str) -> str:
    parse_skycell(skycell)
    return skycell + suffix


def _strip_suffix(filename: str | os.PathLike, suffix: str, kind: str) -> str:
    name = _basename(filename)
    if not name.endswith(suffix):
        raise ValueError(f"{name!r} is not a {kind} name 'skycell-pPPPPxXXyYY{suffix}'")
    skycell = name[: -len(suffix)]
    try:
        parse_skycell(skycell)
    except ValueError as err:
        raise ValueError(f"{name!r} is not a {kind} name: {err}") from None
    return skycell


def poller_filename(skycell: str) -> str:
    """Return the MVM poller name ``<skycell>_input.out``."""
    return _suffixed(skycell, "_input.out")


def parse_poller_filename(filename: str | os.PathLike) -> str:
    """Return the sky-cell name of a poller file name ``skycell-pPPPPxXXyYY_input.out``."""
    return _strip_suffix(filename, "_input.out", "poller")


def run_log_filename(poller: str | os.PathLike) -> str:
    """Return the run-log name: the poller name with its last extension replaced by ``.log``.

    ``skycell-p0081x14y14_input.out`` -> ``skycell-p0081x14y14_input.log``.
    """
    name = _basename(poller)
    stem, ext = os.path.splitext(name)
    if not stem or not ext:
        raise ValueError(f"poller name {name!r} has no extension to replace")
    return stem + ".log"


def manifest_filename(skycell: str) -> str:
    """Return the manifest name ``<skycell>_manifest.txt`` (no ``hst_``, as 3.11.0)."""
    return _suffixed(skycell, "_manifest.txt")


def parse_manifest_filename(filename: str | os.PathLike) -> str:
    """Return the sky-cell name of a manifest name ``skycell-pPPPPxXXyYY_manifest.txt``."""
    return _strip_suffix(filename, "_manifest.txt", "manifest")


def rootname_from_filename(filename: str | os.PathLike) -> str:
    """Return the ``ROOTNAME`` of a product: its file name without the last ``_`` token.

    ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits`` ->
    ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all``.
    """
    name = _basename(filename)
    root, sep, _ = name.rpartition("_")
    if not sep or not root:
        raise ValueError(f"{name!r} has no '_<type>' token to remove")
    return root


def trailer_filename(product: str | os.PathLike) -> str:
    """Return the trailer name of a product file: ``<rootname>_trl.txt``.

    ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits`` ->
    ``hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_trl.txt``.
    """
    name = _basename(product)
    if not name.endswith(".fits"):
        raise ValueError(f"{name!r} is not a product file name ('..._<type>.fits')")
    return rootname_from_filename(name) + "_trl.txt"


# ------------------------------------------------------------------------------------------
# custom-mosaic prefixes


def _projection_cell(value) -> int:
    if isinstance(value, str):
        return parse_skycell(value)[0]
    p = _index(value, "projection-cell index")
    if not 0 <= p < N_PROJECTION_CELLS:
        raise ValueError(f"projection cell {p} out of range 0..{N_PROJECTION_CELLS - 1}")
    return p


def _quantity_units():
    """``astropy.units`` if a caller has imported it (a Quantity can only come from there),
    else None: names are plain strings and numbers, and astropy's units and coordinates
    cost every job 0.3 s to import (docs/speed.md)."""
    return sys.modules.get("astropy.units")


def _degrees(value, what: str) -> float:
    """A finite float in degrees from a number or an angle Quantity."""
    u = _quantity_units()
    if u is not None and isinstance(value, u.Quantity):
        try:
            value = value.to_value(u.deg)
        except u.UnitsError:
            raise ValueError(f"{what} {value!r} is not an angle") from None
    if isinstance(value, bool | str):
        raise ValueError(f"{what} must be a number of degrees, not {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of degrees, not {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, not {value!r}")
    return v


def _ra(value) -> float:
    """RA in degrees wrapped to [0, 360) as ``SkyCoord`` does."""
    ra = _degrees(value, "RA")
    if not 0.0 <= ra < 360.0:
        from astropy import units as u
        from astropy.coordinates import Longitude

        ra = float(Longitude(ra, unit=u.deg).degree)
    return ra + 0.0  # -0.0 -> 0.0


def _dec(value) -> float:
    dec = _degrees(value, "Dec")
    if not -90.0 <= dec <= 90.0:
        raise ValueError(f"Dec {value!r} outside [-90, 90]")
    return dec


def default_prefix(projection_cell: int | str, ra, dec) -> str:
    """Return the default custom-mosaic prefix (the documented form).

    ``hst_skycell-p<PPPP>-ra<int>d<4 digits>-dec<n|s><int>d<4 digits>``, from the mosaic
    centre rounded to 4 decimals and zero-padded.

    Parameters
    ----------
    projection_cell : int or str
        Projection-cell index, or any sky-cell name in it.
    ra, dec : float or astropy.units.Quantity
        Mosaic centre in degrees. RA is wrapped to [0, 360).

    Returns
    -------
    str
        e.g. ``default_prefix(1974, 201.9512, 26.0012)`` ->
        ``'hst_skycell-p1974-ra201d9512-decn26d0012'``.
    """
    p = _projection_cell(projection_cell)
    ra_text = f"{_ra(ra):.4f}"
    if ra_text == "360.0000":
        ra_text = "0.0000"
    dec = _dec(dec)
    dec_text = f"{abs(dec):.4f}"
    sign = "s" if dec < 0 and dec_text != "0.0000" else "n"
    ra_int, ra_frac = ra_text.split(".")
    dec_int, dec_frac = dec_text.split(".")
    return f"hst_skycell-p{p:04d}-ra{ra_int}d{ra_frac}-dec{sign}{dec_int}d{dec_frac}"


def parse_default_prefix(prefix: str) -> tuple[int, float, float]:
    """Parse a :func:`default_prefix` into ``(projection_cell, ra, dec)`` (4-decimal values)."""
    m = _DEFAULT_PREFIX_RE.fullmatch(prefix) if isinstance(prefix, str) else None
    if not m:
        raise ValueError(
            f"{prefix!r} is not a default mosaic prefix "
            "'hst_skycell-pPPPP-ra<int>d<4 digits>-dec<n|s><int>d<4 digits>'"
        )
    p = int(m["p"])
    ra = float(f"{m['ra']}.{m['raf']}")
    dec = float(f"{m['dec']}.{m['decf']}") * (-1 if m["ns"] == "s" else 1)
    try:
        canonical = default_prefix(p, ra, dec)
    except ValueError as err:
        raise ValueError(f"{prefix!r} is not a default mosaic prefix: {err}") from None
    if canonical != prefix:
        raise ValueError(f"{prefix!r} is not a canonical default prefix (expected {canonical!r})")
    return p, ra, dec


def custom_prefix(user_prefix: str | None = None, *, projection_cell=None, ra=None, dec=None) -> str:
    """Return the file-name prefix of a custom mosaic.

    Parameters
    ----------
    user_prefix : str, optional
        The user's prefix; None or ``''`` selects the default. One trailing ``_`` (the separator) is removed and every other
        character is kept (``'mymosaic_'`` -> ``'mymosaic'``).
    projection_cell, ra, dec : optional
        Needed when ``user_prefix`` is None or empty: see :func:`default_prefix`.

    Returns
    -------
    str
        The prefix that replaces ``hst_<skycell>`` in every product name.

    Raises
    ------
    ValueError
        If the prefix is not usable in a file name (empty, characters outside
        ``[A-Za-z0-9._+-]`` and single ``_``, leading or doubled ``_``).
    """
    if user_prefix is not None and not isinstance(user_prefix, str):
        raise ValueError(f"a mosaic prefix must be a string, not {user_prefix!r}")
    if user_prefix:
        prefix = user_prefix[:-1] if user_prefix.endswith("_") else user_prefix
        _check_prefix(prefix, original=user_prefix)
        return prefix
    if projection_cell is None or ra is None or dec is None:
        raise ValueError("a default mosaic prefix needs projection_cell, ra and dec")
    return default_prefix(projection_cell, ra, dec)


def _check_prefix(prefix, original=None) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            f"invalid file-name prefix {original if original is not None else prefix!r}: use "
            "letters, digits, '.', '+', '-' and single '_' separators, not starting or ending "
            "with '_'"
        )
    return prefix


def _float_text(value: float) -> str:
    """``str(value)``, or positional notation when ``str`` would use an exponent."""
    text = str(float(value))
    if "e" in text or "E" in text:
        text = np.format_float_positional(float(value), trim="0")
    return text


def reference_auto_prefix(pcell_index: int | str, crval1: float, crval2: float) -> str:
    """Return the automatic prefix that drizzlepac 3.11.0 actually writes.

    This reproduces the reference's behaviour (for comparison only): ``hst_`` + the sky-cell
    name up to ``x`` + ``-ra<A>d<B>-dec<n|s><C>d<D>``, where ``A.B`` and ``C.D`` are every
    digit of ``str()`` of the **projection-cell centre** ``CRVAL1``/``|CRVAL2|``. The sign
    letter is ``n`` when ``CRVAL2 > 0``; otherwise the ``-`` of the text becomes ``decs`` (so a
    ``CRVAL2`` of exactly 0.0 would give no ``dec`` at all, as in the reference; no grid band
    sits at Dec 0).

    Parameters
    ----------
    pcell_index : int or str
        Projection-cell index (or a sky-cell name).
    crval1, crval2 : float
        The projection-cell centre, e.g. ``ProjectionCell(81).crval``.

    Returns
    -------
    str
        e.g. ``'hst_skycell-p0081-ra87d27272727272727-decs70d0'``.
    """
    p = _projection_cell(pcell_index)
    ra_whole, ra_frac = _float_text(_degrees(crval1, "CRVAL1")).split(".")
    crval2 = _degrees(crval2, "CRVAL2")
    dec_whole, dec_frac = _float_text(crval2).split(".")
    dec_text = f"{dec_whole}d{dec_frac}"
    dec_text = "decn" + dec_text if crval2 > 0 else dec_text.replace("-", "decs")
    return f"hst_skycell-p{p:04d}-ra{ra_whole}d{ra_frac}-{dec_text}"


# ------------------------------------------------------------------------------------------
# layer products


@dataclass(frozen=True)
class LayerName:
    """The name of a layer product, an exposure-level product or an exposure copy.

    ``<prefix>_<instr>_<det>_<filter>_<label>_<type>.fits`` with label
    ``(coarse-)?(all|short|med|long)(-YYYY)?(-<ipppssoo>)?``.

    Parameters
    ----------
    prefix : str
        ``'hst_<skycell>'`` for sky-cell products (see :meth:`for_skycell`) or a custom-mosaic
        prefix (:func:`custom_prefix`).
    instrument : str
        ``'acs'``, ``'wfc3'`` or ``'wfpc2'``.
    detector : str
        Poller detector, e.g. ``'ir'``, ``'uvis'``, ``'wfc'``, ``'pc'``.
    filter : str
        Normalised filter name (:func:`normalize_filter`), e.g. ``'f606w-pol60v'``.
    scale : str
        ``'fine'`` (0.04"/px) or ``'coarse'`` (0.12"/px).
    exptime_class : str
        ``'all'`` (default) or ``'short'``, ``'med'``, ``'long'`` for the ``hard`` method.
    year : int, optional
        Observation year, for the non-``all`` layer methods.
    ipppssoo : str, optional
        Set for exposure-level products and exposure copies.
    product_type : str
        ``'drz'`` or ``'drc'``; ``'flt'`` or ``'flc'`` for exposure copies (needs ``ipppssoo``).

    Upper-case text (e.g. ``'IR'`` from the poller) is lower-cased on construction, except in
    the prefix.

    Examples
    --------
    >>> LayerName.for_skycell("skycell-p0081x14y14", "wfc3", "ir", "f160w", scale="coarse").filename
    'hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all_drz.fits'
    """

    prefix: str
    instrument: str
    detector: str
    filter: str
    scale: str = "fine"
    exptime_class: str = "all"
    year: int | None = None
    ipppssoo: str | None = None
    product_type: str = "drz"

    def __post_init__(self):
        _check_prefix(self.prefix)
        m = re.fullmatch(r"hst_(skycell-p\d{4}x\d{2}y\d{2})", self.prefix)
        if m:
            parse_skycell(m.group(1))
        _check_layer_fields(self)
        ptype = _check_choice(self.product_type, PRODUCT_TYPES + EXPOSURE_TYPES, "product type")
        if ptype in EXPOSURE_TYPES and self.ipppssoo is None:
            raise ValueError(f"product type {ptype!r} (an exposure copy) needs an ipppssoo")
        object.__setattr__(self, "product_type", ptype)

    @classmethod
    def for_skycell(cls, skycell: str, instrument: str, detector: str, filter: str,
                    **kwargs) -> LayerName:
        """Build the name of a sky-cell product (prefix ``hst_<skycell>``)."""
        parse_skycell(skycell)
        return cls("hst_" + skycell, instrument, detector, filter, **kwargs)

    @property
    def skycell(self) -> str | None:
        """The sky-cell name for ``hst_<skycell>`` prefixes, None for custom prefixes."""
        if re.fullmatch(r"hst_skycell-p\d{4}x\d{2}y\d{2}", self.prefix):
            return self.prefix[4:]
        return None

    @property
    def label(self) -> str:
        """``(coarse-)?<class>(-YYYY)?(-<ipppssoo>)?``, e.g. ``'coarse-all-ib2v01ab'``."""
        parts = (["coarse"] if self.scale == "coarse" else []) + [self.exptime_class]
        if self.year is not None:
            parts.append(f"{self.year:04d}")
        if self.ipppssoo is not None:
            parts.append(self.ipppssoo)
        return "-".join(parts)

    @property
    def rootname(self) -> str:
        """The ``ROOTNAME`` header value: the file name without its last ``_`` token."""
        return f"{self.prefix}_{self.instrument}_{self.detector}_{self.filter}_{self.label}"

    @property
    def basename(self) -> str:
        """The file name without its ``.fits`` extension."""
        return f"{self.rootname}_{self.product_type}"

    @property
    def filename(self) -> str:
        return self.basename + ".fits"

    @property
    def trailer(self) -> str:
        """``<rootname>_trl.txt``."""
        return self.rootname + "_trl.txt"

    @property
    def trailer_log(self) -> str:
        """``<rootname>_trl.log``, the AstroDrizzle runfile renamed to :attr:`trailer`."""
        return self.rootname + "_trl.log"

    @property
    def headerlet(self) -> str:
        """``<rootname>_hlet.fits``."""
        return self.rootname + "_hlet.fits"

    @property
    def ref_catalog(self) -> str:
        """``<rootname>_ref_cat.ecsv``, the alignment reference catalogue."""
        return self.rootname + "_ref_cat.ecsv"

    @property
    def point_catalog(self) -> str:
        """``<rootname>_point-cat.ecsv``, the layer's point sources (mvmflow.layercat)."""
        return self.rootname + "_point-cat.ecsv"

    @property
    def qa_wcsname(self) -> str:
        """``<rootname>_mvm_wcsname.json``, the WCS-name quality file (mvmflow.quality)."""
        return self.rootname + "_mvm_wcsname.json"

    @property
    def qa_crossmatch(self) -> str:
        """``<rootname>_mvm_overlap_crossmatch.json``, the overlap cross-match quality file."""
        return self.rootname + "_mvm_overlap_crossmatch.json"

    @property
    def rules_file(self) -> str:
        """``<rootname>_header_hap.rules``, the temporary header-merging rules file."""
        return self.rootname + "_header_hap.rules"

    @property
    def is_exposure(self) -> bool:
        """True for exposure-level products and exposure copies."""
        return self.ipppssoo is not None

    @property
    def layer(self) -> LayerName:
        """The layer-level name (no ipppssoo; an ``flt``/``flc`` type becomes ``drz``/``drc``)."""
        ptype = {"flt": "drz", "flc": "drc"}.get(self.product_type, self.product_type)
        return replace(self, ipppssoo=None, product_type=ptype)

    def exposure(self, ipppssoo: str, product_type: str) -> LayerName:
        """The exposure-level name of ``ipppssoo`` in this layer (copy: ``flt``/``flc``)."""
        return replace(self, ipppssoo=ipppssoo, product_type=product_type)

    def with_prefix(self, prefix: str) -> LayerName:
        """The same name with ``hst_<skycell>`` replaced by a custom prefix."""
        return replace(self, prefix=prefix)

    @classmethod
    def parse(cls, filename: str | os.PathLike) -> LayerName:
        """Parse a layer, exposure-level or exposure-copy name (directories are ignored).

        The fields are read from the right, so a custom prefix may contain ``_``.

        Raises
        ------
        ValueError
            If the name does not follow the grammar exactly.
        """
        name = _basename(filename)
        fields = name[:-5].rsplit("_", 5) if name.endswith(".fits") else []
        if len(fields) != 6:
            raise ValueError(
                f"{name!r} is not a layer name '<prefix>_<instr>_<det>_<filter>_<label>_<type>.fits'"
            )
        prefix, instrument, detector, filt, label, ptype = fields
        m = _LABEL_RE.fullmatch(label)
        if not m:
            raise ValueError(
                f"invalid label {label!r} in {name!r}: expected "
                "'(coarse-)?(all|short|med|long)(-YYYY)?(-<ipppssoo>)?'"
            )
        try:
            obj = cls(
                prefix, instrument, detector, filt,
                scale="coarse" if m["coarse"] else "fine",
                exptime_class=m["cls"],
                year=int(m["year"]) if m["year"] else None,
                ipppssoo=m["ipppssoo"],
                product_type=ptype,
            )
        except ValueError as err:
            raise ValueError(f"{name!r} is not a layer name: {err}") from None
        return _canonical(obj, name, "layer")

    @classmethod
    def from_rootname(cls, rootname: str, product_type: str = "drz") -> LayerName:
        """Parse a ``ROOTNAME`` header value (:attr:`rootname`, the name less ``_<type>.fits``).

        The rootname does not say the product type; ``product_type`` supplies it.

        Raises
        ------
        ValueError
            If ``rootname`` is not the rootname of a layer, exposure-level product or copy.
        """
        if not isinstance(rootname, str) or not rootname or "/" in rootname:
            raise ValueError(f"{rootname!r} is not a layer rootname")
        try:
            return cls.parse(f"{rootname}_{product_type}.fits")
        except ValueError as err:
            raise ValueError(f"{rootname!r} is not a layer rootname: {err}") from None


# ------------------------------------------------------------------------------------------
# hapcut: coordinates, query tables, cutouts, combined cutouts


def frac4(value: float) -> str:
    """Return the hapcut fraction text: up to 4 characters after ``.`` of ``str(value)``.

    Truncated, not rounded and not padded: ``84.92`` -> ``'92'``, ``200.123456789`` ->
    ``'1234'``. A value whose ``str()`` uses an exponent (``1e-05``) is written in positional
    notation first (``'0000'``) instead of failing as the reference does.
    """
    text = _float_text(_degrees(value, "coordinate"))
    frac = text.split(".", 1)[1][:4] if "." in text else ""
    return frac or "0"


def ra_token(ra) -> str:
    """Return ``ra<int(RA)>d<frac4>``, e.g. ``84.9207`` -> ``'ra84d9207'`` (RA wrapped to [0, 360))."""
    ra = _ra(ra)
    return f"ra{int(ra)}d{frac4(ra)}"


def dec_token(dec) -> str:
    """Return ``dec<n|s><abs(int(Dec))>d<frac4>``, e.g. ``-69.8516`` -> ``'decs69d8516'``.

    The sign letter is ``s`` if Dec < 0, else ``n``; int() truncates toward zero, so
    ``-0.5`` gives ``'decs0d5'``.
    """
    dec = _dec(dec)
    return f"dec{'s' if dec < 0.0 else 'n'}{abs(int(dec))}d{frac4(dec)}"


def coord_token(ra, dec) -> str:
    """Return ``<ra_token>-<dec_token>``, e.g. ``'ra84d9207-decs69d8516'``."""
    return f"{ra_token(ra)}-{dec_token(dec)}"


def cutout_size_arcsec(size) -> tuple[float, float]:
    """Return a cutout size as ``(w, h)`` in arcsec.

    Parameters
    ----------
    size : number, sequence of 1 or 2 numbers, or astropy Quantity (scalar or 2 elements)
        Plain numbers are arcsec; a scalar means a square.

    Raises
    ------
    ValueError
        For non-angles, more than 2 elements, or non-positive or non-finite sizes.
    """
    u = _quantity_units()
    if u is not None and isinstance(size, u.Quantity):
        try:
            values = np.atleast_1d(size.to_value(u.arcsec))
        except u.UnitsError:
            raise ValueError(f"cutout size {size!r} is not an angle") from None
    else:
        if isinstance(size, str | bool):
            raise ValueError(f"cutout size must be a number or a pair, not {size!r}")
        try:
            values = np.atleast_1d(np.asarray(size, dtype=float))
        except (TypeError, ValueError):
            raise ValueError(f"cutout size must be a number or a pair, not {size!r}") from None
    if values.ndim != 1 or values.size not in (1, 2):
        raise ValueError(f"cutout size must have 1 or 2 elements, not {size!r}")
    if values.size == 1:
        values = np.repeat(values, 2)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"cutout size must be positive and finite, not {size!r}")
    return float(values[0]), float(values[1])


def query_radius(size) -> int:
    """Return the archive search radius ``ceil(sqrt(w**2 + h**2) / 2)`` in arcsec.

    ``500`` -> 354, ``[30, 40]`` -> 25.
    """
    w, h = cutout_size_arcsec(size)
    return math.ceil(math.sqrt(math.pow(w, 2) + math.pow(h, 2)) / 2.0)


def query_filename(ra, dec, size) -> str:
    """Return ``mvm_query-<coords>_<radius>_cutout.ecsv``.

    ``query_filename(84.9207, -69.8516, 500)`` ->
    ``'mvm_query-ra84d9207-decs69d8516_354_cutout.ecsv'``.
    """
    return f"mvm_query-{coord_token(ra, dec)}_{query_radius(size)}_cutout.ecsv"


def parse_query_filename(filename: str | os.PathLike) -> tuple[str, int]:
    """Parse a query-table name into ``(coords, radius)``, e.g. ``('ra84d9207-decs69d8516', 354)``."""
    name = _basename(filename)
    m = _QUERY_RE.fullmatch(name)
    if not m or str(int(m["radius"])) != m["radius"]:
        raise ValueError(f"{name!r} is not a query-table name 'mvm_query-<coords>_<radius>_cutout.ecsv'")
    return m["coords"], int(m["radius"])


def _check_coords(value) -> str:
    if not isinstance(value, str) or not _COORDS_RE.fullmatch(value):
        raise ValueError(f"invalid coordinate token {value!r}: expected 'ra<int>d<frac>-dec<n|s><int>d<frac>'")
    return value


def _scale_tag(obj) -> str | None:
    """``[coarse][-<class>][-<year>]`` (class omitted when ``all``); None for fine/all."""
    parts = ["coarse"] if obj.scale == "coarse" else []
    if obj.exptime_class != "all":
        parts.append(obj.exptime_class)
    if obj.year is not None:
        parts.append(f"{obj.year:04d}")
    return "-".join(parts) or None


def _parse_scale_tag(tag: str, name: str) -> dict:
    """Inverse of :func:`_scale_tag`."""
    pieces = tag.split("-")
    out = {"scale": "fine", "exptime_class": "all", "year": None}
    if pieces and pieces[0] == "coarse":
        out["scale"] = "coarse"
        pieces.pop(0)
    if pieces and pieces[0] in EXPTIME_CLASSES[1:]:
        out["exptime_class"] = pieces.pop(0)
    if pieces and re.fullmatch(r"\d{4}", pieces[0]):
        out["year"] = int(pieces.pop(0))
    if pieces or not tag:
        raise ValueError(
            f"invalid scale tag {tag!r} in {name!r}: expected '[coarse][-short|-med|-long][-YYYY]'"
        )
    return out


def _split_ipppssoo(token: str, sep: str) -> tuple[str, str | None]:
    """Split a trailing ``<sep><ipppssoo>`` off ``token``."""
    head, found, tail = token.rpartition(sep)
    if found and head and _IPPPSSOO_RE.fullmatch(tail):
        return head, tail
    return token, None


@dataclass(frozen=True)
class CutoutName:
    """A hapcut cutout name.

    ``hst_cutout_skycell-<pPPPPxXXyYY>-<coords>_<instr>_<det>_<filter>[_<tag>][-<ipppssoo>].fits``

    Parameters
    ----------
    skycell : str
        The source product's sky cell, ``'skycell-p0081x14y14'``.
    coords : str
        The coordinate token (:func:`coord_token`), ``'ra85d2566-decs69d1498'``.
    instrument, detector, filter, scale, exptime_class, year, ipppssoo
        As in :class:`LayerName`.

    Examples
    --------
    >>> CutoutName.parse("hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_acs_wfc_f606w-pol60v.fits").ipppssoo is None
    True
    """

    skycell: str
    coords: str
    instrument: str
    detector: str
    filter: str
    scale: str = "fine"
    exptime_class: str = "all"
    year: int | None = None
    ipppssoo: str | None = None

    def __post_init__(self):
        parse_skycell(self.skycell)
        _check_coords(self.coords)
        _check_layer_fields(self)

    @classmethod
    def from_layer(cls, layer: LayerName, ra, dec) -> CutoutName:
        """The cutout of a sky-cell product ``layer`` centred at (``ra``, ``dec``) degrees."""
        if layer.skycell is None:
            raise ValueError(f"cannot name a cutout of {layer.filename!r}: it has no sky-cell prefix")
        return cls(
            layer.skycell, coord_token(ra, dec), layer.instrument, layer.detector, layer.filter,
            layer.scale, layer.exptime_class, layer.year, layer.ipppssoo,
        )

    @property
    def filename(self) -> str:
        tag = _scale_tag(self)
        name = (
            f"hst_cutout_{self.skycell}-{self.coords}_{self.instrument}_{self.detector}_"
            f"{self.filter}" + (f"_{tag}" if tag else "")
        )
        if self.ipppssoo is not None:
            name += f"-{self.ipppssoo}"
        return name + ".fits"

    @property
    def group_key(self) -> tuple:
        """Cutouts with the same key are combined: (instr, det, filter, scale, class, year, ipppssoo)."""
        return (self.instrument, self.detector, self.filter, self.scale, self.exptime_class,
                self.year, self.ipppssoo)

    def combined(self) -> CombinedName:
        """The combined-cutout name of this cutout's group (coordinates from this cutout)."""
        return CombinedName(self.coords, *self.group_key)

    @classmethod
    def parse(cls, filename: str | os.PathLike) -> CutoutName:
        """Parse a cutout name (directories are ignored)."""
        name = _basename(filename)
        m = re.fullmatch(
            r"hst_cutout_(?P<skycell>skycell-p\d{4}x\d{2}y\d{2})-(?P<coords>[^_]+)_(?P<rest>.+)\.fits",
            name,
        )
        fields = m["rest"].split("_") if m else []
        if len(fields) not in (3, 4):
            raise ValueError(
                f"{name!r} is not a cutout name 'hst_cutout_skycell-<pPPPPxXXyYY>-<coords>_"
                "<instr>_<det>_<filter>[_<tag>][-<ipppssoo>].fits'"
            )
        fields[-1], ipppssoo = _split_ipppssoo(fields[-1], "-")
        try:
            tag = _parse_scale_tag(fields[3], name) if len(fields) == 4 else {}
            obj = cls(m["skycell"], m["coords"], *fields[:3], ipppssoo=ipppssoo, **tag)
        except ValueError as err:
            raise ValueError(f"{name!r} is not a cutout name: {err}") from None
        return _canonical(obj, name, "cutout")


def cutout_filename(layer: LayerName | str, ra, dec) -> str:
    """Return the cutout name of a sky-cell product at (``ra``, ``dec``) degrees.

    ``cutout_filename('hst_skycell-p0081x14y14_wfc3_ir_f160w_coarse-all-ib2v01ab_drz.fits',
    85.25665514291263, -69.14985113186759)`` ->
    ``'hst_cutout_skycell-p0081x14y14-ra85d2566-decs69d1498_wfc3_ir_f160w_coarse-ib2v01ab.fits'``.
    """
    if not isinstance(layer, LayerName):
        layer = LayerName.parse(layer)
    return CutoutName.from_layer(layer, ra, dec).filename


@dataclass(frozen=True)
class CombinedName:
    """A combined-cutout name.

    ``hst_combined_skycells-<coords>_<instr>_<det>_<filter>[_<tag>][_<ipppssoo>].fits``; unlike
    the reference, coarse groups carry ``_coarse`` (see the module docstring).

    Parameters
    ----------
    coords : str
        Coordinate token of the first cutout, ``'ra85d2566-decs69d1498'``.
    instrument, detector, filter, scale, exptime_class, year, ipppssoo
        As in :class:`LayerName`.
    """

    coords: str
    instrument: str
    detector: str
    filter: str
    scale: str = "fine"
    exptime_class: str = "all"
    year: int | None = None
    ipppssoo: str | None = None

    def __post_init__(self):
        _check_coords(self.coords)
        _check_layer_fields(self)

    @property
    def filename(self) -> str:
        parts = [f"hst_combined_skycells-{self.coords}", self.instrument, self.detector, self.filter]
        tag = _scale_tag(self)
        if tag:
            parts.append(tag)
        if self.ipppssoo is not None:
            parts.append(self.ipppssoo)
        return "_".join(parts) + ".fits"

    @classmethod
    def parse(cls, filename: str | os.PathLike) -> CombinedName:
        """Parse a combined-cutout name (directories are ignored)."""
        name = _basename(filename)
        m = re.fullmatch(r"hst_combined_skycells-(?P<coords>[^_]+)_(?P<rest>.+)\.fits", name)
        fields = m["rest"].split("_") if m else []
        if not 3 <= len(fields) <= 5:
            raise ValueError(
                f"{name!r} is not a combined-cutout name 'hst_combined_skycells-<coords>_"
                "<instr>_<det>_<filter>[_<tag>][_<ipppssoo>].fits'"
            )
        ipppssoo = None
        if len(fields) > 3 and _IPPPSSOO_RE.fullmatch(fields[-1]):
            ipppssoo = fields.pop()
        try:
            if len(fields) > 4:
                raise ValueError(f"unexpected token {fields[4]!r}")
            tag = _parse_scale_tag(fields[3], name) if len(fields) == 4 else {}
            obj = cls(m["coords"], *fields[:3], ipppssoo=ipppssoo, **tag)
        except ValueError as err:
            raise ValueError(f"{name!r} is not a combined-cutout name: {err}") from None
        return _canonical(obj, name, "combined-cutout")


def combined_filename(cutout: CutoutName | str) -> str:
    """Return the combined name for the group of ``cutout`` (a name or :class:`CutoutName`)."""
    if not isinstance(cutout, CutoutName):
        cutout = CutoutName.parse(cutout)
    return cutout.combined().filename


# ------------------------------------------------------------------------------------------
# filters


def normalize_filter(value: str) -> str:
    """Return the normalised (lower-case) filter name, ``determine_filter_name`` of the reference.

    1. lower-case; 2. split on ``;`` and keep the first two fields; 3. drop fields containing
    ``clear`` or ``n/a`` (and, unlike the reference, empty fields); 4. if none is left, the
    name is ``clear``; 5. a polarizer (``pol*``) goes second; 6. join with ``-``.

    Parameters
    ----------
    value : str
        e.g. ``'F606W;POL60V'``, ``'CLEAR1L;F814W'``, ``'F122M;N/A;F122M'``.

    Returns
    -------
    str
        e.g. ``'f606w-pol60v'``, ``'f814w'``, ``'f122m'``.

    Raises
    ------
    ValueError
        If ``value`` is empty, its first two fields are empty, or the result has characters
        outside ``[a-z0-9-]``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"invalid filter value {value!r}: expected a non-empty string")
    fields = [f.strip() for f in value.lower().split(";")[:2]]
    if not any(fields):
        raise ValueError(f"invalid filter value {value!r}: no filter name in the first two fields")
    kept = [f for f in fields if f and "clear" not in f and "n/a" not in f]
    if not kept:
        kept = ["clear"]
    elif kept[0].startswith("pol"):
        kept.reverse()
    name = "-".join(kept)
    try:
        return _check_filter(name)
    except ValueError as err:
        raise ValueError(f"cannot normalise filter value {value!r}: {err}") from None


def poller_filter(value: str) -> str:
    """Return the filter as written in poller column 6: normalised and upper-cased."""
    return normalize_filter(value).upper()


def _card(header: Mapping, key: str):
    for k in (key, key.lower()):
        try:
            return header[k]
        except KeyError:
            continue
    raise ValueError(f"primary header has no {key} keyword")


def filter_from_header(primary_header: Mapping) -> str:
    """Return the normalised lower-case filter name of an exposure's primary header.

    WFC3 uses ``FILTER``; ACS ``FILTER1;FILTER2``; WFPC2 ``FILTNAM1;FILTNAM2``.

    Parameters
    ----------
    primary_header : Mapping
        ``astropy.io.fits.Header`` or a dict with upper-case (or lower-case) keys.

    Raises
    ------
    ValueError
        For a missing keyword or an instrument other than WFC3, ACS and WFPC2.
    """
    instrument = str(_card(primary_header, "INSTRUME")).strip().lower()
    if instrument == "wfc3":
        raw = str(_card(primary_header, "FILTER"))
    elif instrument == "acs":
        raw = f"{_card(primary_header, 'FILTER1')};{_card(primary_header, 'FILTER2')}"
    elif instrument == "wfpc2":
        raw = f"{_card(primary_header, 'FILTNAM1')};{_card(primary_header, 'FILTNAM2')}"
    else:
        raise ValueError(f"no filter rule for instrument {instrument!r} (WFC3, ACS, WFPC2 only)")
    return normalize_filter(raw)
