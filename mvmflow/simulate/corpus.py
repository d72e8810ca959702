"""A corpus of bad and unusual input files, each with the outcome the workflow must give.

:func:`write_corpus` simulates three small good exposures (two WFC3/UVIS ``UVIS2-C512C-SUB``
subarray FLCs in the middle of sky cell ``skycell-p0081x14y14`` and one WFC3/IR ``IRSUB256``
FLT in the next sky cell west, no pointing errors) and writes beside them one file (or directory,
symbolic link, file pair) per *kind* of bad or unusual input (issue 17, "Bad and unusual
inputs"). Each kind is a :class:`Kind`: what was done, and what must happen:

- ``rejected: <fragment>``: the file is in the run's ``screen/rejected.ecsv`` with a reason
  containing the fragment (and the screening report's log names the file with the reason);
- ``accepted: ...``: the file is screened in and its exposure-level product exists; when the
  kind has a clean ``twin`` (the exposure it was copied from), the product's ``SCI`` equals
  the twin's product within ``atol`` (e-/s) wherever both have weight (the same weight, for
  a kind that drops or adds input pixels);
- ``reported: ...``: the file is left out with the reason recorded (``plan/dropped.ecsv`` for
  an FLT beside its FLC, ``screen/rejected.ecsv`` for a second file of the same name).

All files match one glob, :attr:`Corpus.pattern` (``<dir>/**/*_fl?.fits*``), so the directory,
the dangling symbolic link and the file in a second directory are matched as a user's pattern
would match them. The unreadable file (mode 000) is unreadable only to a process without
``CAP_DAC_OVERRIDE``: a run as root must drop it (``setpriv --bounding-set=-dac_override,...``,
:data:`DROP_READ_CAPS`) for that kind to mean anything; :func:`evaluate` is told whether it did.

:func:`evaluate` reads a finished run's outputs and returns the observed outcome of every kind
(``tests/test_corpus.py`` asserts them; ``benchmarks/reliability.py`` prints them as a table).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = ["DROP_READ_CAPS", "Corpus", "Kind", "Observed", "corpus_kinds", "corpus_preset",
           "evaluate", "expected_products", "present_products", "run_config", "summary_rows",
           "write_corpus"]

DROP_READ_CAPS = ("setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search")
"""Command prefix that runs a program as root without the capabilities that bypass file
permissions, so a mode-000 file is unreadable to it."""

SKYCELL = "skycell-p0081x14y14"
UVIS_BASE = "ik7q01abq_flc.fits"
UVIS_OTHER = "ik7q01acq_flc.fits"
IR_BASE = "ik7q02abq_flt.fits"
UVIS_EXPTIME = 400.0


@dataclass(frozen=True)
class Kind:
    """One kind of bad or unusual input.

    Attributes
    ----------
    name : str
        Short identifier (``empty_file``).
    did : str
        What was done to make it.
    expected : str
        ``"rejected: <reason fragment>"``, ``"accepted: <what must hold>"`` or
        ``"reported: <where>"``.
    files : tuple of str
        Its paths, relative to the corpus directory (the first is the one judged).
    twin : str
        The clean exposure it was copied from (relative path), for the flux comparison of an
        accepted kind; ``""`` for none.
    atol : float
        Largest allowed ``|SCI - SCI_twin| - 1e-5 |SCI_twin|`` (e-/s) of the exposure-level
        products where both have weight.
    same_weight : bool
        Compare only where both products have the same weight (the same input pixels were
        used: the kind drops or adds some pixels).
    needs_unprivileged : bool
        Meaningful only in a run that cannot bypass file permissions.
    """

    name: str
    did: str
    expected: str
    files: tuple[str, ...]
    twin: str = ""
    atol: float = 1e-5
    same_weight: bool = False
    needs_unprivileged: bool = False

    @property
    def outcome(self) -> str:
        """``rejected``, ``accepted`` or ``reported``."""
        return self.expected.split(":", 1)[0]

    @property
    def fragment(self) -> str:
        """The text after ``<outcome>:``."""
        return self.expected.split(":", 1)[1].strip()


@dataclass
class Corpus:
    """What :func:`write_corpus` wrote."""

    directory: Path
    good: list[Path]
    kinds: list[Kind]
    truth: Path

    @property
    def pattern(self) -> str:
        """The glob that matches every input of the corpus (good files and kinds)."""
        return f"{self.directory}/**/*_fl?.fits*"

    def path(self, relative: str) -> Path:
        return self.directory / relative


def run_config(pattern: str, outdir: str = "results") -> dict:
    """The workflow configuration of a corpus run: fast (no alignment, as the corpus has no
    pointing errors; no previews) with exposure-level products (each accepted kind's own
    product, to compare with its twin's)."""
    return {"inputs": pattern, "outdir": outdir, "align": {"enabled": False},
            "products": {"exposure_level": True, "previews": False}}


@dataclass
class Observed:
    """A kind's observed outcome in a run: ``ok`` when it is the expected one."""

    kind: Kind
    outcome: str
    detail: str
    ok: bool
    problems: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------
# the good exposures


def corpus_preset():
    """Two WFC3/UVIS subarray FLCs in the middle of one sky cell, north up (a small layer
    frame: the corpus's exposure-level products are 3 MB each), and one WFC3/IR subarray
    FLT 10' west, in the next sky cell (so it does not widen the UVIS frame)."""
    from mvmflow.simulate.presets import (
        FULLCELL_CENTER,
        ExposureSpec,
        Preset,
        VisitSpec,
    )
    from mvmflow.simulate.scene import SceneSpec

    return Preset(
        name="corpus",
        description="Reliability corpus: two UVIS subarray FLCs and one IR subarray FLT.",
        ra=FULLCELL_CENTER[0], dec=FULLCELL_CENTER[1], seed=5,
        visits=(
            VisitSpec(instrument="WFC3", proposid=16543, program="k7q", visit="01",
                      start="2021-04-14T09:12:37", pa=0.0,
                      exposures=tuple(ExposureSpec("UVIS", "F555W", UVIS_EXPTIME,
                                                   "UVIS2-C512C-SUB", d)
                                      for d in ((0.0, 0.0), (0.52, 0.35)))),
            VisitSpec(instrument="WFC3", proposid=16543, program="k7q", visit="02",
                      start="2021-04-14T11:12:37", pa=0.0, offset=(-600.0, 0.0),
                      exposures=(ExposureSpec("IR", "F110W", 249.23, "IRSUB256"),)),
        ),
        scene=SceneSpec(star_density=300.0, mag_range=(17.5, 22.0), bright_stars=0,
                        galaxy_density=0.0),
        max_shift_arcsec=0.0, max_rotation_deg=0.0, render="sparse",
    )


# ------------------------------------------------------------------------------------------
# edits of a copy


def _copy(src: Path, dst: Path, edit: Callable[[fits.HDUList], None] | None = None) -> None:
    """Write ``dst``: ``src`` with ROOTNAME/FILENAME of ``dst``'s name, then ``edit`` applied."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with fits.open(src, lazy_load_hdus=False) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    name = dst.name.removesuffix(".gz")
    hdul[0].header["ROOTNAME"] = name.split("_")[0]
    hdul[0].header["FILENAME"] = name
    if edit is not None:
        edit(hdul)
    hdul.writeto(dst, overwrite=True)


def _primary(**cards):
    def edit(hdul):
        for key, value in cards.items():
            hdul[0].header[key] = value
    return edit


def _sci(**cards):
    def edit(hdul):
        for key, value in cards.items():
            if value is None:
                hdul["SCI", 1].header.remove(key, ignore_missing=True)
            else:
                hdul["SCI", 1].header[key] = value
    return edit


def _drop(*extnames):
    def edit(hdul):
        for hdu in [h for h in hdul[1:] if h.name in extnames]:
            hdul.remove(hdu)
    return edit


def _nan_inf(hdul):
    data = hdul["SCI", 1].data
    data[200:240, 200:240] = np.nan
    data[::37, ::41] = np.inf
    data[5::53, 7::29] = -np.inf


def _all_dq(hdul):
    hdul["DQ", 1].data[:] = 4  # bad detector pixel, never a good bit


def _duplicate_sci(hdul):
    extra = hdul["SCI", 1].copy()
    hdul.insert(4, extra)


def _naxis0(hdul):
    hdul["SCI", 1].data = None  # NAXIS = 0, and no PIXVALUE


def _integer(hdul):
    sci = hdul["SCI", 1]
    sci.data = np.round(sci.data).astype(np.int32)


def _counts_per_s(hdul):
    exptime = float(hdul[0].header["EXPTIME"])
    for name in ("SCI", "ERR"):
        hdu = hdul[name, 1]
        hdu.data = (hdu.data / exptime).astype(np.float32)
    hdul["SCI", 1].header["BUNIT"] = "COUNTS/S"
    hdul["ERR", 1].header["BUNIT"] = "COUNTS/S"


def _singular_cd(hdul):
    h = hdul["SCI", 1].header
    h["CD2_1"], h["CD2_2"] = h["CD1_1"] * 2, h["CD1_2"] * 2


def _sip_missing(hdul):
    for key in ("A_2_0", "A_1_1", "B_0_2", "B_1_1"):
        hdul["SCI", 1].header.remove(key, remove_all=True)


def _no_lookup_tables(hdul):
    for hdu in [h for h in hdul[1:] if h.name in ("WCSDVARR", "D2IMARR")]:
        hdul.remove(hdu)


# ------------------------------------------------------------------------------------------
# the corpus


METACHAR_DIR = "odd dir $HOME; it's \"quoted\" (1) & `x`"
"""A directory name with spaces and shell metacharacters; a good exposure lives in it."""


def _kinds() -> list[tuple[Kind, Callable[[Path, Path], None]]]:
    """Every kind with the function that writes it (``(corpus dir, good dir)``)."""
    base, ir = UVIS_BASE, IR_BASE

    def copy(name, edit=None, src=base):
        return lambda d, g: _copy(g / src, d / name, edit)

    def raw(name, make):
        return lambda d, g: (d / name).write_bytes(make((g / base).read_bytes()))

    def gz(d, g):
        _copy(g / base, d / "ik7q01aeq_flc.fits")
        with open(d / "ik7q01aeq_flc.fits", "rb") as f, \
                gzip.GzipFile(d / "ik7q01aeq_flc.fits.gz", "wb", mtime=0) as z:
            shutil.copyfileobj(f, z)
        (d / "ik7q01aeq_flc.fits").unlink()

    def directory(d, g):
        (d / "ik7q01b1q_flc.fits").mkdir()
        (d / "ik7q01b1q_flc.fits" / "readme.txt").write_text("a directory, not an exposure\n")

    def dangling(d, g):
        os.symlink(d / "gone" / "ik7q01b2q_flc.fits", d / "ik7q01b2q_flc.fits")

    def unreadable(d, g):
        _copy(g / base, d / "ik7q01b3q_flc.fits")
        os.chmod(d / "ik7q01b3q_flc.fits", 0)

    def empty(d, g):
        (d / "ik7q01b0q_flc.fits").write_bytes(b"")

    def flt_twin(d, g):
        shutil.copy(g / base, g / "ik7q01abq_flt.fits")

    def two_dirs(d, g):
        (d / "second").mkdir(exist_ok=True)
        shutil.copy(g / UVIS_OTHER, d / "second" / UVIS_OTHER)

    def rng_bytes(_):
        return np.random.default_rng(3).bytes(40000)

    metachar = f"{METACHAR_DIR}/ik7q01adq_flc.fits"
    g = "good/"
    scale = f"|diff| <= {{}} e-/s of {base}'s product"
    k = Kind
    return [
        # accepted
        (k("subarray", "a WFC3/UVIS UVIS2-C512C-SUB subarray exposure (one chip)",
           "accepted: screened in, its product made", (g + base,)), lambda d, g: None),
        (k("single_chip", "a WFC3/IR exposure: one SCI extension", "accepted: screened in, its "
           "products made", (g + ir,)), lambda d, g: None),
        (k("metachar_path", "a good exposure in a directory named " + repr(METACHAR_DIR),
           "accepted: processed, flux " + scale.format(1e-5), (metachar,), g + base),
         copy(metachar)),
        (k("gzip", "the good exposure gzip-compressed, _flc.fits.gz",
           "accepted: flux " + scale.format(1e-5), ("ik7q01aeq_flc.fits.gz",), g + base), gz),
        (k("nan_inf_pixels", "SCI with a 40x40 block of NaN and scattered +Inf/-Inf pixels",
           "accepted: non-finite pixels get no weight, flux elsewhere " + scale.format(1e-5),
           ("ik7q01afq_flc.fits",), g + base, same_weight=True),
         copy("ik7q01afq_flc.fits", _nan_inf)),
        (k("missing_err", "the ERR extension removed",
           "accepted: flux " + scale.format(1e-5), ("ik7q01agq_flc.fits",), g + base),
         copy("ik7q01agq_flc.fits", _drop("ERR"))),
        (k("missing_dq", "the DQ extension removed (every pixel taken as good, a warning)",
           "accepted: a warning 'no DQ', flux " + scale.format(1e-4) + " where the twin's "
           "DQ is clean (its sky differs slightly)", ("ik7q01ahq_flc.fits",), g + base,
           atol=1e-4, same_weight=True),
         copy("ik7q01ahq_flc.fits", _drop("DQ"))),
        (k("integer_sci", "SCI rounded and written as int32",
           "accepted: flux " + scale.format(round(1.0 / UVIS_EXPTIME, 4)) + " (the rounding) "
           "where the same pixels are used (rounding moves the static mask's threshold)",
           ("ik7q01aiq_flc.fits",), g + base, atol=1.0 / UVIS_EXPTIME, same_weight=True),
         copy("ik7q01aiq_flc.fits", _integer)),
        (k("bunit_counts_s", "SCI and ERR divided by EXPTIME, BUNIT = COUNTS/S",
           "accepted: taken as a rate, flux " + scale.format(1e-5), ("ik7q01ajq_flc.fits",),
           g + base), copy("ik7q01ajq_flc.fits", _counts_per_s)),
        (k("garbage_date_obs", "DATE-OBS = 'yesterday-ish'",
           "accepted: a DATE-OBS warning, flux " + scale.format(1e-5), ("ik7q01akq_flc.fits",),
           g + base), copy("ik7q01akq_flc.fits", _primary(**{"DATE-OBS": "yesterday-ish"}))),
        (k("flt_and_flc", "an _flt.fits of the same rootname beside the _flc.fits",
           "reported: FLC used, FLT in plan/dropped.ecsv", (g + "ik7q01abq_flt.fits",)),
         flt_twin),
        (k("same_name_two_dirs", f"a copy of {UVIS_OTHER} in a second directory",
           "reported: one used, the other in rejected.ecsv naming the one used",
           ("second/" + UVIS_OTHER, g + UVIS_OTHER)), two_dirs),
        # rejected: the file itself
        (k("empty_file", "a 0-byte file", "rejected: empty file", ("ik7q01b0q_flc.fits",)),
         empty),
        (k("directory", "a directory matching the pattern", "rejected: not a regular file",
           ("ik7q01b1q_flc.fits",)), directory),
        (k("dangling_symlink", "a symbolic link to a file that does not exist",
           "rejected: dangling symbolic link", ("ik7q01b2q_flc.fits",)), dangling),
        (k("unreadable", "a good exposure with mode 000", "rejected: Permission denied",
           ("ik7q01b3q_flc.fits",), needs_unprivileged=True), unreadable),
        (k("random_bytes", "40000 random bytes", "rejected: not a FITS file",
           ("ik7q01b4q_flc.fits",)), raw("ik7q01b4q_flc.fits", lambda b: rng_bytes(b))),
        (k("truncated", "the first half of a good exposure", "rejected: truncated",
           ("ik7q01b5q_flc.fits",)), raw("ik7q01b5q_flc.fits", lambda b: b[: len(b) // 2])),
        (k("wrong_instrument", "INSTRUME = WFPC2", "rejected: unsupported instrument WFPC2",
           ("ik7q01b6q_flc.fits",)), copy("ik7q01b6q_flc.fits", _primary(INSTRUME="WFPC2"))),
        # rejected: the extensions
        (k("dq_all_flagged", "every DQ pixel 4 (bad detector pixel): nothing to drizzle",
           "rejected: every pixel is flagged in DQ", ("ik7q01b7q_flc.fits",)),
         copy("ik7q01b7q_flc.fits", _all_dq)),
        (k("missing_sci", "the SCI extension removed", "rejected: no SCI extension",
           ("ik7q01b8q_flc.fits",)), copy("ik7q01b8q_flc.fits", _drop("SCI"))),
        (k("duplicate_extver", "a second SCI extension with EXTVER 1",
           "rejected: duplicate SCI extensions", ("ik7q01b9q_flc.fits",)),
         copy("ik7q01b9q_flc.fits", _duplicate_sci)),
        (k("naxis0_sci", "SCI without data (NAXIS = 0, no PIXVALUE)", "rejected: SCI,1 is not a 2-D image",
           ("ik7q01c0q_flc.fits",)), copy("ik7q01c0q_flc.fits", _naxis0)),
        # rejected: the WCS
        (k("singular_cd", "CD2_* = 2 x CD1_*", "rejected: CD matrix is singular",
           ("ik7q01c1q_flc.fits",)), copy("ik7q01c1q_flc.fits", _singular_cd)),
        (k("non_celestial_ctype", "CTYPE1/2 = LINEAR", "rejected: no celestial WCS",
           ("ik7q01c2q_flc.fits",)),
         copy("ik7q01c2q_flc.fits", _sci(CTYPE1="LINEAR", CTYPE2="LINEAR"))),
        (k("misspelled_ctype", "CTYPE1 = RA---TNA (for RA---TAN)", "rejected: Unrecognized projection "
           "code (TNA in CTYPE1)", ("ik7q01c3q_flc.fits",)), copy("ik7q01c3q_flc.fits", _sci(CTYPE1="RA---TNA"))),
        (k("crval_out_of_range", "CRVAL2 = 123 (a declination beyond the pole)",
           "rejected: CRVAL2 is 123, not a declination", ("ik7q01c4q_flc.fits",)),
         copy("ik7q01c4q_flc.fits", _sci(CRVAL2=123.0))),
        (k("sip_missing_coefficients", "A_2_0, A_1_1, B_0_2, B_1_1 removed (A_ORDER 4 kept)",
           "rejected: SIP A_ORDER is 4 but", ("ik7q01c5q_flc.fits",)), copy("ik7q01c5q_flc.fits", _sip_missing)),
        (k("lookup_table_absent", "NPOL/D2IM referenced, WCSDVARR/D2IMARR extensions removed",
           "rejected: not found", ("ik7q01c6q_flc.fits",)),
         copy("ik7q01c6q_flc.fits", _no_lookup_tables)),
        # rejected: keywords
        (k("negative_exptime", "EXPTIME = -400", "rejected: EXPTIME is -400 s, negative",
           ("ik7q01c7q_flc.fits",)), copy("ik7q01c7q_flc.fits", _primary(EXPTIME=-400.0))),
        (k("zero_exptime", "EXPTIME = 0", "rejected: EXPTIME is 0 s", ("ik7q01c8q_flc.fits",)),
         copy("ik7q01c8q_flc.fits", _primary(EXPTIME=0.0))),
    ]


def corpus_kinds() -> list[Kind]:
    """Every kind of the corpus, in its order (without writing anything)."""
    return [kind for kind, _ in _kinds()]


def write_corpus(directory: str | os.PathLike, seed: int | None = None) -> Corpus:
    """Simulate the good exposures into ``directory/good`` and write every kind beside them.

    Parameters
    ----------
    directory : path
        An empty or new directory.
    seed : int, optional
        The simulation's seed (default: the preset's).

    Returns
    -------
    Corpus
    """
    from mvmflow.simulate import simulate

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sim = simulate(corpus_preset(), directory / "good", seed=seed)
    good = [Path(p) for p in sim.exposures]
    kinds = []
    for kind, make in _kinds():
        make(directory, directory / "good")
        kinds.append(kind)
    return Corpus(directory=directory, good=good, kinds=kinds, truth=sim.truth_dir)


# ------------------------------------------------------------------------------------------
# judging a run


def _rows(path: Path) -> list[dict]:
    from astropy.table import Table

    if not path.exists():
        return []
    return [dict(zip(r.colnames, (str(v) for v in r), strict=True)) for r in Table.read(path)]


def _product(out: Path, rootname: str) -> Path | None:
    found = sorted((out / "skycells").glob(f"*/hst_*-{rootname[:8]}_dr?.fits"))
    fine = [p for p in found if "coarse" not in p.name]
    return fine[0] if fine else None


def _compare(product: Path, twin: Path, kind: Kind) -> tuple[str, list]:
    """Compare two exposure-level products where both have weight (the same weight, for a
    ``same_weight`` kind)."""
    with fits.open(product) as a, fits.open(twin) as b:
        sa, wa = a["SCI"].data.astype(float), a["WHT"].data.astype(float)
        sb, wb = b["SCI"].data.astype(float), b["WHT"].data.astype(float)
    problems = []
    both = (wa > 0) & (wb > 0)
    if not both.any():
        return "no common weighted pixel", ["no pixel with weight in both products"]
    if not np.all(np.isfinite(sa[wa > 0])):
        problems.append("non-finite SCI where WHT > 0")
    if kind.same_weight:
        both &= wa == wb
    diff = np.abs(sa[both] - sb[both])
    over = diff - 1e-5 * np.abs(sb[both]) > kind.atol
    worst = float(np.max(diff))
    if over.any():
        problems.append(f"{int(over.sum())} of {diff.size} pixels differ by more than "
                        f"{kind.atol:g} e-/s (up to {worst:.3g})")
    flux = float(np.sum(sa[both] * wa[both]) / np.sum(sb[both] * wa[both]))
    text = f"max |diff| {worst:.2g} e-/s over {diff.size} px, flux ratio {flux:.6f}"
    if kind.name == "nan_inf_pixels":  # the non-finite pixels lost their weight, only they
        lost, gained = int(np.sum(wa < wb)), int(np.sum(wa > wb))
        hole = int(np.sum((wa == 0) & (wb > 0)))
        text += f"; {lost} px with less weight, {hole} with none"
        if gained or not lost or hole < 30 * 30:
            problems.append(f"weights: {lost} px lower, {gained} higher, {hole} lost all "
                            "(expected some lower, none higher, the 40x40 hole empty)")
    return text, problems


def evaluate(corpus: Corpus, out: str | os.PathLike, *, unprivileged: bool = True
             ) -> list[Observed]:
    """The observed outcome of every kind of ``corpus`` in the run whose outputs are ``out``.

    Parameters
    ----------
    corpus : Corpus
    out : path
        The run's ``outdir``.
    unprivileged : bool
        Whether the run could not bypass file permissions (else the ``unreadable`` kind is
        judged ``skipped``).

    Returns
    -------
    list of Observed
        In the corpus's order.
    """
    out = Path(out)
    rejected = {r["file"]: r["reason"] for r in _rows(out / "screen" / "rejected.ecsv")}
    accepted = {r["file"]: r for r in _rows(out / "screen" / "accepted.ecsv")}
    dropped = _rows(out / "plan" / "dropped.ecsv")
    log = out / "logs" / "screen_report.log"
    report_log = log.read_text() if log.exists() else ""
    results = []
    for kind in corpus.kinds:
        if kind.needs_unprivileged and not unprivileged:
            results.append(Observed(kind, "skipped", "the run could bypass file permissions",
                                    True))
            continue
        path = str(corpus.path(kind.files[0]))
        if kind.name == "flt_and_flc":
            results.append(_judge_flt(kind, path, accepted, dropped))
        elif kind.name == "same_name_two_dirs":
            results.append(_judge_two_dirs(kind, corpus, accepted, rejected))
        elif kind.outcome == "rejected":
            results.append(_judge_rejected(kind, path, rejected, accepted, report_log))
        else:
            results.append(_judge_accepted(kind, corpus, path, accepted, rejected, out))
    return results


def _judge_rejected(kind, path, rejected, accepted, report_log) -> Observed:
    if path in accepted:
        return Observed(kind, "accepted", "", False, ["accepted, expected rejected"])
    if path not in rejected:
        return Observed(kind, "missing", "", False, [f"{path} is in neither table"])
    reason = rejected[path]
    problems = []
    if kind.fragment.lower() not in reason.lower():
        problems.append(f"reason {reason!r} lacks {kind.fragment!r}")
    if f"rejected {path}: {reason}" not in report_log:
        problems.append("the screening report's log does not name the file with the reason")
    return Observed(kind, "rejected", reason, not problems, problems)


def _judge_accepted(kind, corpus, path, accepted, rejected, out) -> Observed:
    if path not in accepted:
        why = rejected.get(path, "in neither table")
        return Observed(kind, "rejected", why, False, [f"not accepted: {why}"])
    problems = []
    row = accepted[path]
    if kind.name == "missing_dq" and "no DQ" not in row["warnings"]:
        problems.append(f"no 'no DQ' warning ({row['warnings']!r})")
    if kind.name == "garbage_date_obs" and "DATE-OBS" not in row["warnings"]:
        problems.append(f"no DATE-OBS warning ({row['warnings']!r})")
    product = _product(out, row["rootname"])
    if product is None:
        return Observed(kind, "accepted", "no product", False, ["its product is missing"])
    detail = f"product {product.name}"
    if kind.twin:
        twin_root = Path(kind.twin).name.split("_")[0]
        twin = _product(out, twin_root)
        if twin is None:
            problems.append("the twin's product is missing")
        else:
            text, found = _compare(product, twin, kind)
            detail, problems = f"{detail}: {text}", problems + found
    return Observed(kind, "accepted", detail, not problems, problems)


def _judge_flt(kind, path, accepted, dropped) -> Observed:
    rows = [r for r in dropped if r["file"] == Path(path).name]
    flc = str(Path(path).with_name(UVIS_BASE).resolve())
    problems = []
    if not rows:
        problems.append("the FLT is not in plan/dropped.ecsv")
    elif not all("FLC" in r["reason"].upper() for r in rows):
        problems.append(f"reasons do not name the FLC: {[r['reason'] for r in rows]}")
    if not any(Path(f).resolve() == Path(flc) for f in accepted):
        problems.append("the FLC is not accepted")
    detail = rows[0]["reason"] if rows else ""
    return Observed(kind, "reported", detail, not problems, problems)


def _judge_two_dirs(kind, corpus, accepted, rejected) -> Observed:
    paths = [str(corpus.path(f)) for f in kind.files]
    used = [p for p in paths if p in accepted]
    left = [p for p in paths if p in rejected]
    problems = []
    if len(used) != 1 or len(left) != 1:
        problems.append(f"used {used}, reported {left}: expected one of each")
        return Observed(kind, "reported", "", False, problems)
    reason = rejected[left[0]]
    if used[0] not in reason:
        problems.append(f"reason {reason!r} does not name the file used, {used[0]}")
    return Observed(kind, "reported", f"{Path(left[0]).parent.name}/: {reason}", not problems,
                    problems)


def _usable_files(corpus: Corpus) -> list[Path]:
    """The files the run must process: the good ones and the accepted kinds' (the first file
    of a name in two directories; not the FLT of an FLC pair)."""
    files = {Path(p) for p in corpus.good}
    for kind in corpus.kinds:
        if kind.outcome == "accepted":
            files.add(corpus.path(kind.files[0]))
    return sorted(files)


def expected_products(corpus: Corpus) -> set[str]:
    """The layer and exposure-level products the usable inputs allow, computed from their
    own headers (sky cells from each chip's footprint, layers from detector and filter),
    independently of the workflow's screening and planning."""
    from astropy.wcs import WCS

    from mvmflow.grid import sky_cells_for_footprint

    names = set()
    for path in _usable_files(corpus):
        with fits.open(path) as hdul:
            primary = hdul[0].header
            detkey = f"{primary['INSTRUME']}_{primary['DETECTOR']}".lower()
            filt = str(primary["FILTER"]).lower()
            cells = set()
            for hdu in hdul:
                if hdu.name == "SCI":
                    footprint = WCS(hdu.header, hdul).calc_footprint(undistort=False)
                    cells.update(sky_cells_for_footprint(footprint))
        ptype = "drc" if path.name.split(".")[0].endswith("_flc") else "drz"
        labels = ["all", "coarse-all"] if detkey == "wfc3_ir" else ["all"]
        ipppssoo = path.name[:8]
        for cell in cells:
            for label in labels:
                names.add(f"hst_{cell}_{detkey}_{filt}_{label}_{ptype}.fits")
                names.add(f"hst_{cell}_{detkey}_{filt}_{label}-{ipppssoo}_{ptype}.fits")
    return names


def present_products(out: str | os.PathLike) -> set[str]:
    """The layer and exposure-level products a run wrote (``skycells/*/hst_*_dr?.fits``)."""
    return {p.name for p in Path(out).glob("skycells/*/hst_*_dr[cz].fits")}


def summary_rows(observed: list[Observed]) -> list[tuple[str, str, str]]:
    """``(kind, expected, observed)`` rows for a table."""
    return [(o.kind.name, o.kind.expected,
             ("OK " if o.ok else "FAIL ") + f"{o.outcome}: {o.detail}"
             + ("" if o.ok else f" ({'; '.join(o.problems)})")) for o in observed]
